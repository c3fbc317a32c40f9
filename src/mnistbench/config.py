"""RunSpec: one training run, fully described; RunResult: what it measured.

A RunSpec is frozen and validated on construction: every error names the field, the bad value and
what is allowed. Its `canonical()` form keeps only the fields that matter for its model (an
SVM has no learning rate, Adam no momentum), so that equal runs hash equal (`key()`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from mnistbench.data.registry import UnknownDatasetError, canonical_name

MODELS = ("resnet18", "resnet50", "svm")
SPLITS = ("official", "assignment")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "onecycle")
AUGMENTS = ("none", "translate", "flip", "translate+flip")
LOADERS = ("memory", "dataloader")
STEMS = ("imagenet", "cifar")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
KERNELS = ("poly", "rbf", "linear")
SVM_BACKENDS = ("auto", "sklearn", "sklearnex", "cuml")
GAMMAS = ("scale", "auto")

# Fields that only the deep-learning engine reads, and those only the SVM engine reads.
TORCH_FIELDS = (
    "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "lr_schedule",
    "label_smoothing", "augment", "device", "amp", "pin_memory", "loader", "num_workers",
    "image_size", "channels", "stem", "eval_each_epoch", "memory_format",
)  # fmt: skip
SVM_FIELDS = ("kernel", "C", "gamma", "degree", "svm_backend", "features")


class SpecError(ValueError):
    """A bad RunSpec value: names the field, the value and what is allowed."""

    def __init__(self, field_name: str, value: object, allowed: str) -> None:
        super().__init__(f"{field_name}={value!r} is invalid: {allowed}")
        self.field_name, self.value, self.allowed = field_name, value, allowed


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(name, value, f"choose one of {', '.join(allowed)}")


def _positive(name: str, value: object, *, integer: bool = False, zero_ok: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        what = "an integer" if integer else "a number"
        raise SpecError(name, value, f"must be {what} {'>= 0' if zero_ok else '> 0'}")


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RunSpec:
    """One run: a model trained on a dataset under one protocol and one set of settings."""

    dataset: str = "mnist"
    """'mnist' or 'fashion-mnist' (aliases accepted, stored canonical)."""
    model: str = "resnet18"
    """'resnet18', 'resnet50' (torchvision) or 'svm' (sklearn SVC or an accelerated twin)."""
    split: str = "official"
    """'official' (60k/10k files) or 'assignment' (published protocol: pooled 70/10/20, seed 42)."""
    val_fraction: float = 0.0
    """Official split only: fraction of train held out (stratified) for validation."""
    seed: int = 0
    """Seeds weight init, batch order, augmentation and the train/test_limit subsets."""
    train_limit: int | None = None
    """Use only the first N of the train split's seeded permutation (quick runs)."""
    test_limit: int | None = None
    """Use only the first N of the test split's seeded permutation (quick runs)."""
    threads: int = field(default_factory=default_threads)
    """CPU threads for torch / the SVM back-end (default: all cores); recorded with the result."""

    # --- deep-learning engine ---
    optimizer: str = "adamw"
    """'sgd' (with momentum), 'adam' or 'adamw'. The published study used sgd and adam; its
    protocol lives in configs/*.toml, while these defaults are a recipe that trains well fast."""
    lr: float = 2e-3
    """Peak learning rate."""
    momentum: float = 0.9
    """SGD momentum (ignored by Adam/AdamW)."""
    weight_decay: float = 5e-4
    """L2 weight decay (5e-4 as in the published study)."""
    batch_size: int = 64
    """Training batch size (images per step)."""
    epochs: int = 5
    """Passes over the training split."""
    lr_schedule: str = "onecycle"
    """'none' (constant, as published), 'cosine' or 'onecycle' (per-step warm-up then decay)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing in [0, 1)."""
    augment: str = "none"
    """'none', 'translate' (random shift of up to ±2 px), 'flip' (random left-right mirror: for
    FashionMNIST's clothes, not for digits) or 'translate+flip'; per image, on the device."""
    device: str = "auto"
    """'auto' (cuda if present, else cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    amp: bool = False
    """Mixed precision: fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU."""
    pin_memory: bool = False
    """Dataloader loader only: page-locked host batches for faster host-to-GPU copies."""
    loader: str = "memory"
    """'memory' (dataset as device tensors, batches by index) or 'dataloader' (torch DataLoader)."""
    num_workers: int = 0
    """Dataloader loader only: worker processes."""
    image_size: int = 28
    """Model input size in pixels, 28 (native) to 224 (published protocol); resized per batch."""
    channels: int = 1
    """Model input channels: 1 (native) or 3 (published protocol: gray repeated)."""
    stem: str = "imagenet"
    """'imagenet' (7x7/2 conv + max-pool) or 'cifar' (3x3/1 conv, no max-pool)."""
    eval_each_epoch: bool = True
    """Evaluate on the validation (or, without one, test) split after every epoch."""
    memory_format: str = "auto"
    """Activation layout: 'channels_last' (NHWC, what oneDNN and tensor cores run fastest at
    large inputs), 'contiguous' (NCHW) or 'auto' (channels_last from 64 px up, else NCHW).
    Changes speed, not what is computed, so it is not part of the run's identity."""

    # --- SVM engine ---
    kernel: str = "rbf"
    """SVC kernel: 'poly', 'rbf' or 'linear'."""
    C: float = 10.0
    """SVC regularisation (10 in the published study)."""
    gamma: str | float = "scale"
    """'scale', 'auto' or a positive float."""
    degree: int = 3
    """Polynomial degree (poly kernel only)."""
    svm_backend: str = "auto"
    """'auto' (fastest available), 'sklearn', 'sklearnex' or 'cuml'."""
    features: str = "pixels"
    """'pixels' (scaled to 0..1), 'standardized' or 'pca:N'."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "dataset", canonical_name(self.dataset))
        except UnknownDatasetError as exc:
            raise SpecError("dataset", self.dataset, str(exc)) from exc
        _choice("model", self.model, MODELS)
        _choice("split", self.split, SPLITS)
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise SpecError("val_fraction", self.val_fraction, "must be in [0, 1)")
        if self.split == "assignment" and self.val_fraction:
            raise SpecError(
                "val_fraction", self.val_fraction, "the assignment split fixes 70/10/20"
            )
        _positive("seed", self.seed, integer=True, zero_ok=True)
        for name in ("train_limit", "test_limit"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name), integer=True)
        _positive("threads", self.threads, integer=True)
        if self.model == "svm":
            self._validate_svm()
        else:
            self._validate_torch()

    def _validate_torch(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _positive("lr", self.lr)
        _positive("momentum", self.momentum, zero_ok=True)
        if self.momentum >= 1:
            raise SpecError("momentum", self.momentum, "must be in [0, 1)")
        _positive("weight_decay", self.weight_decay, zero_ok=True)
        _positive("batch_size", self.batch_size, integer=True)
        _positive("epochs", self.epochs, integer=True)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not isinstance(self.label_smoothing, (int, float)) or not 0 <= self.label_smoothing < 1:
            raise SpecError("label_smoothing", self.label_smoothing, "must be in [0, 1)")
        _choice("augment", self.augment, AUGMENTS)
        if not (
            self.device in ("auto", "cpu", "cuda", "mps")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise SpecError("device", self.device, "choose auto, cpu, cuda, cuda:N or mps")
        _choice("loader", self.loader, LOADERS)
        _positive("num_workers", self.num_workers, integer=True, zero_ok=True)
        if self.loader == "memory" and self.num_workers:
            raise SpecError(
                "num_workers", self.num_workers, "only the dataloader loader has workers"
            )
        if (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or not (28 <= self.image_size <= 224)
        ):
            raise SpecError("image_size", self.image_size, "must be an integer from 28 to 224")
        if self.channels not in (1, 3):
            raise SpecError("channels", self.channels, "must be 1 or 3")
        _choice("stem", self.stem, STEMS)
        _choice("memory_format", self.memory_format, MEMORY_FORMATS)

    def _validate_svm(self) -> None:
        _choice("kernel", self.kernel, KERNELS)
        _positive("C", self.C)
        if isinstance(self.gamma, str):
            _choice("gamma", self.gamma, GAMMAS)
        else:
            _positive("gamma", self.gamma)
        _positive("degree", self.degree, integer=True)
        _choice("svm_backend", self.svm_backend, SVM_BACKENDS)
        if self.features not in ("pixels", "standardized") and not (
            self.features.startswith("pca:")
            and self.features[4:].isdigit()
            and int(self.features[4:]) > 0
        ):
            raise SpecError("features", self.features, "choose pixels, standardized or pca:N")

    @property
    def is_svm(self) -> bool:
        return self.model == "svm"

    def canonical(self) -> dict[str, Any]:
        """The fields that define this run, nothing its engine ignores.

        `threads` and `memory_format` are left out: they change speed, not what is computed, so
        a study can change them without re-running everything.
        """
        spec = dataclasses.asdict(self)
        del spec["threads"], spec["memory_format"]
        drop = set(TORCH_FIELDS if self.is_svm else SVM_FIELDS)
        if not self.is_svm:
            if self.optimizer != "sgd":
                drop.add("momentum")
            if self.loader == "memory":
                drop.update(("pin_memory", "num_workers"))
        elif self.kernel != "poly":
            drop.add("degree")
        if self.split == "assignment":
            drop.add("val_fraction")
        return {name: value for name, value in spec.items() if name not in drop}

    def key(self) -> str:
        """A stable hash of the canonical spec: the run's identity in the results store."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        """Build from a mapping; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(
                unknown[0], values[unknown[0]], f"unknown field; known: {sorted(known)}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        """A short human label for the run: what differs between runs of a grid."""
        if self.is_svm:
            return f"svm {self.kernel} C={self.C:g} {self.dataset}"
        label = f"{self.model} {self.dataset} B{self.batch_size} {self.optimizer} lr={self.lr:g}"
        return label + (f" {self.device}" if self.device != "auto" else "") + f" seed={self.seed}"


@dataclass
class RunResult:
    """What one run measured; the same type for both engines (null where a metric does not apply).

    Accuracies are percentages. Times are seconds: train_seconds excludes evaluation and warm-up
    and is device-synchronised; eval_seconds covers the final test evaluation.
    """

    spec: dict[str, Any]
    status: str = "ok"  # "ok", "diverged", "failed"
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    images_per_second: float | None = None
    flops_per_image: float | None = None
    """Forward-pass FLOPs per image at the real input size (counted, not estimated)."""
    macs_per_image: float | None = None
    """flops_per_image / 2 (what thop and the published study call 'FLOPs')."""
    train_flops: float | None = None
    """Total training FLOPs: 3 x forward FLOPs (forward + backward) x images seen."""
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    device: str | None = None
    amp: str = "off"  # "off", "fp16" (CUDA + GradScaler) or "bf16" (CPU)
    history: list[dict[str, Any]] = field(default_factory=list)
    per_class_accuracy: list[float] | None = None
    confusion_matrix: list[list[int]] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    """Why the run did not finish normally (divergence, error), or a note on it."""
    backend: str | None = None
    """SVM only: the back-end that ran, with its version."""
    n_support: int | None = None
    """SVM only: number of support vectors."""
    model_path: str | None = None
    """Where the final model was saved, when it was."""
    resumed_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line: status, test accuracy, train time and any note."""
        parts = [self.status]
        if self.test_accuracy is not None:
            parts.append(f"{self.test_accuracy:.2f} %")
        if self.train_seconds is not None:
            parts.append(f"train {self.train_seconds:.1f} s")
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunResult:
        return cls(**values)
