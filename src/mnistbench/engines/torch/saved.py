"""A ResNet's final model file: written by checkpoint.py, read here to predict.

`<key>.model.pt` is a plain dict that `torch.load(..., weights_only=True)` reads without running
any code: the spec, the CPU weights, the preprocessing (normalisation mean/std, input size,
channels, memory format) and the class names, so the file alone is enough to predict. Files
written before this format (FORMAT_VERSION 1: spec and weights only) still load; their
preprocessing is recomputed from the spec and the dataset (`legacy_preprocess`), exactly as the
run computed it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.preprocess import Preprocess
from mnistbench.data.splits import split_for_run
from mnistbench.engines import SavedModel
from mnistbench.engines.modelfile import (
    FORMAT_VERSION,
    ModelFileError,
    check_exists,
    classes_in_file,
    spec_in_file,
    why,
)
from mnistbench.engines.torch.loops import eval_batch_size
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.recipe import make_precision, make_preprocess


def preprocess_record(
    mean: float, std: float, image_size: int, channels: int, channels_last: bool
) -> dict[str, Any]:
    """The preprocessing a model expects, as plain data (data/preprocess.py applies it)."""
    return {
        "input": "uint8 (N, 28, 28), white on black, as the IDX files hold it",
        "mean": float(mean),
        "std": float(std),
        "image_size": int(image_size),
        "channels": int(channels),
        "memory_format": "channels_last" if channels_last else "contiguous",
    }


def read_torch_file(path: Path) -> dict[str, Any]:
    """A `.model.pt` file's dict, read with weights_only=True: tensors and plain data only, so a
    file that smuggles in another object fails here instead of running it."""
    check_exists(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling raises many types on a file that is not one
        raise ModelFileError(
            f"{path}: not a model file mnistbench can load safely (weights only): {why(exc)}"
        ) from exc
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ModelFileError(f"{path}: not a mnistbench model file (no weights in it)")
    if not isinstance(state.get("spec"), dict):
        raise ModelFileError(f"{path}: not a mnistbench model file (no run spec in it)")
    version = state.get("version", 1)
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file version {version}; this mnistbench reads up to "
            f"{FORMAT_VERSION}: upgrade mnistbench"
        )
    return state


# --- Loaded to use ----------------------------------------------------------------------------


class TorchModel(SavedModel):
    """A ResNet ready to predict: its network and the preprocessing its run trained with,
    evaluated as the run evaluated (batch size, precision), so that its own test split gives
    the stored accuracy exactly."""

    engine = "torch"
    has_probabilities = True

    def __init__(
        self,
        path: Path,
        spec: RunSpec,
        classes: tuple[str, ...],
        preprocess: Preprocess,
        module: nn.Module,
        legacy: bool = False,
    ) -> None:
        self.path, self.spec, self.classes = path, spec, classes
        self.preprocess, self.module = preprocess, module
        self.legacy = legacy  # the first format: its preprocessing recomputed from the spec

    def scores(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """Logits in fp32, whatever precision the run trained in (the probabilities a user
        reads, and what an ONNX export is compared with)."""
        return self._logits(images, device or torch.device("cpu"), as_run=False)

    def predict(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """Classes as the run evaluated them: in its precision, so that its own test split
        gives its stored accuracy exactly."""
        return self._logits(images, device or torch.device("cpu"), as_run=True).argmax(axis=1)

    @torch.no_grad()
    def _logits(self, images: torch.Tensor, device: torch.device, as_run: bool) -> np.ndarray:
        module = self.module.to(device).eval()
        precision = make_precision(self.spec.amp if as_run else False, device)
        batch = eval_batch_size(self.preprocess.image_size)
        out = []
        for start in range(0, len(images), batch):
            with precision.autocast(device):
                out.append(module(self.preprocess(images[start : start + batch].to(device))))
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        return torch.cat([scores.float().cpu() for scores in out]).numpy()


def load_torch_model(path: Path, load_data: Callable[[str], Dataset] | None) -> TorchModel:
    """The ResNet in `path`. `load_data(name)` is needed only for a first-format file, whose
    normalisation is recomputed from its run's training split."""
    state = read_torch_file(path)
    spec = spec_in_file(state, path)
    legacy = "preprocess" not in state
    if legacy and load_data is None:
        raise ModelFileError(f"{path}: an older model file without its preprocessing")
    if legacy:
        preprocess = legacy_preprocess(spec, load_data(spec.dataset))
    else:
        preprocess = _preprocess(state["preprocess"])
    module = build_resnet(spec.model, channels=spec.channels, stem=spec.stem)
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit a {spec.model}: {exc}") from exc
    if preprocess.channels_last:
        module = module.to(memory_format=torch.channels_last)
    classes = classes_in_file(state, spec)
    return TorchModel(path, spec, classes, preprocess, module, legacy=legacy)


def legacy_preprocess(spec: RunSpec, data: Dataset) -> Preprocess:
    """A first-format file's preprocessing, computed as its run did: the split and subset of
    its spec, the normalisation of that training split; contiguous layout (those runs chose
    channels_last from 64 px up only)."""
    split = split_for_run(data, spec)
    channels_last = spec.memory_format == "channels_last" or (
        spec.memory_format == "auto" and spec.image_size >= 64
    )
    return make_preprocess(spec, split, channels_last)


def _preprocess(record: dict[str, Any]) -> Preprocess:
    return Preprocess(
        mean=record["mean"],
        std=record["std"],
        image_size=record["image_size"],
        channels=record["channels"],
        channels_last=record["memory_format"] == "channels_last",
    )
