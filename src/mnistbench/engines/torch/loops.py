"""The loops over the model: one training epoch, an evaluation, a FLOP count, a warm-up.

They take the model, batches and precision they use, and nothing of the run around them
(train.py assembles the run from them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import Preprocess
from mnistbench.engines.torch.batches import Batches, make_augment, warm_up_shapes
from mnistbench.engines.torch.recipe import Precision, make_optimizer, make_precision
from mnistbench.measure import synchronize
from mnistbench.progress import Reporter
from mnistbench.result import accuracy_percent

PROGRESS_EVERY = 25  # steps between host reads of the running metrics (each read syncs)
LOSS_TRACE_CHUNKS = 20  # an epoch's loss trace: between this many and twice as many chunk means


class Diverged(Exception):
    """The training loss became non-finite."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"loss became non-finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    steps: int
    loss_trace: list[float] | None = None
    """Mean train loss over consecutive equal chunks of the epoch's steps (LossTrace)."""


class LossTrace:
    """The running loss sum copied on the device every `stride` steps (a copy, never a read:
    no sync), beside the images seen then. When 2 × LOSS_TRACE_CHUNKS marks pile up, every
    other one goes and the stride doubles, so an epoch of any length keeps between
    LOSS_TRACE_CHUNKS and twice as many, for one plot of the loss within an epoch."""

    def __init__(self) -> None:
        self.stride = 1
        self.marks: list[tuple[int, int, torch.Tensor]] = []  # (step, images seen, loss sum)

    def mark(self, step: int, images: int, loss_sum: torch.Tensor) -> None:
        if step % self.stride == 0:
            self.marks.append((step, images, loss_sum.clone()))
            if len(self.marks) >= 2 * LOSS_TRACE_CHUNKS:
                self.marks, self.stride = self.marks[1::2], 2 * self.stride

    def means(self, steps: int, images: int, loss_sum: float) -> list[float]:
        """Each chunk's mean loss per image; a tail under half a stride joins the chunk before
        (a mean over one step would be noise). Called after the epoch's final read."""
        kept = [m for m in self.marks if steps - m[0] >= self.stride / 2]
        sums = [0.0, *(torch.stack([m[2] for m in kept]).tolist() if kept else []), loss_sum]
        seen = [0, *(m[1] for m in kept), images]
        chunks = zip(pairwise(sums), pairwise(seen), strict=True)
        return [float(f"{(b - a) / (n - m):.5g}") for (a, b), (m, n) in chunks if n > m]


@dataclass
class StepCounters:
    """An epoch's running metrics, kept on the device (the host reads them every few steps).
    A captured step (cudagraphs.py) writes to them, so they live at fixed addresses: reset,
    never replaced."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    steps: torch.Tensor
    first_bad_step: torch.Tensor  # the epoch's first step whose loss was not finite, else -1

    @classmethod
    def on(cls, device: torch.device) -> StepCounters:
        def zero(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros((), device=device, dtype=dtype)

        counters = cls(zero(torch.float32), zero(torch.long), zero(torch.long), zero(torch.long))
        counters.reset()
        return counters

    def reset(self) -> None:
        for counter in (self.loss_sum, self.correct, self.steps):
            counter.zero_()
        self.first_bad_step.fill_(-1)

    def count(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one step, by device operations only (a graph holds them)."""
        detached = loss.detach().float()
        self.steps += 1
        self.loss_sum += detached * labels.shape[0]
        self.correct += (logits.detach().argmax(1) == labels).sum()
        bad_now = ~torch.isfinite(detached) & (self.first_bad_step < 0)
        self.first_bad_step.copy_(torch.where(bad_now, self.steps, self.first_bad_step))


def training_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    counters: StepCounters,
    *,
    autocast_cache: bool = True,
) -> None:
    """Forward, backward and optimizer step (through the GradScaler when there is one), then
    the counters: the step that runs eagerly and the one a CUDA graph captures. Under capture,
    autocast must not cache its casts (torch's CUDA graphs notes): autocast_cache=False."""
    with precision.autocast(inputs.device, cache_enabled=autocast_cache):
        logits = model(inputs)
        loss = criterion(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    precision.backward_and_step(loss, optimizer)
    counters.count(loss, logits, labels)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    preprocess: Preprocess,
    device: torch.device,
    precision: Precision,
    *,
    epoch: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reporter: Reporter | None = None,
    ema: AveragedModel | None = None,
) -> EpochStats:
    """One eager pass over `batches` (updating `ema` after each step, when given). Raises
    Diverged naming the first step whose loss was not finite."""
    model.train()
    counters = StepCounters.on(device)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        images, labels = batch
        if augment is not None:
            images = augment(images)
        training_step(model, criterion, optimizer, precision, preprocess(images), labels, counters)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        return len(labels)

    return drive_epoch(step, batches, counters, epoch, reporter)


def drive_epoch(
    step: Callable[[Any], int],
    batches: Iterable[Any],
    counters: StepCounters,
    epoch: int,
    reporter: Reporter | None,
) -> EpochStats:
    """Run `step` (which returns the images it trained) on each batch, the counters read every
    PROGRESS_EVERY steps for progress and the finiteness check, and copied for the loss trace
    (LossTrace, no read): eager and captured epochs alike."""
    images_seen, steps, started, trace = 0, 0, time.perf_counter(), LossTrace()
    counters.reset()
    for batch in batches:
        images_seen += step(batch)
        steps += 1
        trace.mark(steps, images_seen, counters.loss_sum)
        if steps % PROGRESS_EVERY == 0:
            _check_finite(counters.first_bad_step, epoch)
            if reporter is not None:
                _report(reporter, steps, counters.loss_sum, counters.correct, images_seen, started)
    _check_finite(counters.first_bad_step, epoch)
    loss_sum = counters.loss_sum.item()
    return EpochStats(
        loss=loss_sum / max(images_seen, 1),
        accuracy=100.0 * counters.correct.item() / max(images_seen, 1),
        images=images_seen,
        steps=steps,
        loss_trace=trace.means(steps, images_seen, loss_sum),
    )


def _report(
    reporter: Reporter,
    steps: int,
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    images_seen: int,
    started: float,
) -> None:
    """The running loss, accuracy and rate so far (reading the sums syncs with the device)."""
    reporter.update(
        steps,
        {
            "loss": loss_sum.item() / images_seen,
            "acc": 100.0 * correct.item() / images_seen,
            "img/s": images_seen / (time.perf_counter() - started),
        },
    )


def _check_finite(first_bad_step: torch.Tensor, epoch: int) -> None:
    step = int(first_bad_step.item())
    if step >= 0:
        raise Diverged(epoch, step)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocess,
    device: torch.device,
    precision: Precision,
    batch_size: int = 256,
    num_classes: int = 10,
    tta: bool = False,
) -> tuple[float, torch.Tensor]:
    """(accuracy %, confusion matrix [true, predicted]) over device-resident uint8 images; with
    `tta`, each image is classified by its and its mirror image's mean class probabilities."""
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    for start in range(0, len(labels), batch_size):
        batch_labels = labels[start : start + batch_size]
        inputs = preprocess(images[start : start + batch_size])
        with precision.autocast(device):
            scores = model(inputs)
            if tta:
                scores = scores.float().softmax(1) + model(inputs.flip(-1)).float().softmax(1)
        predicted = scores.argmax(1)
        confusion += torch.bincount(
            batch_labels * num_classes + predicted, minlength=num_classes * num_classes
        )
    confusion = confusion.view(num_classes, num_classes).cpu()
    accuracy = accuracy_percent(int(confusion.diag().sum()), int(confusion.sum()))
    return accuracy, confusion


def eval_batch_size(image_size: int) -> int:
    # Large batches for throughput; fewer at 224 px where one image's activations are 64x bigger.
    return 1024 if image_size <= 64 else 128


def count_train_flops(
    model: nn.Module,
    criterion: nn.Module,
    probe: tuple[torch.Tensor, torch.Tensor],
    precision: Precision,
    device: torch.device,
) -> int:
    """Forward + backward FLOPs per image, counted on `probe` (call on a scratch copy)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        with precision.autocast(device):
            loss = criterion(model(probe[0]), probe[1])
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops()) // len(probe[1])


def warm_up(
    spec: RunSpec,
    scratch: nn.Module,
    criterion: nn.Module,
    preprocess: Preprocess,
    device: torch.device,
    train: tuple[torch.Tensor, torch.Tensor],
    evaluation: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Full training steps (augment, preprocess, forward, backward, optimizer step, GradScaler
    unscale/update) at every batch shape the run will see, and on CUDA one evaluation batch, all
    on a scratch copy with its own optimizer and scaler: kernel selection, cuDNN autotuning,
    optimizer-state and allocator growth then happen off the clock, and the model itself is
    never touched."""
    precision = make_precision(spec.amp, device)  # a scaler of its own
    optimizer = make_optimizer(spec, scratch, device, grad_scaler=precision.scaler is not None)
    augment = make_augment(spec.augment, torch.Generator(device=device).manual_seed(0))
    repeats = 3 if device.type == "cuda" else 1
    batches = [
        (train[0][:size], train[1][:size])
        for size in warm_up_shapes(len(train[1]), spec.batch_size)
        for _ in range(repeats)
    ]
    with contextlib.suppress(Diverged):  # the real run reports divergence, not the warm-up
        train_one_epoch(
            scratch, criterion, optimizer, iter(batches), preprocess, device, precision,
            epoch=0, augment=augment,
        )  # fmt: skip
    if device.type == "cuda" and len(evaluation[1]):
        size = eval_batch_size(spec.image_size)
        evaluate(scratch, evaluation[0][:size], evaluation[1][:size], preprocess, device, precision)
    synchronize(device)
