"""Final model files: the header every engine's file starts with, and the errors reading one.

A run's final model is `<key><suffix>` beside its checkpoints, where each engine has its own
suffix (`Engine.model_suffix`: `.model.pt` for a ResNet, `.model.skops` for an SVM) and its own
format (engines/torch/saved.py, engines/svm/saved.py). Each file says what it is: this header,
then the engine's own content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.data.registry import get_dataset
from mnistbench.errors import UserError

FORMAT = "mnistbench-model"
FORMAT_VERSION = 2  # 1: {"spec", "model"} only (before preprocessing and classes were kept)
MODEL_MARK = ".model."  # in every model file's name: <key>.model.<the engine's extension>


class ModelFileError(UserError):
    """A model file that is missing, not mnistbench's, or of a format this version cannot read."""

    flag = "--model"


def header(spec: RunSpec, engine: str) -> dict[str, Any]:
    """What every model file says about itself, whatever its engine."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "engine": engine,
        "key": spec.key(),
        "spec": spec.to_dict(),
        "dataset": spec.dataset,
        "classes": list(get_dataset(spec.dataset).classes),
    }


def why(exc: BaseException) -> str:
    """The line of a torch.load error that names the culprit (its first line says only that
    loading failed), else the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "Unpickler error" in line]
    return (named or lines or [type(exc).__name__])[0]


def check_exists(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")


def spec_in_file(state: dict[str, Any], path: Path) -> RunSpec:
    """The run spec a model file holds (one written by a newer mnistbench, with fields this one
    does not know, is refused)."""
    spec, unknown = RunSpec.from_stored(state["spec"])
    if unknown:
        raise ModelFileError(
            f"{path}: its spec has fields this mnistbench does not know: {unknown}"
        )
    return spec


def classes_in_file(state: dict[str, Any], spec: RunSpec) -> tuple[str, ...]:
    """The class names a model file holds (its dataset's, for a first-format file)."""
    if "classes" in state:
        return tuple(str(name) for name in state["classes"])
    return get_dataset(spec.dataset).classes
