"""A model file loaded to use: scores for uint8 images (N, 28, 28), whatever its engine.

`load_model(path)` reads a `.model.pt` (ResNet) or `.model.skops` (SVM) file (modelfile.py) and
returns a SavedModel: its spec, class names and `scores(images)`, which are a ResNet's logits
or an SVM's one-vs-rest decision values. Both are computed as the run computed them, so that
re-evaluating a model on its own test split gives the stored accuracy exactly: the same
preprocessing, layout and batch size for a ResNet; the same feature transform and float64
predict for an SVM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.preprocess import Preprocess
from mnistbench.data.splits import limit_split, make_split
from mnistbench.engines.svm.train import features, predict
from mnistbench.engines.torch.loops import eval_batch_size
from mnistbench.engines.torch.recipe import make_preprocess
from mnistbench.modelfile import ModelFileError, model_engine, read_svm_file, read_torch_file
from mnistbench.models import build_resnet


@dataclass
class SavedModel:
    """A model ready to predict: what it is, and how it scores images."""

    path: Path
    engine: str
    """'torch' (a ResNet) or 'svm'."""
    spec: RunSpec
    classes: tuple[str, ...]
    preprocess: Preprocess | None = None
    """ResNets: the preprocessing the run trained with."""
    module: nn.Module | None = None
    estimator: Any = None
    transform: Any = None
    """SVMs: the feature transform fitted on the run's training images (None: pixels)."""
    legacy: bool = False
    """A file of the first format, whose preprocessing was recomputed from the spec."""

    @property
    def key(self) -> str:
        return self.spec.key()

    @property
    def has_probabilities(self) -> bool:
        """A ResNet's softmax is a probability; an SVM's decision values are only scores."""
        return self.engine == "torch"

    def scores(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """(N, classes) float scores of uint8 images (N, 28, 28), in batches."""
        if self.engine == "svm":
            x = features(images, self.transform).astype(np.float64)
            return np.asarray(self.estimator.decision_function(x), dtype=np.float64)
        return self._logits(images, device or torch.device("cpu"))

    def predict(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """Class indices, as the run predicted them (an SVM through its own predict)."""
        if self.engine == "svm":
            return predict(self.estimator, features(images, self.transform))
        return self.scores(images, device).argmax(axis=1)

    @torch.no_grad()
    def _logits(self, images: torch.Tensor, device: torch.device) -> np.ndarray:
        assert self.module is not None and self.preprocess is not None
        module = self.module.to(device).eval()
        batch = eval_batch_size(self.preprocess.image_size)
        out = [
            module(self.preprocess(images[start : start + batch].to(device))).float().cpu()
            for start in range(0, len(images), batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)


DataLoader = Callable[[str], Dataset]


def load_model(path: Path, load_data: DataLoader | None = None) -> SavedModel:
    """The model in `path`. `load_data(name)` is needed only for a first-format ResNet file,
    whose normalisation is recomputed from its run's training split."""
    if model_engine(path) == "svm":
        state = read_svm_file(path)
        return SavedModel(
            path, "svm", _spec(state, path), _classes(state),
            estimator=state["estimator"], transform=state.get("transform"),
        )  # fmt: skip
    state = read_torch_file(path)
    spec = _spec(state, path)
    legacy = "preprocess" not in state
    if legacy and load_data is None:
        raise ModelFileError(f"{path}: an older model file without its preprocessing")
    preprocess = legacy_preprocess(spec, load_data) if legacy else _preprocess(state["preprocess"])
    module = build_resnet(spec.model, channels=spec.channels, stem=spec.stem)
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit a {spec.model}: {exc}") from exc
    if preprocess.channels_last:
        module = module.to(memory_format=torch.channels_last)
    classes = _classes(state) if "classes" in state else _dataset_classes(spec)
    return SavedModel(path, "torch", spec, classes, preprocess, module, legacy=legacy)


def legacy_preprocess(spec: RunSpec, load_data: DataLoader) -> Preprocess:
    """A first-format file's preprocessing, computed as its run did: the split and subset of
    its spec, the normalisation of that training split; contiguous layout (those runs chose
    channels_last from 64 px up only)."""
    data = load_data(spec.dataset)
    split = make_split(data, spec.split, val_fraction=spec.val_fraction, seed=spec.seed)
    split = limit_split(split, spec.train_limit, spec.test_limit, spec.seed)
    channels_last = spec.memory_format == "channels_last" or (
        spec.memory_format == "auto" and spec.image_size >= 64
    )
    return make_preprocess(spec, split, channels_last)


def _spec(state: dict[str, Any], path: Path) -> RunSpec:
    spec, unknown = RunSpec.from_stored(state["spec"])
    if unknown:  # written by a newer mnistbench with fields this one does not know
        raise ModelFileError(
            f"{path}: its spec has fields this mnistbench does not know: {unknown}"
        )
    return spec


def _preprocess(record: dict[str, Any]) -> Preprocess:
    return Preprocess(
        mean=record["mean"],
        std=record["std"],
        image_size=record["image_size"],
        channels=record["channels"],
        channels_last=record["memory_format"] == "channels_last",
    )


def _classes(state: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(name) for name in state["classes"])


def _dataset_classes(spec: RunSpec) -> tuple[str, ...]:
    from mnistbench.data.registry import get_dataset

    return get_dataset(spec.dataset).classes
