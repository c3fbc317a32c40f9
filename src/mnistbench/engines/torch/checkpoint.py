"""Epoch checkpoints and final models, written atomically (files.atomic_replace): a killed run
never leaves half a file, and a run with the same spec resumes after its last saved epoch.

save_checkpoint and restore_checkpoint mirror each other: a field added to one belongs in the
other (and a change to what they hold raises CHECKPOINT_VERSION).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import Preprocess
from mnistbench.engines.modelfile import header, why
from mnistbench.engines.torch.recipe import GLOBAL_RNG, Training
from mnistbench.engines.torch.saved import preprocess_record
from mnistbench.files import atomic_replace
from mnistbench.result import EpochRecord

MODEL_SUFFIX = ".model.pt"  # the final model: <key>.model.pt (the engine's model_suffix)
CHECKPOINT_VERSION = 1


def checkpoint_path(checkpoint_dir: Path, spec: RunSpec) -> Path:
    return checkpoint_dir / f"{spec.key()}.ckpt.pt"


def final_model_path(checkpoint_dir: Path, spec: RunSpec) -> Path:
    return checkpoint_dir / f"{spec.key()}{MODEL_SUFFIX}"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through atomic_replace: a killed run never leaves half a checkpoint."""
    with atomic_replace(path) as handle:
        torch.save(obj, handle)


def save_checkpoint(
    path: Path,
    spec: RunSpec,
    training: Training,
    epoch: int,
    history: list[EpochRecord],
    train_seconds: float,
) -> None:
    """Everything a resumed run needs to go on as if it had never stopped, after `epoch`."""
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
            "ema": training.ema.state_dict() if training.ema is not None else None,
            "rng": _rng_state(_device_of(training)),
            "history": [dataclasses.asdict(entry) for entry in history],  # plain data
            "train_seconds": train_seconds,
        },
        path,
    )


def restore_checkpoint(state: dict[str, Any], training: Training) -> None:
    """Put a checkpoint's model, optimizer, schedule, GradScaler, weight average and RNG
    states back."""
    training.model.load_state_dict(state["model"])
    _load_optimizer_state(training.optimizer, state["optimizer"])
    if training.scheduler is not None and state["scheduler"] is not None:
        training.scheduler.load_state_dict(state["scheduler"])
    if training.precision.scaler is not None and state["scaler"] is not None:
        training.precision.scaler.load_state_dict(state["scaler"])
    if training.ema is not None and state.get("ema") is not None:
        training.ema.load_state_dict(state["ema"])
    _set_rng_state(state["rng"], _device_of(training))


# How this run's optimizer steps, not state: a checkpoint's param groups must not change them.
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """The saved state and hyperparameters, but this run's implementation: an epoch saved by an
    eager run (unfused SGD, Adam not capturable) resumes into a captured one, and back."""
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        for flag in IMPLEMENTATION_FLAGS:
            if flag in optimizer.defaults:
                group[flag] = optimizer.defaults[flag]


def load_checkpoint(
    path: Path, spec: RunSpec, log: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """The checkpoint at path if it belongs to this exact spec, else None (said through `log`
    when a file is there but was written for another spec or checkpoint version)."""
    if not path.is_file():
        return None
    state, reason = _read_weights_only(path)
    if reason is None and state.get("version") != CHECKPOINT_VERSION:
        reason = f"checkpoint version {state.get('version')!r}, this mnistbench writes {CHECKPOINT_VERSION}"
    elif reason is None and state.get("spec") != spec.canonical():
        reason = "it was written for another spec"
    if reason is None:
        return state
    if log is not None:
        log(f"ignoring {path}: {reason}; training from the start")
    return None


def _read_weights_only(path: Path) -> tuple[dict[str, Any], str | None]:
    """(the checkpoint, None), or ({}, why not): read with weights_only=True, so a file that
    holds anything but tensors and plain data is refused, never run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True), None
    except Exception as exc:  # unpickling raises many types on a file that is not one
        return {}, f"it holds more than weights and plain data ({why(exc)})"


def save_final_model(path: Path, spec: RunSpec, model: nn.Module, preprocess: Preprocess) -> None:
    """The model file (saved.py reads it): weights as CPU tensors, so that it loads on a machine
    without the training GPU, with the spec, preprocessing and class names beside them."""
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    steps = preprocess_record(
        preprocess.mean, preprocess.std, preprocess.image_size, preprocess.channels,
        preprocess.channels_last,
    )  # fmt: skip
    atomic_torch_save(header(spec, "torch") | {"preprocess": steps, "model": weights}, path)


def _device_of(training: Training) -> torch.device:
    """The run's device: where its model's weights are."""
    return next(training.model.parameters()).device


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The global torch RNG state (a DataLoader draws its workers' seeds there), and for a CUDA
    run the CUDA RNG states. Only for a CUDA run: asking for them initialises CUDA, which would
    cost a CPU run on a GPU machine memory and a CUDA context it never uses."""
    with GLOBAL_RNG:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    with GLOBAL_RNG:
        torch.set_rng_state(state["torch"])
        if device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
