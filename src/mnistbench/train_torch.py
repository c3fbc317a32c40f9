"""Train and evaluate a torchvision ResNet for one RunSpec -> RunResult.

The dataset lives on the device as uint8 tensors; each step slices a batch by index, augments and
preprocesses it there (loader='memory'). loader='dataloader' feeds the same batches through a
torch DataLoader, which is where pin_memory and num_workers mean something. Running loss and
accuracy stay on the device and are read every few steps, so the GPU never waits for the host.
A checkpoint is written atomically after each epoch; a run with the same spec resumes from it,
and because batch order and augmentation are drawn from per-epoch seeds, a resumed run on CPU
ends bit-for-bit where an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistbench.config import RunResult, RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.preprocess import ASSIGNMENT_MEAN_STD, Preprocess, normalization_stats
from mnistbench.data.splits import SplitData, limit_split, make_split
from mnistbench.devices import DeviceUnavailableError as DeviceUnavailableError
from mnistbench.devices import resolve_device
from mnistbench.files import atomic_replace
from mnistbench.measure import (
    Stopwatch,
    environment,
    forward_flops,
    peak_memory,
    reset_peak_memory,
    synchronize,
)
from mnistbench.models import build_resnet
from mnistbench.progress import Reporter

CHECKPOINT_VERSION = 1
TRANSLATE_PIXELS = 2  # augment='translate': random shift of up to ±2 px
PROGRESS_EVERY = 25  # steps between host reads of the running metrics (each read syncs)


class Diverged(Exception):
    """The training loss became non-finite."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"loss became non-finite at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


@dataclass(frozen=True)
class Precision:
    """What mixed precision actually runs: autocast dtype (None = fp32) and a GradScaler."""

    label: str  # "off", "fp16" or "bf16"
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and optimizer step, through the GradScaler when there is one (it skips the
        step when the scaled gradients overflowed, and adapts the scale)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()


def make_precision(amp: bool, device: torch.device) -> Precision:
    """fp16 autocast + GradScaler on CUDA (fp16's range needs loss scaling); bf16 on CPU (same
    range as fp32, no scaler needed); fp32 elsewhere."""
    if not amp or device.type not in ("cuda", "cpu"):
        return Precision("off", None, None)
    if device.type == "cuda":
        return Precision("fp16", torch.float16, torch.amp.GradScaler("cuda"))
    return Precision("bf16", torch.bfloat16, None)


def make_optimizer(
    spec: RunSpec, model: nn.Module, device: torch.device, *, grad_scaler: bool = False
) -> torch.optim.Optimizer:
    """The spec's optimizer; on CPU and CUDA the fused implementation (one kernel for all
    parameters instead of a loop of small ones): same update, ~4 % faster training at 28 px on
    the 2-core CPU (benchmarks/README.md, section 2).

    Except SGD under a GradScaler (fp16 AMP on CUDA): fused SGD takes over the scaler's overflow
    check, and on a step the scaler must skip it still writes the momentum buffer (garbage, e.g.
    1e17), so the weights blow up a few steps later. Measured on an H200 with torch 2.11: every
    ResNet-50 SGD run at the published protocol diverged by step 7, and the unfused optimizer
    fixed it; fused Adam/AdamW honour the skip. tests/test_train_torch.py reproduces it on CPU.
    """
    fused_ok = device.type in ("cpu", "cuda") and not (grad_scaler and spec.optimizer == "sgd")
    fused = {"fused": True} if fused_ok else {}
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            **fused,
        )
    optimizer_class = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **fused)


def use_channels_last(spec: RunSpec) -> bool:
    """'auto': NHWC from 64 px up, where oneDNN's NHWC convolutions win (ResNet-18 at 224 px on
    the 2-core CPU: +10 % fp32, +21 % bf16); at 28 px it is a wash (benchmarks/README.md)."""
    if spec.memory_format == "auto":
        return spec.image_size >= 64
    return spec.memory_format == "channels_last"


def make_scheduler(
    spec: RunSpec, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step schedules over the whole run; 'none' keeps the lr constant (as published)."""
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if spec.lr_schedule == "onecycle" and total_steps >= 4:
        # Warm up over a quarter of the run (at least two steps: OneCycleLR divides by the
        # phase lengths), then anneal. A run of under four steps has no room and stays constant.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=spec.lr, total_steps=total_steps, pct_start=max(0.25, 2 / total_steps)
        )
    return None


def translate(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image (B, H, W) by its own random offset in [-max_shift, max_shift], zero-filled."""
    batch, height, width = images.shape
    padded = nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(
        0, 2 * max_shift + 1, (2, batch), generator=generator, device=generator.device
    ).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] + offsets[0][:, None]
    cols = torch.arange(width, device=images.device)[None, :] + offsets[1][:, None]
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]


def hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (B, H, W) left-right with probability 1/2."""
    draws = torch.rand(len(images), generator=generator, device=generator.device)
    return torch.where((draws < 0.5).to(images.device)[:, None, None], images.flip(-1), images)


def make_augment(
    name: str, generator: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The spec's augmentation as one function of a uint8 batch, drawing from `generator`."""
    if name == "none":
        return None
    parts = name.split("+")

    def augment(images: torch.Tensor) -> torch.Tensor:
        if "translate" in parts:
            images = translate(images, TRANSLATE_PIXELS, generator)
        if "flip" in parts:
            images = hflip(images, generator)
        return images

    return augment


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, epoch): resumed epochs replay the same draws."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def memory_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches sliced by index from device-resident tensors, in a seeded random order.

    A final batch of one image is dropped: BatchNorm cannot train on it.
    """
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if len(index) > 1:
            yield images[index], labels[index]


def dataloader_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: RunSpec,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The same batches through torch's DataLoader: pinned host memory and workers as the spec
    says, with non_blocking copies (which only overlap with compute from pinned memory).

    The order is the memory loader's permutation, given as the sampler, so that the two loaders
    differ only in how the data moves (DataLoader's own shuffle would draw a different order).
    """
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels),
        batch_size=spec.batch_size,
        sampler=torch.randperm(len(labels), generator=generator).tolist(),
        num_workers=spec.num_workers,
        pin_memory=spec.pin_memory and device.type == "cuda",
        drop_last=False,
    )
    for batch_images, batch_labels in loader:
        if len(batch_labels) > 1:
            yield (
                batch_images.to(device, non_blocking=True),
                batch_labels.to(device, non_blocking=True),
            )


def count_batches(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (rest > 1)


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    steps: int


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    preprocess: Preprocess,
    device: torch.device,
    precision: Precision,
    *,
    epoch: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reporter: Reporter | None = None,
) -> EpochStats:
    """One pass over `batches`. Raises Diverged naming the first step whose loss was not finite."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
    images_seen, steps, started = 0, 0, time.perf_counter()
    for images, labels in batches:
        if augment is not None:
            images = augment(images)
        inputs = preprocess(images)
        with precision.autocast(device):
            logits = model(inputs)
            loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer)
        if scheduler is not None:
            scheduler.step()
        steps += 1
        images_seen += len(labels)
        # Accumulate on the device; the host looks only every PROGRESS_EVERY steps.
        detached = loss.detach().float()
        loss_sum += detached * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        bad_now = ~torch.isfinite(detached) & (first_bad_step < 0)
        first_bad_step = torch.where(bad_now, steps, first_bad_step)
        if steps % PROGRESS_EVERY == 0:
            _check_finite(first_bad_step, epoch)
            if reporter is not None:
                elapsed = time.perf_counter() - started
                reporter.update(
                    steps,
                    {
                        "loss": loss_sum.item() / images_seen,
                        "acc": 100.0 * correct.item() / images_seen,
                        "img/s": images_seen / elapsed,
                    },
                )
    _check_finite(first_bad_step, epoch)
    return EpochStats(
        loss=loss_sum.item() / max(images_seen, 1),
        accuracy=100.0 * correct.item() / max(images_seen, 1),
        images=images_seen,
        steps=steps,
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
) -> tuple[float, torch.Tensor]:
    """(accuracy %, confusion matrix [true, predicted]) over device-resident uint8 images."""
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    for start in range(0, len(labels), batch_size):
        batch_labels = labels[start : start + batch_size]
        with precision.autocast(device):
            predicted = model(preprocess(images[start : start + batch_size])).argmax(1)
        confusion += torch.bincount(
            batch_labels * num_classes + predicted, minlength=num_classes * num_classes
        )
    confusion = confusion.view(num_classes, num_classes).cpu()
    accuracy = 100.0 * confusion.diag().sum().item() / max(int(confusion.sum()), 1)
    return accuracy, confusion


def eval_batch_size(image_size: int) -> int:
    # Large batches for throughput; fewer at 224 px where one image's activations are 64x bigger.
    return 1024 if image_size <= 64 else 128


def make_preprocess(spec: RunSpec, split: SplitData) -> Preprocess:
    """The published protocol normalises with 0.5/0.5; the native one with train statistics."""
    if spec.split == "assignment":
        mean, std = ASSIGNMENT_MEAN_STD
    else:
        mean, std = normalization_stats(split.train_images)
    return Preprocess(
        mean=mean,
        std=std,
        image_size=spec.image_size,
        channels=spec.channels,
        channels_last=use_channels_last(spec),
    )


def checkpoint_path(checkpoint_dir: Path, spec: RunSpec) -> Path:
    return checkpoint_dir / f"{spec.key()}.ckpt.pt"


def final_model_path(checkpoint_dir: Path, spec: RunSpec) -> Path:
    return checkpoint_dir / f"{spec.key()}.model.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through atomic_replace: a killed run never leaves half a checkpoint."""
    with atomic_replace(path) as handle:
        torch.save(obj, handle)


@dataclass
class Training:
    """What one run trains with; what a checkpoint saves and restores."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    precision: Precision


def make_training(spec: RunSpec, device: torch.device, channels_last: bool, steps: int) -> Training:
    """Model, loss, optimizer, per-step schedule over `steps` and precision for the spec."""
    torch.manual_seed(spec.seed)  # the model's initial weights depend on the seed only
    model = build_resnet(spec.model, channels=spec.channels, stem=spec.stem).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    precision = make_precision(spec.amp, device)
    optimizer = make_optimizer(spec, model, device, grad_scaler=precision.scaler is not None)
    return Training(
        model=model,
        criterion=nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing),
        optimizer=optimizer,
        scheduler=make_scheduler(spec, optimizer, steps),
        precision=precision,
    )


# Save and restore mirror each other: a field added to one belongs in the other.
def save_checkpoint(
    path: Path,
    spec: RunSpec,
    training: Training,
    epoch: int,
    history: list[dict[str, Any]],
    train_seconds: float,
) -> None:
    scaler = training.precision.scaler
    atomic_torch_save(
        {
            "version": CHECKPOINT_VERSION,
            "spec": spec.canonical(),
            "epoch": epoch,
            "model": training.model.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "scheduler": training.scheduler.state_dict() if training.scheduler else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": _rng_state(),
            "history": history,
            "train_seconds": train_seconds,
        },
        path,
    )


def restore_checkpoint(state: dict[str, Any], training: Training) -> None:
    """Put a checkpoint's model, optimizer, schedule, GradScaler and RNG states back."""
    training.model.load_state_dict(state["model"])
    training.optimizer.load_state_dict(state["optimizer"])
    if training.scheduler is not None and state["scheduler"] is not None:
        training.scheduler.load_state_dict(state["scheduler"])
    if training.precision.scaler is not None and state["scaler"] is not None:
        training.precision.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])


def load_checkpoint(
    path: Path, spec: RunSpec, log: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """The checkpoint at path if it belongs to this exact spec, else None (said through `log`
    when a file is there but was written for another spec or checkpoint version)."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != CHECKPOINT_VERSION:
        reason = f"checkpoint version {state.get('version')!r}, this mnistbench writes {CHECKPOINT_VERSION}"
    elif state.get("spec") != spec.canonical():
        reason = "it was written for another spec"
    else:
        return state
    if log is not None:
        log(f"ignoring {path}: {reason}; training from the start")
    return None


def save_final_model(path: Path, spec: RunSpec, model: nn.Module) -> None:
    """Weights as CPU tensors, so that the file loads on a machine without the training GPU."""
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    atomic_torch_save({"spec": spec.to_dict(), "model": weights}, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def configure_backends(device: torch.device) -> dict[str, Any]:
    """Per-device backend settings, set here and returned for the protocol.

    On CUDA, cuDNN benchmark mode autotunes each convolution shape on first use (the warm-up
    makes that happen off the clock); TF32 convolutions and the float32 matmul precision change
    fp32 numerics, so they are recorded, not changed.
    """
    settings: dict[str, Any] = {"matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        settings["cudnn_benchmark"] = True
        settings["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        settings["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return settings


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


def warm_up_shapes(n_train: int, batch_size: int) -> list[int]:
    """The batch sizes a run's steps will see: the full batch and the last partial one (a
    final batch of one image is dropped, see memory_batches)."""
    full, rest = min(batch_size, n_train), n_train % batch_size if n_train > batch_size else 0
    return [full] + ([rest] if rest > 1 else [])


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


@dataclass
class DeviceData:
    """A run's images (uint8) and labels, moved to the device once: 55 MB for a whole dataset."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    eval_name: str  # "val" when the split has a validation part, else "test"

    @classmethod
    def from_split(cls, split: SplitData, device: torch.device) -> DeviceData:
        has_val = len(split.val_labels) > 0
        eval_images = split.val_images if has_val else split.test_images
        eval_labels = split.val_labels if has_val else split.test_labels
        return cls(
            split.train_images.to(device),
            split.train_labels.to(device),
            eval_images.to(device),
            eval_labels.to(device),
            "val" if has_val else "test",
        )


def epoch_batches(
    spec: RunSpec, split: SplitData, data: DeviceData, epoch: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This epoch's batches from the spec's loader, in an order drawn from (seed, epoch)."""
    generator = epoch_generator(spec.seed, epoch)
    if spec.loader == "memory":
        return memory_batches(data.train_images, data.train_labels, spec.batch_size, generator)
    return dataloader_batches(split.train_images, split.train_labels, spec, generator, device)


def run(
    spec: RunSpec,
    data: Dataset,
    *,
    checkpoint_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train spec.model on data under spec, evaluate, and return everything measured.

    With checkpoint_dir, each finished epoch is saved there and a later call with the same spec
    resumes after the last saved epoch; the final model is kept there for later prediction.
    """
    if spec.is_svm:
        raise ValueError("train_torch.run got an SVM spec; use train_svm.run")
    reporter = reporter or Reporter()
    device = resolve_device(spec.device)
    torch.set_num_threads(spec.threads)
    backends = configure_backends(device)

    split = make_split(data, spec.split, val_fraction=spec.val_fraction, seed=spec.seed)
    split = limit_split(split, spec.train_limit, spec.test_limit, spec.seed)
    preprocess = make_preprocess(spec, split)
    on_device = DeviceData.from_split(split, device)
    steps_per_epoch = count_batches(len(split.train_labels), spec.batch_size)
    training = make_training(spec, device, preprocess.channels_last, steps_per_epoch * spec.epochs)

    history: list[dict[str, Any]] = []
    start_epoch, train_seconds, resumed_from = 1, 0.0, None
    ckpt_path = checkpoint_path(checkpoint_dir, spec) if checkpoint_dir else None
    state = load_checkpoint(ckpt_path, spec, reporter.log) if ckpt_path else None
    if state is not None:
        restore_checkpoint(state, training)
        history, train_seconds = state["history"], state["train_seconds"]
        resumed_from = state["epoch"]
        start_epoch = resumed_from + 1
        reporter.log(f"resuming from {ckpt_path} after epoch {resumed_from}")

    # FLOPs counted on real images at the real input size (the count does not depend on batch).
    probe = (preprocess(on_device.train_images[:2]), on_device.train_labels[:2])
    flops_per_image = forward_flops(training.model, probe[0]) // 2
    scratch = copy.deepcopy(training.model)
    train_flops_per_image = count_train_flops(
        scratch, training.criterion, probe, training.precision, device
    )
    warm_up(
        spec, scratch, training.criterion, preprocess, device,
        (on_device.train_images, on_device.train_labels),
        (on_device.eval_images, on_device.eval_labels),
    )  # fmt: skip
    del scratch
    reset_peak_memory(device)

    status, message = "ok", None
    stopwatch = Stopwatch(device)
    for epoch in range(start_epoch, spec.epochs + 1):
        augment = make_augment(spec.augment, epoch_generator(spec.seed + 7919, epoch, device))
        reporter.start_epoch(epoch, spec.epochs, steps_per_epoch)
        stopwatch.start()
        try:
            stats = train_one_epoch(
                training.model, training.criterion, training.optimizer,
                epoch_batches(spec, split, on_device, epoch, device), preprocess, device,
                training.precision, epoch=epoch, scheduler=training.scheduler, augment=augment,
                reporter=reporter,
            )  # fmt: skip
        except Diverged as exc:
            stopwatch.stop()
            status, message = "diverged", str(exc)
            reporter.end_epoch({"epoch": epoch, "status": "diverged", "note": message})
            history.append({"epoch": epoch, "status": "diverged", "step": exc.step})
            break
        epoch_seconds = stopwatch.stop()
        train_seconds += epoch_seconds
        entry = epoch_entry(epoch, stats, epoch_seconds, training)
        if spec.eval_each_epoch or epoch == spec.epochs:
            entry[f"{on_device.eval_name}_accuracy"], _ = evaluate(
                training.model, on_device.eval_images, on_device.eval_labels, preprocess,
                device, training.precision, eval_batch_size(spec.image_size),
            )  # fmt: skip
        history.append(entry)
        reporter.end_epoch(entry)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, spec, training, epoch, history, train_seconds)

    result = RunResult(
        spec=spec.to_dict(),
        status=status,
        message=message,
        device=str(device),
        amp=training.precision.label,
        history=history,
        train_seconds=train_seconds,
        flops_per_image=float(flops_per_image),
        macs_per_image=flops_per_image / 2,
        environment=environment(device, spec.threads),
        protocol=protocol(spec, split, preprocess, training.precision, device) | backends,
        resumed_from_epoch=resumed_from,
    )
    images_trained = sum(entry.get("images", 0) for entry in history)
    result.train_flops = float(train_flops_per_image * images_trained)
    if train_seconds > 0:
        result.images_per_second = images_trained / train_seconds
    if status == "ok":
        fill_test_result(result, training, split, preprocess, device, spec.image_size)
    result.peak_memory_bytes, result.peak_memory_kind = peak_memory(device)
    if checkpoint_dir is not None and status == "ok":
        final = final_model_path(checkpoint_dir, spec)
        save_final_model(final, spec, training.model)
        result.model_path = str(final)
        if ckpt_path is not None:
            ckpt_path.unlink(missing_ok=True)  # the final model supersedes the epoch checkpoint
    return result


def epoch_entry(
    epoch: int, stats: EpochStats, seconds: float, training: Training
) -> dict[str, Any]:
    """One epoch's history entry (the GradScaler's loss scale too, when there is one: a scale
    that keeps falling is how fp16 overflow shows)."""
    entry: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "lr": training.optimizer.param_groups[0]["lr"],
        "train_seconds": seconds,
        "images": stats.images,
        "images_per_second": stats.images / seconds,
    }
    if training.precision.scaler is not None:
        entry["loss_scale"] = float(training.precision.scaler.get_scale())
    return entry


def fill_test_result(
    result: RunResult,
    training: Training,
    split: SplitData,
    preprocess: Preprocess,
    device: torch.device,
    image_size: int,
) -> None:
    """Evaluate on the test split (timed apart from training) and fill in the result."""
    if len(split.val_labels):
        result.val_accuracy = result.history[-1].get("val_accuracy")
    eval_watch = Stopwatch(device)
    eval_watch.start()
    accuracy, confusion = evaluate(
        training.model, split.test_images.to(device), split.test_labels.to(device), preprocess,
        device, training.precision, eval_batch_size(image_size),
    )  # fmt: skip
    result.eval_seconds = eval_watch.stop()
    result.test_accuracy = accuracy
    result.confusion_matrix = confusion.tolist()
    per_class = confusion.diag().double() / confusion.sum(1).clamp(min=1).double()
    result.per_class_accuracy = (100.0 * per_class).tolist()


def protocol(
    spec: RunSpec,
    split: SplitData,
    preprocess: Preprocess,
    precision: Precision,
    device: torch.device,
) -> dict[str, Any]:
    """What a reader needs to compare this result with another: the protocol, stated."""
    return {
        "split": spec.split,
        "sizes": split.sizes(),
        "image_size": spec.image_size,
        "channels": spec.channels,
        "normalize": [round(preprocess.mean, 4), round(preprocess.std, 4)],
        "resize": "bilinear, per batch on the device" if spec.image_size != 28 else "none",
        "stem": spec.stem,
        "epochs": spec.epochs,
        "loader": spec.loader,
        "pin_memory": spec.pin_memory and device.type == "cuda" and spec.loader == "dataloader",
        "amp": precision.label,
        "memory_format": "channels_last" if preprocess.channels_last else "contiguous",
        "device": str(device),
    }
