"""The captured training step (cudagraphs.py): its device-side parts on the CPU, where torch's
GradScaler("cpu") and fused optimizers exist to compare against; the graphs themselves on a
CUDA GPU (skipped without one; `make gpu-check` runs them)."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import Preprocess
from mnistbench.engines.torch.batches import epoch_generator, memory_batches
from mnistbench.engines.torch.cudagraphs import (
    CapturedSteps,
    CaptureGate,
    create_optimizer_state,
    not_captured_because,
    restore_step_state,
    save_step_state,
)
from mnistbench.engines.torch.loops import StepCounters, training_step
from mnistbench.engines.torch.recipe import Precision, Training, make_optimizer, make_training
from mnistbench.engines.torch.train import run
from tests.conftest import synthetic_dataset

CPU = torch.device("cpu")
PREPROCESS = Preprocess(mean=0.5, std=0.5)
SPEC = RunSpec(model="resnet18", optimizer="sgd", lr=1e-2, lr_schedule="none", batch_size=16)


def scaled(
    training: Training, spec: RunSpec, device: torch.device, captured: bool, **scaler: float
) -> Training:
    """The training under a GradScaler on `device` (fp32 compute on the CPU: the scaler's
    logic is what is compared), with the optimizer that make_optimizer picks for it."""
    optimizer = make_optimizer(spec, training.model, device, grad_scaler=True, captured=captured)
    grad_scaler = torch.amp.GradScaler(device.type, **scaler)
    precision = Precision("fp16" if device.type == "cuda" else "fp32",
                          torch.float16 if device.type == "cuda" else None, grad_scaler)  # fmt: skip
    return dataclasses.replace(training, precision=precision, optimizer=optimizer)


def poison_gradients(training: Training, counters: StepCounters, bad_steps: set[int], n: int):
    """Make the gradients of the steps in bad_steps infinite, decided on the device (so that a
    graph replays it): the GradScaler must skip exactly those steps."""
    factors = torch.ones(n + 1, device=counters.steps.device)
    factors[sorted(bad_steps)] = float("inf")
    weight = training.model.fc.weight
    # index_select, not factors[steps]: indexing by a 0-d tensor reads it on the host (a sync,
    # which a capture forbids, and the value would be frozen at capture time).
    weight.register_hook(lambda grad: grad * factors.index_select(0, counters.steps.view(1)))


def batches(n: int, batch_size: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    data = synthetic_dataset(n_train=n * batch_size)
    images, labels = data.train_images.to(device), data.train_labels.to(device)
    return list(memory_batches(images, labels, batch_size, epoch_generator(0, 1)))


def train_steps(training: Training, steps: list, counters: StepCounters) -> list[float]:
    """Eager steps; the loss scale after each."""
    model = training.model
    scales = []
    for images, labels in steps:
        training_step(model, training.criterion, training.optimizer, training.precision,
                      PREPROCESS(images), labels, counters)  # fmt: skip
        scales.append(float(training.precision.scaler.get_scale()))
    return scales


def test_device_side_skips_match_the_eager_grad_scaler_and_a_skipped_first_step_is_safe():
    """The captured step's optimizer (fused SGD, its state created zeroed up front) skips on
    the device what the eager path (unfused SGD, the scaler's host check) skips on the host:
    here the very first step (fused SGD's own first step would leave garbage momentum) and a
    later one; weights, momentum and every loss scale agree."""
    bad, n = {0, 3}, 7
    steps = batches(n, 16, CPU)
    runs = {}
    for captured in (False, True):
        built = make_training(SPEC, CPU, channels_last=False, steps=n)
        training = scaled(built, SPEC, CPU, captured, growth_interval=2)
        if captured:
            create_optimizer_state(training)
        counters = StepCounters.on(CPU)
        poison_gradients(training, counters, bad, n)
        runs[captured] = (training, train_steps(training, steps, counters))
    (eager, eager_scales), (device_side, device_scales) = runs[False], runs[True]
    assert eager_scales == device_scales
    assert device_scales[0] == 2.0**15 and device_scales[3] < device_scales[2], "skips seen"
    for mine, theirs in zip(device_side.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
        momentum = device_side.optimizer.state[mine]["momentum_buffer"]
        torch.testing.assert_close(momentum, eager.optimizer.state[theirs]["momentum_buffer"],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_capture_warm_up_leaves_the_run_as_it_was(optimizer):
    spec = SPEC.replace(optimizer=optimizer)
    training = scaled(make_training(spec, CPU, channels_last=False, steps=3), spec, CPU, True)
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    create_optimizer_state(training)
    saved = save_step_state(training)
    train_steps(training, batches(3, 16, CPU), StepCounters.on(CPU))
    assert not torch.equal(training.model.conv1.weight, before["conv1.weight"])
    restore_step_state(training, saved)
    for name, value in training.model.state_dict().items():
        assert torch.equal(value, before[name]), name  # weights and batch-norm statistics
    for state in training.optimizer.state.values():
        for value in state.values():
            assert not isinstance(value, torch.Tensor) or not value.any(), "fresh state is zero"
    assert training.precision.scaler.get_scale() == 2.0**16  # the scaler's initial scale


def test_optimizer_state_is_created_zeroed_without_touching_the_weights():
    training = make_training(SPEC, CPU, channels_last=False, steps=1, captured=True)
    weights = [p.clone() for p in training.model.parameters()]
    create_optimizer_state(training)
    for parameter, weight in zip(training.model.parameters(), weights, strict=True):
        assert torch.equal(parameter, weight) and parameter.grad is None
        assert not training.optimizer.state[parameter]["momentum_buffer"].any()


def test_which_runs_are_captured_and_why_not():
    cuda = torch.device("cuda")
    assert not_captured_because(SPEC, cuda) is None
    assert "not a CUDA run" in not_captured_because(SPEC, CPU)
    assert "off" in not_captured_because(SPEC.replace(cuda_graphs="off"), cuda)
    assert "ema_decay" in not_captured_because(SPEC.replace(ema_decay=0.9), cuda)
    assert "lr schedule" in not_captured_because(SPEC.replace(lr_schedule="onecycle"), cuda)


def test_a_cpu_run_says_its_steps_were_not_captured_and_why():
    spec = SPEC.replace(epochs=1, train_limit=64, test_limit=32, device="cpu")
    result = run(spec, synthetic_dataset())
    assert result.protocol["cuda_graphs"] == "off"
    assert result.protocol["cuda_graphs_reason"] == "not a CUDA run (cpu)"


# --- On a CUDA GPU ---------------------------------------------------------------------------

no_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_SPEC = SPEC.replace(device="cuda", amp=True, image_size=64, channels=3, lr=1e-3)


def captured_losses(training: Training, steps: list, bad: set[int]) -> tuple[list, list]:
    """Per-step losses and loss scales of the captured step (reading them syncs every step)."""
    data = torch.cat([images for images, _ in steps]), torch.cat([labels for _, labels in steps])
    counters = StepCounters.on(torch.device("cuda"))
    size = len(steps[0][1])
    poison_gradients(training, counters, bad, len(steps))  # before the capture: in the graph
    before = [t.clone() for t in training.model.state_dict().values()]
    captured = CapturedSteps(training, PREPROCESS_GPU, counters, [size], data[0].shape[1:], data)
    for now, then in zip(training.model.state_dict().values(), before, strict=True):
        assert torch.equal(now, then), (
            "the capture's warm-up left the weights or statistics changed"
        )
    for state in training.optimizer.state.values():
        assert not any(value.any() for value in state.values() if torch.is_tensor(value))
    assert training.precision.scaler.get_scale() == 2.0**16
    losses, scales, previous = [], [], 0.0
    for step in range(len(steps)):
        captured.step_indices(torch.arange(step * size, (step + 1) * size, device="cuda"))
        total = counters.loss_sum.item()
        losses.append((total - previous) / size)
        scales.append(float(training.precision.scaler.get_scale()))
        previous = total
    return losses, scales


PREPROCESS_GPU = Preprocess(mean=0.5, std=0.5, image_size=64, channels=3)


@pytest.mark.cuda
@no_gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_captured_steps_train_as_the_eager_ones_and_skip_the_same_steps(optimizer):
    """300 steps at fp16 with a GradScaler: the same per-step losses as the eager product path
    within fp16 tolerance, and the same loss scale after every step, a forced overflow too."""
    cuda, n, bad = torch.device("cuda"), 300, {0, 1, 150}
    steps = batches(n, 16, cuda)
    spec = GPU_SPEC.replace(optimizer=optimizer)
    eager = make_training(spec, cuda, channels_last=False, steps=n)
    counters = StepCounters.on(cuda)
    poison_gradients(eager, counters, bad, n)
    eager_losses, eager_scales = [], []
    for images, labels in steps:
        before = counters.loss_sum.item()
        training_step(eager.model, eager.criterion, eager.optimizer, eager.precision,
                      PREPROCESS_GPU(images), labels, counters)  # fmt: skip
        eager_losses.append((counters.loss_sum.item() - before) / 16)
        eager_scales.append(float(eager.precision.scaler.get_scale()))
    graphed = make_training(spec, cuda, channels_last=False, steps=n, captured=True)
    losses, scales = captured_losses(graphed, steps, bad)
    assert scales == eager_scales
    # The first steps agree closely (the warm-up's changes were undone: a leftover Adam step
    # count or momentum would show here); later ones within fp16 tolerance.
    torch.testing.assert_close(torch.tensor(losses[:20]), torch.tensor(eager_losses[:20]),
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses),
                               rtol=0.05, atol=0.05)  # fmt: skip


@pytest.mark.cuda
@no_gpu
def test_a_captured_run_records_graphs_on_and_trains_the_last_partial_batch(tmp_path):
    spec = GPU_SPEC.replace(epochs=2, batch_size=48, image_size=28, channels=1)
    result = run(spec, synthetic_dataset(), checkpoint_dir=tmp_path)  # 400 images: 8 x 48 + 16
    assert result.status == "ok" and result.protocol["cuda_graphs"] == "on"
    assert [entry.images for entry in result.history] == [400, 400]
    assert result.test_accuracy > 20, "ten classes: chance is 10 %"
    loaded = run(spec.replace(loader="dataloader", pin_memory=True), synthetic_dataset())
    assert loaded.protocol["cuda_graphs"] == "on" and loaded.history[0].images == 400


def test_a_capture_waits_for_shared_gpu_work_and_new_shared_work_waits_for_it():
    gate, events = CaptureGate(), []
    evaluating, capture_asked = threading.Event(), threading.Event()

    def evaluation() -> None:
        with gate.shared():
            evaluating.set()
            capture_asked.wait(timeout=5)
            time.sleep(0.05)  # the capture must not begin before this work ends
            events.append("evaluation ends")

    def capture() -> None:
        evaluating.wait(timeout=5)
        capture_asked.set()
        with gate.exclusive():
            events.append("capture")
            time.sleep(0.05)
            events.append("capture ends")

    def later_evaluation() -> None:
        capture_asked.wait(timeout=5)
        time.sleep(0.02)  # asks while the capture waits: it goes after the capture
        with gate.shared():
            events.append("later evaluation")

    threads = [threading.Thread(target=work) for work in (evaluation, capture, later_evaluation)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert events == ["evaluation ends", "capture", "capture ends", "later evaluation"]
