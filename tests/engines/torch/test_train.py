import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.devices import DeviceUnavailableError, resolve_device
from mnistbench.engines.torch import recipe
from mnistbench.engines.torch.batches import hflip, make_augment, memory_batches, translate
from mnistbench.engines.torch.checkpoint import checkpoint_path, final_model_path
from mnistbench.engines.torch.recipe import make_optimizer
from mnistbench.engines.torch.train import run
from mnistbench.measure import peak_memory
from mnistbench.progress import Reporter
from tests.conftest import StopBeforeEpoch, synthetic_dataset

# Small and fast: 28 px, imagenet stem, one thread so results are reproducible bit for bit.
TINY = {"model": "resnet18", "epochs": 2, "batch_size": 32, "threads": 1, "device": "cpu"}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux peak RSS only")
def test_a_small_run_after_a_large_one_in_the_same_process_reports_its_own_peak():
    # An earlier, larger run in this process: 2 GiB above whatever the suite so far left resident,
    # so the test does not depend on how much memory earlier tests kept.
    block = torch.ones(2 * 2**30 // 4)
    del block
    large, _ = peak_memory(torch.device("cpu"))
    result = run(RunSpec(**{**TINY, "epochs": 1}), synthetic_dataset(n_train=64))
    assert result.peak_memory_kind == "run_peak_rss"
    # The tiny run grows RSS by a few hundred MiB at most; the old 2 GiB peak must not show.
    assert result.peak_memory_bytes < large - 2**30


@pytest.mark.slow
def test_learns_the_synthetic_task_and_reports_everything():
    spec = RunSpec(**TINY, optimizer="adam", lr=1e-3)
    result = run(spec, synthetic_dataset())
    assert result.status == "ok"
    assert result.test_accuracy > 50, "ten classes: chance is 10 %"
    assert [entry.epoch for entry in result.history] == [1, 2]
    assert all(
        entry.eval_split == "test" and entry.eval_accuracy is not None and entry.images == 400
        for entry in result.history
    )
    assert result.train_seconds > 0 and result.eval_seconds > 0 and result.images_per_second > 0
    assert result.macs_per_image == result.flops_per_image / 2 > 0
    # Forward + backward is about three forward passes; it is counted, not assumed.
    assert 2.5 < result.train_flops / (800 * result.flops_per_image) < 3.5
    matrix = torch.tensor(result.confusion_matrix)
    assert matrix.shape == (10, 10) and int(matrix.sum()) == 100
    assert result.test_accuracy == pytest.approx(100 * matrix.diag().sum().item() / 100)
    assert len(result.per_class_accuracy) == 10
    assert result.protocol["split"] == "official" and result.protocol["precision"] == "fp32"
    assert result.precision == "fp32" and result.device == "cpu"
    assert result.environment["threads"] == 1
    json.dumps(result.to_dict())  # serialisable as it is


@pytest.mark.slow
def test_validation_split_is_used_for_epoch_accuracy():
    # Test labels shifted by one class: a model that learned scores high on validation (taken
    # from train) and near zero on test, so the numbers show which split each one measured.
    data = synthetic_dataset()
    data = dataclasses.replace(data, test_labels=(data.test_labels + 1) % 10)
    spec = RunSpec(**TINY, val_fraction=0.2, optimizer="adam", lr=1e-3)
    result = run(spec, data)
    assert result.protocol["sizes"] == {"train": 320, "val": 80, "test": 100}
    assert [e.eval_split for e in result.history] == ["val", "val"]
    assert result.val_accuracy == result.history[-1].eval_accuracy > 50
    assert result.test_accuracy < 20


@pytest.mark.slow
def test_limits_take_a_seeded_subset():
    spec = RunSpec(**{**TINY, "epochs": 1}, train_limit=100, test_limit=30)
    result = run(spec, synthetic_dataset())
    assert result.protocol["sizes"]["train"] == 100 and sum(map(sum, result.confusion_matrix)) == 30


@pytest.mark.slow
def test_non_finite_loss_is_diverged_not_a_crash():
    spec = RunSpec(**TINY, optimizer="sgd", lr=1e12)
    result = run(spec, synthetic_dataset())
    assert result.status == "diverged"
    assert "non-finite at epoch 1, step" in result.message
    assert result.test_accuracy is None and result.history[-1].status == "diverged"
    assert result.history[-1].diverged_step is not None


@pytest.mark.slow
def test_dataloader_path_gives_the_same_training_as_memory_path():
    data = synthetic_dataset(n_train=200)
    memory = run(RunSpec(**{**TINY, "epochs": 1}, loader="memory"), data)
    loader = run(RunSpec(**{**TINY, "epochs": 1}, loader="dataloader", pin_memory=True), data)
    assert loader.history[0].train_loss == memory.history[0].train_loss
    assert loader.test_accuracy == memory.test_accuracy
    assert loader.protocol["loader"] == "dataloader"
    assert loader.protocol["pin_memory"] is False  # no CUDA here: pinning would do nothing


@pytest.mark.slow  # ~15 s: bf16 on a CPU without native bf16
def test_amp_on_cpu_runs_bf16(monkeypatch):
    """The logits of the training steps are bf16 (a hook on the last layer sees them); the FLOP
    count's forward pass, in eval mode, is the only fp32 one."""
    seen: list[tuple[bool, torch.dtype]] = []
    real_build = recipe.build_resnet

    def build_with_hook(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.fc.register_forward_hook(
            lambda module, inputs, output: seen.append((module.training, output.dtype))
        )
        return model

    monkeypatch.setattr(recipe, "build_resnet", build_with_hook)  # where make_training finds it
    # channels_last: bf16 NCHW backward is 7x slower on a CPU without AVX512-BF16 (AMD EPYC here)
    spec = RunSpec(**{**TINY, "epochs": 1}, amp=True, memory_format="channels_last")
    result = run(spec, synthetic_dataset(n_train=64))
    assert result.precision == "bf16" and result.status == "ok"
    training = [dtype for in_training, dtype in seen if in_training]
    assert len(training) >= 2 and set(training) == {torch.bfloat16}  # 2 steps + warm-up


@pytest.mark.slow
def test_channels_last_trains_the_same_model_as_contiguous():
    data = synthetic_dataset(n_train=128)
    spec = RunSpec(
        **{**TINY, "epochs": 1}, image_size=64, optimizer="sgd", lr=0.01, small_map_convs="conv"
    )
    nhwc = run(spec.replace(memory_format="channels_last"), data)
    nchw = run(spec.replace(memory_format="contiguous"), data)
    assert nhwc.protocol["memory_format"] == "channels_last"
    assert nchw.protocol["memory_format"] == "contiguous"
    assert "memory_format_choice" not in nhwc.protocol  # set in the spec: nothing was timed
    # Different kernels sum in a different order: equal up to rounding that four SGD steps
    # amplify a little (0.25 % here), not bit for bit.
    assert nhwc.history[0].train_loss == pytest.approx(nchw.history[0].train_loss, rel=2e-2)
    # "auto" runs whichever layout this machine timed faster, and says which and why.
    auto = run(RunSpec(**{**TINY, "epochs": 1}), synthetic_dataset(n_train=64))
    choice = auto.protocol["memory_format_choice"]
    assert auto.protocol["memory_format"] in ("channels_last", "contiguous")
    assert choice["reason"] and len(choice) >= 3  # the reason and a rate per layout


def test_translate_shifts_each_image_by_at_most_two_pixels():
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 14, 14] = 255
    shifted = translate(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    positions = shifted.flatten(1).argmax(1)
    rows, cols = positions // 28, positions % 28
    assert (shifted.flatten(1).max(1).values == 255).all()
    assert rows.min() >= 12 and rows.max() <= 16 and cols.min() >= 12 and cols.max() <= 16
    assert len(set(positions.tolist())) > 10, "offsets differ per image"


def test_flip_mirrors_about_half_of_the_images_and_composes_with_translate():
    images = torch.zeros(200, 28, 28, dtype=torch.uint8)
    images[:, 14, 3] = 255  # a dot near the left edge
    flipped = hflip(images, torch.Generator().manual_seed(0))
    mirrored = flipped[:, 14, 24] == 255  # column 3 mirrored is column 24
    assert torch.equal(flipped[mirrored], images[mirrored].flip(-1))
    assert torch.equal(flipped[~mirrored], images[~mirrored])
    assert 70 < int(mirrored.sum()) < 130
    both = make_augment("translate+flip", torch.Generator().manual_seed(0))(images)
    cols = both.flatten(1).argmax(1) % 28
    assert ((cols <= 5) | (cols >= 22)).all() and (cols >= 22).any() and (cols <= 5).any()
    assert make_augment("none", torch.Generator()) is None


def _overflow_step(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """One fp16-style step whose gradients overflow: a GradScaler must skip it entirely."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    loss = model(torch.full((2, 4), float("inf"))).sum()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**15, "the scaler saw the overflow"


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_grad_scaler_skipped_step_leaves_the_optimizer_untouched(optimizer):
    """Fused SGD writes its momentum buffer on a step the scaler skips (weights then blow up:
    every ResNet-50 SGD run diverged on an H200); the engine must not build it under a scaler."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    spec = RunSpec(optimizer=optimizer, lr=0.1, momentum=0.9)
    built = make_optimizer(spec, model, torch.device("cpu"), grad_scaler=True)
    _overflow_step(built, model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(not state or "momentum_buffer" not in state for state in built.state.values())
    assert all(
        not state or not torch.any(state.get("exp_avg", torch.zeros(1)))
        for state in built.state.values()
    )


def test_without_a_grad_scaler_sgd_keeps_the_fused_kernel():
    built = make_optimizer(RunSpec(optimizer="sgd"), torch.nn.Linear(2, 2), torch.device("cpu"))
    assert built.defaults["fused"] is True


@pytest.mark.filterwarnings("ignore:.*GradScaler is enabled, but CUDA is not available")
@pytest.mark.parametrize(
    ("amp", "device", "label", "scaler"),
    [
        ("cuda", "cuda", "fp16", True),  # mixed precision on CUDA only, as published
        ("cuda", "cpu", "fp32", False),
        ("cuda", "mps", "fp32", False),
        (True, "cuda", "fp16", True),
        (True, "cpu", "bf16", False),
        (False, "cuda", "fp32", False),
    ],
)
def test_precision_per_amp_setting_and_device(amp, device, label, scaler):
    precision = recipe.make_precision(amp, torch.device(device))
    assert precision.label == label and (precision.scaler is not None) == scaler
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    assert precision.autocast_dtype == dtypes[label]


def test_protocol_records_the_amp_setting_beside_the_precision_that_ran():
    from mnistbench.data.splits import SplitData
    from mnistbench.engines.torch.train import protocol

    images, labels = torch.arange(4 * 28 * 28).view(4, 28, 28).to(torch.uint8), torch.arange(4)
    split = SplitData("official", images, labels, images[:0], labels[:0], images, labels)
    spec = RunSpec(**TINY, amp="cuda")
    preprocess = recipe.make_preprocess(spec, split, channels_last=False)
    cpu = torch.device("cpu")
    stated = protocol(spec, split, preprocess, recipe.make_precision(spec.amp, cpu), cpu)
    assert (stated["amp"], stated["precision"]) == ("cuda", "fp32")


@pytest.mark.slow
def test_amp_on_cuda_only_trains_fp32_on_a_cpu():
    spec = RunSpec(**{**TINY, "epochs": 1}, amp="cuda", train_limit=64, test_limit=32)
    result = run(spec, synthetic_dataset(n_train=64))
    assert result.status == "ok" and result.precision == "fp32"
    assert result.protocol["amp"] == "cuda" and result.spec["amp"] == "cuda"


def test_memory_batches_cover_every_image_once_and_drop_a_single_leftover():
    images = torch.arange(65).view(65, 1, 1)
    labels = torch.arange(65)
    batches = list(memory_batches(images, labels, 32, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [32, 32]
    seen = torch.cat([b[1] for b in batches])
    assert len(set(seen.tolist())) == 64


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error_not_a_fallback():
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailableError):
        run(RunSpec(**{**TINY, "device": "cuda"}), synthetic_dataset(n_train=50))


_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from mnistbench.config import RunSpec
from mnistbench.engines.torch.train import run
from tests.conftest import synthetic_dataset
run(RunSpec(**{spec!r}), synthetic_dataset(n_train=600), checkpoint_dir=Path({ckpt!r}))
"""


@pytest.mark.slow
def test_killed_run_resumes_bit_exact(tmp_path):
    """SIGKILL a training process after its first checkpoint; resuming gives the same model."""
    spec_values = {**TINY, "epochs": 3, "optimizer": "sgd", "lr": 0.01, "augment": "translate"}
    spec = RunSpec(**spec_values)
    data = synthetic_dataset(n_train=600)
    reference = run(spec, data, checkpoint_dir=tmp_path / "reference")
    reference_model = torch.load(final_model_path(tmp_path / "reference", spec))["model"]

    ckpt_dir = tmp_path / "killed"
    repo = str(Path(__file__).resolve().parents[3])
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(repo=repo, spec=spec_values, ckpt=str(ckpt_dir))],
        # Keep the caller's PYTHONPATH: where the package is used from src/ it is what finds it.
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
        },
    )
    deadline = time.monotonic() + 300
    while not checkpoint_path(ckpt_dir, spec).exists():
        assert child.poll() is None, "child ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not final_model_path(ckpt_dir, spec).exists(), "killed too late to test resuming"

    resumed = run(spec, data, checkpoint_dir=ckpt_dir)
    assert resumed.resumed_from_epoch in (1, 2)
    assert resumed.test_accuracy == reference.test_accuracy
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in reference.history]
    resumed_model = torch.load(final_model_path(ckpt_dir, spec))["model"]
    for name, tensor in reference_model.items():
        assert torch.equal(tensor, resumed_model[name]), name
    assert not checkpoint_path(ckpt_dir, spec).exists(), "the final model supersedes it"


class _Logs(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("forged", "reason"),
    [({"version": 0}, "checkpoint version 0"), ({"spec": {"seed": 99}}, "another spec")],
)
def test_a_checkpoint_of_another_spec_or_version_is_ignored_and_said(tmp_path, forged, reason):
    spec = RunSpec(**{**TINY, "epochs": 1})
    data = synthetic_dataset(n_train=64)
    path = checkpoint_path(tmp_path, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": 1, "spec": spec.canonical(), "epoch": 1} | forged, path)
    logs = _Logs()
    result = run(spec, data, checkpoint_dir=tmp_path, reporter=logs)
    assert result.status == "ok" and result.resumed_from_epoch is None
    assert [line for line in logs.lines if line.startswith(f"ignoring {path}")] == [
        next(line for line in logs.lines if reason in line)
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "adam", "lr": 1e-3},
        {"optimizer": "adamw", "lr": 1e-3, "loader": "dataloader", "val_fraction": 0.1},
        {"optimizer": "sgd", "lr": 0.01, "loader": "dataloader", "num_workers": 1},
        {"optimizer": "adam", "lr": 1e-3, "ema_decay": 0.9, "tta": "flip", "augment": "erase"},
    ],
    ids=["adam", "adamw-dataloader-val", "sgd-dataloader-workers", "adam-ema-tta-erase"],
)
def test_an_interrupted_run_resumes_bit_exact(tmp_path, changes):
    """Optimizer state, schedule, loader order and validation all come back from a checkpoint."""
    spec = RunSpec(**{**TINY, "epochs": 3, "augment": "translate", **changes})
    data = synthetic_dataset(n_train=128, n_test=32)
    reference = run(spec, data, checkpoint_dir=tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        run(spec, data, checkpoint_dir=tmp_path / "stopped", reporter=StopBeforeEpoch(3))
    resumed = run(spec, data, checkpoint_dir=tmp_path / "stopped")
    assert resumed.resumed_from_epoch == 2
    assert resumed.history == [
        dataclasses.replace(
            entry, train_seconds=ours.train_seconds, images_per_second=ours.images_per_second
        )
        for entry, ours in zip(reference.history, resumed.history, strict=True)
    ]
    assert resumed.test_accuracy == reference.test_accuracy
    expected = torch.load(final_model_path(tmp_path / "reference", spec))["model"]
    actual = torch.load(final_model_path(tmp_path / "stopped", spec))["model"]
    assert all(torch.equal(tensor, actual[name]) for name, tensor in expected.items())


@pytest.mark.parametrize(("val_fraction", "evaluations"), [(0.0, 2), (0.25, 3)])
def test_without_a_validation_split_the_last_epochs_evaluation_is_the_test_result(
    monkeypatch, val_fraction, evaluations
):
    import mnistbench.engines.torch.train as engine

    calls = []
    real = engine.evaluate
    counted = lambda *args, **kwargs: calls.append(len(args[2])) or real(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(engine, "evaluate", counted)
    spec = RunSpec(**TINY, val_fraction=val_fraction)
    result = run(spec, synthetic_dataset(n_train=64))
    assert len(calls) == evaluations  # one per epoch, plus the test pass only after a validation
    assert result.test_accuracy is not None and result.eval_seconds > 0
    assert sum(sum(row) for row in result.confusion_matrix) == calls[-1]  # the test split's size
    if not val_fraction:
        assert result.test_accuracy == result.history[-1].eval_accuracy
    else:
        assert result.val_accuracy == result.history[-1].eval_accuracy
