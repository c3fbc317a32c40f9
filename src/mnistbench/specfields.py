"""How a RunSpec field declares its role (spec_field), the values fields may take (and the
engines, by the models they train), and the error a bad value raises.

Kept apart from config.py, which declares the fields themselves: the machinery is the same
for every field, the declarations are what a reader of a run's settings looks for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mnistbench.errors import UserError

# `applies` is called with the RunSpec being checked. It is typed as any object here: this
# module declares how RunSpec's fields are made, so naming RunSpec would be an import cycle.
SpecCheck = Callable[[Any], bool]

EngineName = str  # "run" (every engine reads the field) or an engine's name (specfields.ENGINES)
Identity = Literal["always", "non-default", "never"]


@dataclass(frozen=True)
class FieldRole:
    """What a RunSpec field is for, declared with the field.

    engine: "run" (every engine reads it) or the name of the one engine that does.
    identity: "always" (part of the key), "never" (changes speed, not what is computed) or
        "non-default" (part of the key only when it differs from its default: the rule for every
        field added after KEY_VERSION 1's fields, so that old keys stay valid).
    applies: when the field means something for this spec (momentum only for SGD); a field that
        does not apply is left out of the key.
    """

    engine: EngineName
    identity: Identity = "always"
    applies: SpecCheck | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    """The values allowed (validated, and offered by the CLI's --help), or a function that
    says them when asked (the models: an engine may be added at run time)."""
    speed: bool | tuple[str, ...] = False
    """Whether the field decides how fast a run works per image (its model, batch, precision,
    device...), not how much work it has: the fields of a run's speed key, which keys the cost
    estimate's measurements. A tuple names the engines for which it does (the dataset decides
    an SVM's speed, not a ResNet's)."""

    by_hand: bool = True
    """Whether a user sets it (a `train` flag, a study-file key); False for what mnistbench sets
    itself (a search's trial link)."""

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices

    def decides_speed(self, engine: str) -> bool:
        return self.speed is True or (isinstance(self.speed, tuple) and engine in self.speed)


def spec_field(
    default: Any = dataclasses.MISSING,
    *,
    engine: EngineName,
    identity: Identity = "always",
    applies: SpecCheck | None = None,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    speed: bool | tuple[str, ...] = False,
    by_hand: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A RunSpec field with its role (see FieldRole)."""
    metadata = {"role": FieldRole(engine, identity, applies, choices, speed, by_hand)}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_default(spec_field_: dataclasses.Field) -> Any:
    if spec_field_.default_factory is not dataclasses.MISSING:
        return spec_field_.default_factory()
    return spec_field_.default


def field_role(spec_field_: dataclasses.Field) -> FieldRole:
    return spec_field_.metadata["role"]


def by_hand_fields(spec: Any) -> tuple[str, ...]:
    """The fields of a RunSpec (class or instance) that a user sets: its settings, without
    what mnistbench sets itself (FieldRole.by_hand)."""
    return tuple(f.name for f in dataclasses.fields(spec) if field_role(f).by_hand)


class SpecError(UserError, ValueError):
    """A bad RunSpec value: names the field, the value and what is allowed."""

    def __init__(self, field_name: str, value: object, allowed: str) -> None:
        super().__init__(f"{field_name}={value!r} is invalid: {allowed}")
        self.field_name, self.value, self.allowed = field_name, value, allowed
        self.flag = "--" + field_name.replace("_", "-")  # what the CLI calls the field


# The engines, by the name their folder has under engines/ (mnistbench.engines.<name> holds its
# ENGINE), and the models each trains. A new engine is its folder plus one line here.
ENGINES: dict[str, tuple[str, ...]] = {"torch": ("resnet18", "resnet50"), "svm": ("svm",)}


def models() -> tuple[str, ...]:
    """Every model some engine trains (read when asked, so an engine added at run time counts)."""
    return tuple(model for names in ENGINES.values() for model in names)


UNKNOWN_ENGINE = "unknown"  # the engine of a stored run whose model no engine here trains


def engine_of(model: str) -> str:
    """The engine that trains `model`; UNKNOWN_ENGINE for a model no engine here knows (a stored
    run of a newer version's model: RunSpec validation rejects it in a new spec)."""
    for engine, names in ENGINES.items():
        if model in names:
            return engine
    return UNKNOWN_ENGINE


SPLITS = ("official", "assignment")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "onecycle")
AUGMENTS = (
    "none",
    "translate",
    "flip",
    "translate+flip",
    "erase",
    "translate+erase",
    "flip+erase",
    "translate+flip+erase",
)
TTAS = ("none", "flip")
LOADERS = ("memory", "dataloader")
# The 3x3 stems without max-pool, by their conv's stride: how much they shrink the input.
SMALL_STEM_STRIDES = {"halve": 2, "cifar": 1}
STEMS = ("imagenet", *SMALL_STEM_STRIDES)
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
SMALL_MAP_CONVS = ("auto", "matmul", "conv")
CUDA_GRAPHS = ("auto", "off")
KERNELS = ("poly", "rbf", "linear")
SVM_BACKENDS = ("auto", "sklearn", "sklearnex", "cuml")
GAMMAS = ("scale", "auto")
AMP_CUDA_ONLY = "cuda"  # amp = "cuda": mixed precision on CUDA only, fp32 elsewhere


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(name, value, f"choose one of {', '.join(allowed)}")


def check_positive(
    name: str, value: object, *, integer: bool = False, zero_ok: bool = False
) -> None:
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        what = "an integer" if integer else "a number"
        raise SpecError(name, value, f"must be {what} {'>= 0' if zero_ok else '> 0'}")
