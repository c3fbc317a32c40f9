"""The CUDA paths, on a real GPU: `make gpu-check` runs these (`pytest -m cuda`); without a GPU
every test here is skipped, and the rest of the suite covers the CPU side of the same code."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.engines.torch.batches import (
    count_batches,
    dataloader_batches,
    epoch_generator,
    memory_batches,
)
from mnistbench.engines.torch.checkpoint import (
    checkpoint_path,
    final_model_path,
    load_checkpoint,
    restore_checkpoint,
)
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.recipe import make_training
from mnistbench.engines.torch.train import run
from mnistbench.measure import Stopwatch, environment
from mnistbench.study.file import load_study
from mnistbench.study.run import run_study
from mnistbench.study.store import Store
from tests.conftest import StopBeforeEpoch, synthetic_dataset

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TINY = {"model": "resnet18", "epochs": 1, "batch_size": 32, "device": "cuda"}
"""A tiny CUDA run; override its keys as RunSpec(**{**TINY, "epochs": 3}), never
RunSpec(**TINY, epochs=3), which passes epochs twice (TypeError). Fields it leaves out take
RunSpec's defaults (adamw, onecycle, memory_format auto); synthetic_dataset() has 400 train
images and no validation split (val_fraction 0): epochs evaluate on the test images."""


def test_amp_is_fp16_with_a_grad_scaler_and_the_backends_are_recorded(tmp_path):
    result = run(RunSpec(**TINY, amp=True), synthetic_dataset(), checkpoint_dir=tmp_path)
    assert result.status == "ok" and result.precision == "fp16"
    assert result.peak_memory_kind == "cuda_max_allocated" and result.peak_memory_bytes > 0
    assert result.history[0].loss_scale > 0
    assert result.protocol["cudnn_benchmark"] is True
    assert isinstance(result.protocol["cudnn_allow_tf32"], bool)
    assert result.protocol["matmul_precision"] in ("highest", "high", "medium")
    for key in ("gpu_driver", "gpu_memory_bytes", "gpu_compute_capability", "cuda"):
        assert result.environment[key], key


def test_pinned_non_blocking_batches_are_the_memory_loaders_batches():
    data = synthetic_dataset()
    spec = RunSpec(**TINY, loader="dataloader", pin_memory=True, num_workers=1)
    cuda = torch.device("cuda")
    pinned = list(dataloader_batches(
        data.train_images, data.train_labels, spec, epoch_generator(0, 1), cuda
    ))  # fmt: skip
    memory = list(memory_batches(
        data.train_images.to(cuda), data.train_labels.to(cuda), spec.batch_size,
        epoch_generator(0, 1),
    ))  # fmt: skip
    assert len(pinned) == len(memory) == count_batches(len(data.train_labels), spec.batch_size)
    for (images, labels), (expected_images, expected_labels) in zip(pinned, memory, strict=True):
        assert images.is_cuda and torch.equal(images, expected_images)
        assert torch.equal(labels, expected_labels)


def test_pinned_dataloader_run_trains_and_says_it_was_pinned():
    spec = RunSpec(**{**TINY, "epochs": 3}, optimizer="adam", lr=1e-3, amp=True)
    data = synthetic_dataset()
    result = run(spec.replace(loader="dataloader", pin_memory=True, num_workers=1), data)
    assert result.status == "ok" and result.protocol["pin_memory"] is True
    assert [entry.images for entry in result.history] == [len(data.train_labels)] * 3
    assert result.test_accuracy > 20, "ten classes: chance is 10 %"


def test_sgd_under_fp16_amp_does_not_diverge():
    """Fused SGD under a GradScaler diverged every ResNet-50 run by step 7 (torch 2.11, H200)."""
    spec = RunSpec(model="resnet50", epochs=1, batch_size=16, device="cuda", amp=True,
                   optimizer="sgd", lr=1e-3, lr_schedule="none", image_size=64, channels=3)  # fmt: skip
    result = run(spec, synthetic_dataset(n_train=640))
    assert result.status == "ok", result.message
    assert result.history[0].images == 640


def test_final_model_loads_on_a_machine_without_a_gpu(tmp_path):
    spec = RunSpec(**TINY)
    run(spec, synthetic_dataset(), checkpoint_dir=tmp_path)
    saved = torch.load(final_model_path(tmp_path, spec), weights_only=False)  # no map_location
    assert {tensor.device.type for tensor in saved["model"].values()} == {"cpu"}
    build_resnet("resnet18", channels=1).load_state_dict(saved["model"])


def test_amp_run_resumes_with_its_grad_scaler_state(tmp_path):
    spec = RunSpec(**{**TINY, "epochs": 2}, amp=True)
    data = synthetic_dataset()
    with pytest.raises(KeyboardInterrupt):
        run(spec, data, checkpoint_dir=tmp_path, reporter=StopBeforeEpoch(2))
    state = load_checkpoint(checkpoint_path(tmp_path, spec), spec)
    assert state is not None and state["scaler"] is not None

    steps = count_batches(len(data.train_labels), spec.batch_size) * spec.epochs
    fresh = make_training(spec, torch.device("cuda"), channels_last=False, steps=steps)
    scaler = fresh.precision.scaler
    scaler.scale(torch.ones((), device="cuda"))  # initialise, then move it off the saved state
    scaler.update(new_scale=123.0)
    assert scaler.state_dict()["scale"] == 123.0 != state["scaler"]["scale"]
    restore_checkpoint(state, fresh)
    assert scaler.state_dict() == state["scaler"]

    resumed = run(spec, data, checkpoint_dir=tmp_path)
    assert resumed.status == "ok" and resumed.resumed_from_epoch == 1
    assert resumed.history[0].loss_scale == state["scaler"]["scale"]


def test_stopwatch_waits_for_the_gpu():
    watch = Stopwatch(torch.device("cuda"))
    torch.cuda.synchronize()
    watch.start()
    started = time.perf_counter()
    torch.cuda._sleep(200_000_000)  # queued: returns at once, the GPU spins for ~0.1 s
    queued = time.perf_counter() - started
    seconds = watch.stop()
    assert seconds > 5 * queued and seconds > 0.02


def test_environment_names_the_gpu():
    env = environment(torch.device("cuda"))
    assert env["device_name"] == torch.cuda.get_device_name()
    assert env["gpu_compute_capability"].count(".") == 1


STUDY = """
[study]
name = "shared"

[defaults]
dataset = "mnist"
model = "resnet18"
epochs = 1
train_limit = 256
test_limit = 128
batch_size = 32
device = "cuda"

[experiments.half]
resources = { num_gpus = 0.5 }
grid = { optimizer = ["sgd", "adam"] }

[experiments.svm]
base = { model = "svm", train_limit = 300, test_limit = 100 }
grid = { kernel = ["rbf"] }
"""


def test_study_shares_the_gpu_as_the_experiment_asks_and_records_it(tmp_path, real_data_root):
    path = tmp_path / "shared.toml"
    path.write_text(STUDY)
    store_path = tmp_path / "store.db"
    outcome = run_study(load_study(path), store_path, root=str(real_data_root))
    assert (outcome.done, outcome.failed) == (3, 0)
    with Store(store_path) as store:
        gpu_runs = [r.result for r in store.runs("shared", "half")]
        svm = store.runs("shared", "svm")[0].result
    shared = [r.environment["concurrency"] for r in gpu_runs]
    assert all(c["life_seconds"] > r.train_seconds for c, r in zip(shared, gpu_runs, strict=True))
    if torch.cuda.device_count() > 1:  # Slots spreads runs over GPUs before stacking them
        assert [(c["runs_on_same_gpu"], c["mean_runs_on_same_gpu"]) for c in shared] == [(1, 1)] * 2
    else:
        assert [c["runs_on_same_gpu"] for c in shared] == [2, 2]
        # Placed together: the one that finished first had both runs on the GPU all its life,
        # the other then ran alone for a while.
        assert all(1 < c["mean_runs_on_same_gpu"] <= 2 for c in shared)
        assert max(c["mean_runs_on_same_gpu"] for c in shared) >= 1.9
    assert all(r.device.startswith("cuda") for r in gpu_runs)
    # The SVM took the CPU slot beside both GPU runs, whose host threads fed from its cores.
    assert "runs_on_same_gpu" not in svm.environment["concurrency"]
    assert svm.environment["concurrency"]["gpu_runs_alongside"] == 2
    # keep_models = "best" (the default): only the more accurate GPU run keeps its model file.
    kept = [r for r in gpu_runs if r.model_path is not None]
    assert len(kept) == 1 and kept[0].test_accuracy == max(r.test_accuracy for r in gpu_runs)
    assert sorted(store_path.parent.glob("checkpoints/*.model.pt")) == [Path(kept[0].model_path)]
