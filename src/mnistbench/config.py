"""RunSpec: one training run, fully described, and its identity in the results store.

A RunSpec is frozen and validated on construction: every error names the field, the bad value and
what is allowed. Each field declares its role where it is declared (`spec_field`): which engine
reads it, whether it is part of the run's identity, and when it applies. `canonical()` keeps
only the fields that define the run (an SVM has no learning rate, Adam no momentum), so that
equal runs hash equal (`key()`).

Identity is versioned (KEY_VERSION) and stable: a field added later is declared with
identity="non-default", so it enters the key only when set to something else than its default
(which keeps the old behaviour), and every existing store keeps its keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from mnistbench.data.registry import UnknownDatasetError, canonical_name
from mnistbench.specfields import (
    AMP_CUDA_ONLY,
    AUGMENTS,
    CUDA_GRAPHS,
    GAMMAS,
    KERNELS,
    LOADERS,
    LR_SCHEDULES,
    MEMORY_FORMATS,
    OPTIMIZERS,
    SMALL_MAP_CONVS,
    SPLITS,
    STEMS,
    SVM_BACKENDS,
    TTAS,
    EngineName,
    SpecError,
    check_choice,
    check_positive,
    engine_of,
    field_default,
    field_role,
    models,
    spec_field,
)

# The identity scheme. Bump it only to change every run's key on purpose: each store then runs
# everything again. Version 1 hashes the canonical fields as JSON (no version in the text).
KEY_VERSION = 1


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class RunSpec:
    """One run: a model trained on a dataset under one protocol and one set of settings."""

    dataset: str = spec_field("mnist", engine="run", speed=("svm",))
    """'mnist' or 'fashion-mnist' (aliases accepted, stored canonical)."""
    model: str = spec_field("resnet18", engine="run", choices=models, speed=True)
    """'resnet18', 'resnet50' (torchvision) or 'svm' (sklearn SVC or an accelerated twin)."""
    split: str = spec_field("official", engine="run", choices=SPLITS)
    """'official' (60k/10k files) or 'assignment' (published protocol: pooled 70/10/20, seed 42)."""
    val_fraction: float = spec_field(0.0, engine="run", applies=lambda s: s.split != "assignment")
    """Official split only: fraction of train held out (stratified) for validation."""
    seed: int = spec_field(0, engine="run")
    """Seeds weight init, batch order, augmentation and the train/val/test_limit subsets."""
    train_limit: int | None = spec_field(None, engine="run")
    """Use only the first N of the train split's seeded permutation (quick runs)."""
    val_limit: int | None = spec_field(
        None, engine="run", identity="non-default", applies=lambda s: s.has_val_split()
    )
    """Use only the first N of the validation split's seeded permutation (quick runs: without
    it every held-out evaluation reads all of it, whatever train_limit says). Only where there
    is one (assignment split, or val_fraction > 0)."""
    test_limit: int | None = spec_field(None, engine="run")
    """Use only the first N of the test split's seeded permutation (quick runs)."""
    threads: int = spec_field(engine="run", identity="never", default_factory=default_threads)
    """CPU threads for torch / the SVM back-end (default: all cores); recorded with the result."""

    # --- deep-learning engine ---
    optimizer: str = spec_field("adamw", engine="torch", choices=OPTIMIZERS, speed=True)
    """'sgd' (with momentum), 'adam' or 'adamw'. The published study used sgd and adam; its
    protocol lives in configs/*.toml, while these defaults are a recipe that trains well fast."""
    lr: float = spec_field(3e-3, engine="torch")
    """Peak learning rate."""
    momentum: float = spec_field(0.9, engine="torch", applies=lambda s: s.optimizer == "sgd")
    """SGD momentum (ignored by Adam/AdamW)."""
    weight_decay: float = spec_field(5e-4, engine="torch")
    """L2 weight decay (5e-4 as in the published study)."""
    batch_size: int = spec_field(32, engine="torch", speed=True)
    """Training batch size (images per step)."""
    epochs: int = spec_field(5, engine="torch")
    """Passes over the training split."""
    lr_schedule: str = spec_field("onecycle", engine="torch", choices=LR_SCHEDULES, speed=True)
    """'none' (constant, as published), 'cosine' or 'onecycle' (per-step warm-up then decay)."""
    label_smoothing: float = spec_field(0.0, engine="torch")
    """Cross-entropy label smoothing in [0, 1)."""
    augment: str = spec_field("none", engine="torch", choices=AUGMENTS, speed=True)
    """'none', or any of 'translate' (random shift of up to ±2 px), 'flip' (random left-right
    mirror: for FashionMNIST's clothes, not for digits) and 'erase' (random erasing: half the
    images lose a rectangle of 2-33 % of their area) joined by '+', in that order; per image,
    on the device."""
    ema_decay: float = spec_field(0.0, engine="torch", identity="non-default", speed=True)
    """Keep an exponential moving average of the weights and batch-norm statistics, updated
    after every step with this decay (0 = off; 0.99 averages about the last 100 steps).
    Evaluations, the test result and the saved model use the average."""
    tta: str = spec_field("none", engine="torch", identity="non-default", choices=TTAS, speed=True)
    """Test-time augmentation: 'flip' classifies each image by the mean class probabilities of
    it and its mirror image. Only for a model trained on mirror images too (augment 'flip'):
    FashionMNIST's shoes all face one way, and a model that never saw them mirrored lost
    1.6-2.5 points with it (benchmarks/README.md); never for digits."""
    device: str = spec_field("auto", engine="torch", speed=True)
    """'auto' (cuda if present, else cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    amp: bool | str = spec_field(False, engine="torch", speed=True)
    """Mixed precision. true (--amp): fp16 autocast + GradScaler on CUDA, bf16 autocast on CPU;
    'cuda' (--amp cuda): on CUDA only, fp32 on every other device (the published protocol);
    false: fp32 everywhere. The result records what ran (precision) and this setting."""
    pin_memory: bool = spec_field(
        False, engine="torch", applies=lambda s: s.loader == "dataloader", speed=True
    )
    """Dataloader loader only: page-locked host batches for faster host-to-GPU copies."""
    loader: str = spec_field("memory", engine="torch", choices=LOADERS, speed=True)
    """'memory' (dataset as device tensors, batches by index) or 'dataloader' (torch DataLoader)."""
    num_workers: int = spec_field(
        0, engine="torch", applies=lambda s: s.loader == "dataloader", speed=True
    )
    """Dataloader loader only: worker processes."""
    image_size: int = spec_field(28, engine="torch", speed=True)
    """Model input size in pixels, 28 (native) to 224 (published protocol); resized per batch."""
    channels: int = spec_field(1, engine="torch", speed=True)
    """Model input channels: 1 (native) or 3 (published protocol: gray repeated)."""
    stem: str = spec_field("imagenet", engine="torch", choices=STEMS, speed=True)
    """'imagenet' (7x7/2 conv + max-pool), 'halve' (3x3/2 conv, no max-pool: 14x14 maps at
    layer1 from 28 px, ~4x imagenet's FLOPs) or 'cifar' (3x3/1 conv, no max-pool: 28x28)."""
    eval_each_epoch: bool = spec_field(True, engine="torch")
    """Evaluate on the validation (or, without one, test) split after every epoch."""
    memory_format: str = spec_field(
        "auto", engine="torch", identity="never", choices=MEMORY_FORMATS, speed=True
    )
    """Activation layout: 'channels_last' (NHWC), 'contiguous' (NCHW) or 'auto' (whichever
    does the run's training and evaluation faster on this machine, timed once per shape and
    cached; the result's protocol says which ran and the rates it was chosen by). Changes
    speed, not what is computed, so it is not part of the run's identity."""
    small_map_convs: str = spec_field(
        "auto", engine="torch", identity="never", choices=SMALL_MAP_CONVS, speed=True
    )
    """How training computes convolutions on maps of 2x2 pixels or less (layer3 and layer4 at
    28 px with the imagenet stem): 'matmul' (unfold + one matrix product, smallmaps.py), 'conv'
    (the backend's convolution) or 'auto' (whichever trains faster on this machine, timed with
    the layout). The same sums in another order: speed, not identity."""
    cuda_graphs: str = spec_field(
        "auto", engine="torch", identity="never", choices=CUDA_GRAPHS, speed=True
    )
    """'auto': on CUDA, capture the training step in CUDA graphs (one replay per step instead
    of hundreds of kernel launches) where the run allows it (no lr schedule, no weight
    average); 'off': eager steps. The same training, GradScaler skips included, so not part of
    the run's identity; the protocol says whether graphs ran, and if not, why."""
    trial: str | None = spec_field(None, engine="torch", identity="never", by_hand=False)
    """Set by a search, never by hand: the Optuna trial this run is, told each epoch's metric
    (pruning.py). How the run is judged, not what it computes: not its identity."""

    # --- SVM engine ---
    kernel: str = spec_field("rbf", engine="svm", choices=KERNELS, speed=True)
    """SVC kernel: 'poly', 'rbf' or 'linear'."""
    C: float = spec_field(10.0, engine="svm")
    """SVC regularisation (10 in the published study)."""
    gamma: str | float = spec_field("scale", engine="svm")
    """'scale', 'auto' or a positive float."""
    degree: int = spec_field(3, engine="svm", applies=lambda s: s.kernel == "poly", speed=True)
    """Polynomial degree (poly kernel only)."""
    svm_backend: str = spec_field("auto", engine="svm", choices=SVM_BACKENDS, speed=True)
    """'auto' (fastest available), 'sklearn', 'sklearnex' or 'cuml'."""
    features: str = spec_field("pixels", engine="svm", speed=True)
    """'pixels' (scaled to 0..1), 'standardized' or 'pca:N'."""

    def __post_init__(self) -> None:
        for declared in dataclasses.fields(self):  # a number where a name belongs, from TOML
            value = getattr(self, declared.name)
            kind = declared.type if isinstance(declared.type, str) else declared.type.__name__
            if kind == "str" and not isinstance(value, str):
                raise SpecError(declared.name, value, "must be a string")
            if "float" in kind and type(value) is int:  # 10 and 10.0: one run, one key
                object.__setattr__(self, declared.name, float(value))
        check_choice("model", self.model, models())  # first: the model decides the engine
        for declared in dataclasses.fields(self):  # declared choices, of this run's engine
            role = field_role(declared)
            if role.choices and role.engine in ("run", self.engine()):
                check_choice(declared.name, getattr(self, declared.name), role.allowed())
        try:
            object.__setattr__(self, "dataset", canonical_name(self.dataset))
        except UnknownDatasetError as exc:
            raise SpecError("dataset", self.dataset, str(exc)) from exc
        if not isinstance(self.val_fraction, (int, float)) or not 0 <= self.val_fraction < 1:
            raise SpecError("val_fraction", self.val_fraction, "must be in [0, 1)")
        if self.split == "assignment" and self.val_fraction:
            raise SpecError(
                "val_fraction", self.val_fraction, "the assignment split fixes 70/10/20"
            )
        check_positive("seed", self.seed, integer=True, zero_ok=True)
        for name in ("train_limit", "val_limit", "test_limit"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), integer=True)
        check_positive("threads", self.threads, integer=True)
        if self.engine() == "torch":
            self._validate_torch()
        elif self.engine() == "svm":
            self._validate_svm()

    def _validate_torch(self) -> None:
        check_positive("lr", self.lr)
        check_positive("momentum", self.momentum, zero_ok=True)
        if self.momentum >= 1:
            raise SpecError("momentum", self.momentum, "must be in [0, 1)")
        check_positive("weight_decay", self.weight_decay, zero_ok=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("epochs", self.epochs, integer=True)
        if not isinstance(self.label_smoothing, (int, float)) or not 0 <= self.label_smoothing < 1:
            raise SpecError("label_smoothing", self.label_smoothing, "must be in [0, 1)")
        if not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise SpecError("ema_decay", self.ema_decay, "must be in [0, 1) (0: no average)")
        if not (
            self.device in ("auto", "cpu", "cuda", "mps")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise SpecError("device", self.device, "choose auto, cpu, cuda, cuda:N or mps")
        if not (self.amp is True or self.amp is False or self.amp == AMP_CUDA_ONLY):
            raise SpecError("amp", self.amp, f"choose true, false or {AMP_CUDA_ONLY!r}")
        check_positive("num_workers", self.num_workers, integer=True, zero_ok=True)
        self._validate_loader_options()
        if (
            isinstance(self.image_size, bool)
            or not isinstance(self.image_size, int)
            or not (28 <= self.image_size <= 224)
        ):
            raise SpecError("image_size", self.image_size, "must be an integer from 28 to 224")
        if self.channels not in (1, 3):
            raise SpecError("channels", self.channels, "must be 1 or 3")

    def _validate_loader_options(self) -> None:
        """pin_memory and num_workers are DataLoader settings. The memory loader slices batches
        from tensors already on the device, where they would do nothing: asking is an error."""
        if self.loader != "memory":
            return
        does_nothing = {"pin_memory": "no host batches to pin", "num_workers": "no workers"}
        for name, why in does_nothing.items():
            value = getattr(self, name)
            if value:
                raise SpecError(
                    name,
                    value,
                    f"{name} needs loader = 'dataloader', and loader is 'memory' ({why}: "
                    f"batches are sliced from tensors already on the device); write "
                    f"loader = 'dataloader' (--loader dataloader) to use it, or leave {name} out",
                )

    def _validate_svm(self) -> None:
        check_positive("C", self.C)
        if isinstance(self.gamma, str):
            check_choice("gamma", self.gamma, GAMMAS)
        else:
            check_positive("gamma", self.gamma)
        check_positive("degree", self.degree, integer=True)
        if self.features not in ("pixels", "standardized") and not (
            self.features.startswith("pca:")
            and self.features[4:].isdigit()
            and int(self.features[4:]) > 0
        ):
            raise SpecError("features", self.features, "choose pixels, standardized or pca:N")

    def has_val_split(self) -> bool:
        """Whether the run's split holds a validation part (make_split)."""
        return self.split == "assignment" or bool(self.val_fraction)

    @property
    def is_svm(self) -> bool:
        return self.model == "svm"

    def engine(self) -> EngineName:
        """The engine that trains this spec's model (specfields.ENGINES); for a stored run of a
        model no engine here knows (a newer version's, an engine not installed), "unknown":
        only the fields every engine reads are its own, and nothing crashes on it."""
        return engine_of(self.model)

    def reads(self, name: str) -> bool:
        """Whether this run's engine reads the field and it applies here (see FieldRole)."""
        return self._reads(next(f for f in dataclasses.fields(self) if f.name == name))

    def _reads(self, spec_field_: dataclasses.Field) -> bool:
        role = field_role(spec_field_)
        return role.engine in ("run", self.engine()) and (
            role.applies is None or role.applies(self)
        )

    def canonical(self) -> dict[str, Any]:
        """The fields that define this run, nothing its engine ignores (see FieldRole)."""
        canonical = {}
        for spec_field_ in dataclasses.fields(self):
            role = field_role(spec_field_)
            value = getattr(self, spec_field_.name)
            if (
                role.identity == "never"
                or not self._reads(spec_field_)
                or (role.identity == "non-default" and value == field_default(spec_field_))
            ):
                continue
            canonical[spec_field_.name] = value
        return canonical

    def speed_fields(self) -> dict[str, Any]:
        """The fields that decide how fast this run works per image (FieldRole.speed), with
        the non-default-identity ones only when set (the same rule as `canonical`)."""
        fields = {}
        for spec_field_ in dataclasses.fields(self):
            role = field_role(spec_field_)
            value = getattr(self, spec_field_.name)
            if (
                not role.decides_speed(self.engine())
                or not self._reads(spec_field_)
                or (role.identity == "non-default" and value == field_default(spec_field_))
            ):
                continue
            fields[spec_field_.name] = value
        return fields

    def key(self) -> str:
        """A stable hash of the canonical spec: the run's identity in the results store."""
        identity: dict[str, Any] = self.canonical()
        if KEY_VERSION > 1:
            identity = {"key_version": KEY_VERSION, **identity}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
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

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> tuple[RunSpec, dict[str, Any]]:
        """A spec as an older (or newer) mnistbench stored it: (spec, fields it does not know).

        Never raises: unknown fields are returned apart, missing ones take their default, and
        values that today's validation rejects (a choice since removed) are kept as stored.
        """
        if not isinstance(values, dict):
            return cls._unchecked({}), {"spec": values}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = {name: value for name, value in values.items() if name not in known}
        kept = {name: value for name, value in values.items() if name in known}
        try:
            return cls(**kept), unknown
        except (SpecError, TypeError, AttributeError):
            return cls._unchecked(kept), unknown

    @classmethod
    def _unchecked(cls, values: dict[str, Any]) -> RunSpec:
        """A spec built without validation, for stored runs only."""
        spec = object.__new__(cls)
        for spec_field_ in dataclasses.fields(cls):
            value = values.get(spec_field_.name, dataclasses.MISSING)
            if value is dataclasses.MISSING:
                value = field_default(spec_field_)
            object.__setattr__(spec, spec_field_.name, value)
        return spec

    def replace(self, **changes: Any) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        """A short human label for the run: what differs between runs of a grid."""
        if self.engine() == "svm":
            return f"svm {self.kernel} C={self.C:g} {self.dataset}"
        if self.engine() != "torch":
            return f"{self.model} {self.dataset} seed={self.seed}"
        label = f"{self.model} {self.dataset} B{self.batch_size} {self.optimizer} lr={self.lr:g}"
        return label + (f" {self.device}" if self.device != "auto" else "") + f" seed={self.seed}"


def fields_of(engine: EngineName) -> tuple[str, ...]:
    """The names of the RunSpec fields that `engine` declares ("run": read by every engine)."""
    return tuple(f.name for f in dataclasses.fields(RunSpec) if field_role(f).engine == engine)
