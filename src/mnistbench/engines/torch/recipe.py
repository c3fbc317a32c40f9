"""What a run trains with, built from its spec: model, loss, optimizer, schedule, precision,
preprocessing and per-device backend settings. Nothing here trains; train.py does."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import ASSIGNMENT_MEAN_STD, Preprocess, normalization_stats
from mnistbench.data.splits import SplitData
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.smallmaps import use_matmul_for_small_maps
from mnistbench.specfields import AMP_CUDA_ONLY


@dataclass(frozen=True)
class Precision:
    """What mixed precision actually runs: autocast dtype (None = fp32) and a GradScaler."""

    label: str  # "fp32", "fp16" or "bf16"
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    def autocast(
        self, device: torch.device, *, cache_enabled: bool = True
    ) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the dtype (a no-op in fp32); cache_enabled=False under CUDA graph
        capture, where a cached cast would be freed while the graph still reads it."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(
            device_type=device.type, dtype=self.autocast_dtype, cache_enabled=cache_enabled
        )

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


def make_precision(amp: bool | str, device: torch.device) -> Precision:
    """The spec's `amp` on this device. True: fp16 autocast + GradScaler on CUDA (fp16's range
    needs loss scaling), bf16 on CPU (same range as fp32, no scaler needed), fp32 elsewhere.
    "cuda" (mixed precision on CUDA only, as published): fp16 + GradScaler on CUDA, fp32
    elsewhere. False: fp32."""
    if amp == AMP_CUDA_ONLY:
        amp = device.type == "cuda"
    if amp is not True or device.type not in ("cuda", "cpu"):
        return Precision("fp32", None, None)
    if device.type == "cuda":
        return Precision("fp16", torch.float16, torch.amp.GradScaler("cuda"))
    return Precision("bf16", torch.bfloat16, None)


def make_optimizer(
    spec: RunSpec,
    model: nn.Module,
    device: torch.device,
    *,
    grad_scaler: bool = False,
    captured: bool = False,
) -> torch.optim.Optimizer:
    """The spec's optimizer; on CPU and CUDA the fused implementation (one kernel for all
    parameters instead of a loop of small ones): the same update, faster (benchmarks/README.md).

    Except SGD under a GradScaler in an eager step: fused SGD takes over the scaler's overflow
    check, and when it skips its very first step it leaves its momentum buffers uninitialised
    (torch allocates them with empty_like), so the weights blow up a few steps later; fused
    Adam/AdamW honour the skip (tests/engines/torch/test_train.py reproduces it on CPU). A `captured`
    step (cudagraphs.py) creates every optimizer state, zeroed, before its first step, so it
    uses fused SGD too; there Adam is also `capturable`, as a graph capture requires.
    """
    fused_ok = device.type in ("cpu", "cuda") and (
        captured or not (grad_scaler and spec.optimizer == "sgd")
    )
    fused = {"fused": True} if fused_ok else {}
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            **fused,
        )
    capturable = {"capturable": True} if captured and device.type == "cuda" else {}
    optimizer_class = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
    optimizer = optimizer_class(
        model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **fused, **capturable
    )
    # Its few steps outside a graph (creating its state, an eager fallback) are meant: no warning.
    optimizer._warned_capturable_if_run_uncaptured = True
    return optimizer


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


def make_preprocess(spec: RunSpec, split: SplitData, channels_last: bool) -> Preprocess:
    """The published protocol normalises with 0.5/0.5; the native one with train statistics.
    channels_last: the layout chosen for the run (memory_format.choose_layout)."""
    if spec.split == "assignment":
        mean, std = ASSIGNMENT_MEAN_STD
    else:
        mean, std = normalization_stats(split.train_images)
    return Preprocess(
        mean=mean,
        std=std,
        image_size=spec.image_size,
        channels=spec.channels,
        channels_last=channels_last,
    )


# torch's process-wide RNG, for runs that share a process (one thread each, sharing a GPU): what
# seeds or draws it, or saves and restores its state, holds this, so that each model's initial
# weights depend on its seed alone (make_training, layout.time_layouts, checkpoint's RNG state).
GLOBAL_RNG = threading.RLock()


@dataclass
class Training:
    """What one run trains with; what a checkpoint saves and restores."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    precision: Precision
    ema: AveragedModel | None = None  # the weights' moving average (ema_decay), when kept

    @property
    def evaluated(self) -> nn.Module:
        """The model that evaluations, the test result and the saved model use."""
        return self.ema.module if self.ema is not None else self.model


def make_training(
    spec: RunSpec,
    device: torch.device,
    channels_last: bool,
    steps: int,
    matmul_small_maps: bool = False,
    captured: bool = False,
) -> Training:
    """Model, loss, optimizer, per-step schedule over `steps` and precision for the spec, in
    the layout and small-map convolutions chosen for the run (memory_format.choose_layout), with an
    optimizer fit for a `captured` step (make_optimizer)."""
    with GLOBAL_RNG:  # the model's initial weights depend on the seed only
        torch.manual_seed(spec.seed)
        model = build_resnet(spec.model, channels=spec.channels, stem=spec.stem)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if matmul_small_maps:
        use_matmul_for_small_maps(model)
    precision = make_precision(spec.amp, device)
    optimizer = make_optimizer(
        spec, model, device, grad_scaler=precision.scaler is not None, captured=captured
    )
    return Training(
        model=model,
        criterion=nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing),
        optimizer=optimizer,
        scheduler=make_scheduler(spec, optimizer, steps),
        precision=precision,
        ema=make_ema(model, spec.ema_decay),
    )


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """torch's AveragedModel of the parameters and buffers (batch-norm statistics too, so the
    average evaluates with statistics that match its weights), updated by `warmed_up_ema`;
    None when decay is 0."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=warmed_up_ema(decay), use_buffers=True)


def ema_decay_at(decay: float, updates: torch.Tensor) -> torch.Tensor:
    """The decay of the update after `updates` earlier ones: min(decay, (1 + n) / (10 + n)), as
    TensorFlow's ExponentialMovingAverage warms up (num_updates). A plain EMA keeps
    decay^n of the random initial weights after n steps (9.5 % after a 234-step epoch at 0.99:
    77.6 % on MNIST where the trained weights scored 99.1 %); the warm-up averages over at most
    the steps there have been."""
    n = updates.to(torch.float32)
    return torch.clamp((1 + n) / (10 + n), max=decay)


def warmed_up_ema(decay: float) -> Any:
    """An AveragedModel multi_avg_fn (called per device and dtype group, with the number of
    earlier updates as a tensor): the EMA with `ema_decay_at`'s warm-up, its decay kept in fp32
    (in bf16, 0.999 would round to 1.0 and the average would never move)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: Any) -> None:
        if not torch.is_floating_point(averaged[0]):  # batch-norm's num_batches_tracked
            for average, value in zip(averaged, current, strict=True):
                average.copy_(value)
            return
        keep = ema_decay_at(decay, updates)
        torch._foreach_mul_(averaged, keep)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - keep))

    return update


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
