"""Final model files: what a finished run leaves to predict with, and reading them back safely.

A ResNet is `<key>.model.pt`, a plain dict that `torch.load(..., weights_only=True)` reads
without running any code: the spec, the CPU weights, the preprocessing (normalisation mean/std,
input size, channels, memory format) and the class names, so the file alone is enough to
predict. Files written before this format (FORMAT_VERSION 1: spec and weights only) still load;
their preprocessing is recomputed from the spec and the dataset (`legacy_preprocess` in
saved.py), exactly as the run computed it.

An SVM is `<key>.model.skops`, written with skops, whose loader builds only the types it is told
to trust (no pickle, so no code runs on load): the spec, the class names, the feature transform
(None, a StandardScaler or a PCA) and the fitted scikit-learn SVC. An accelerated twin's fit
(scikit-learn-intelex) is saved as the scikit-learn SVC it is a subclass of, with the same
support vectors and coefficients, so that any scikit-learn (and skl2onnx) reads it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from mnistbench.config import RunSpec
from mnistbench.data.registry import get_dataset
from mnistbench.errors import UserError
from mnistbench.files import atomic_replace

FORMAT = "mnistbench-model"
FORMAT_VERSION = 2  # 1: {"spec", "model"} only (before preprocessing and classes were kept)
TORCH_SUFFIX = ".model.pt"
SVM_SUFFIX = ".model.skops"
MODEL_SUFFIXES = (TORCH_SUFFIX, SVM_SUFFIX)
MODELS_EXTRA = "pip install 'mnistbench[models]'"


class ModelFileError(UserError):
    """A model file that is missing, not mnistbench's, or of a format this version cannot read."""

    flag = "--model"


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message gives the pip command."""


def require(module: str, extra: str = MODELS_EXTRA) -> Any:
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{module} is not installed ({exc}): {extra}") from exc


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


# --- ResNets --------------------------------------------------------------------------------


def read_torch_file(path: Path) -> dict[str, Any]:
    """A `.model.pt` file's dict, read with weights_only=True: tensors and plain data only, so a
    file that smuggles in another object fails here instead of running it."""
    import torch

    _check_exists(path)
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


def why(exc: BaseException) -> str:
    """The line of a torch.load error that names the culprit (its first line says only that
    loading failed), else the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Unsupported global" in line or "Unpickler error" in line]
    return (named or lines or [type(exc).__name__])[0]


# --- SVMs -----------------------------------------------------------------------------------

# The fitted state of a scikit-learn SVC, with the dtypes libsvm's predict expects.
_SVC_INT32 = ("support_", "_n_support")
_SVC_FLOAT64 = (
    "support_vectors_", "dual_coef_", "_dual_coef_", "intercept_", "_intercept_",
    "_probA", "_probB", "class_weight_",
)  # fmt: skip
_SVC_AS_IS = ("fit_status_", "shape_fit_", "_gamma", "_sparse", "classes_", "n_features_in_")


def as_sklearn_svc(estimator: Any) -> Any:
    """The fitted SVC as scikit-learn's own class: itself, or for scikit-learn-intelex's
    subclass an sklearn.svm.SVC with its support vectors, coefficients and parameters (the same
    decision function, to rounding: tests/test_modelfile.py). cuML's SVC is another library's
    model: saving it is refused with the reason."""
    from sklearn.svm import SVC

    if type(estimator) is SVC:
        return estimator
    if not isinstance(estimator, SVC):
        raise ModelFileError(
            f"cannot save a {type(estimator).__module__}.{type(estimator).__name__}: only "
            "scikit-learn's SVC and scikit-learn-intelex's are saved"
        )
    params = {name: value for name, value in estimator.get_params().items()
              if name in SVC().get_params()}  # fmt: skip
    plain = SVC(**params)
    for name in _SVC_INT32:
        setattr(plain, name, np.asarray(getattr(estimator, name), dtype=np.int32))
    for name in _SVC_FLOAT64:
        setattr(plain, name, np.ascontiguousarray(getattr(estimator, name), dtype=np.float64))
    for name in _SVC_AS_IS:
        setattr(plain, name, getattr(estimator, name))
    plain._num_iter = np.asarray(estimator.n_iter_, dtype=np.int32)
    # sklearn >= 1.8 says probability="deprecated" for False. oneDAL fills Platt's coefficients
    # with zeros without it, which skl2onnx would apply (uniform scores): emptied, as sklearn does.
    plain._effective_probability = estimator.probability is True
    if not plain._effective_probability:
        plain._probA = plain._probB = np.empty(0)
    return plain


def save_svm_file(path: Path, spec: RunSpec, estimator: Any, transform: Any | None) -> None:
    """Write `<key>.model.skops` atomically: header, feature transform and SVC."""
    sio = require("skops.io")
    state = header(spec, "svm") | {
        "features": spec.features,
        "transform": transform,
        "estimator": as_sklearn_svc(estimator),
    }
    with atomic_replace(path) as handle:
        handle.write(sio.dumps(state))


def read_svm_file(path: Path) -> dict[str, Any]:
    """A `.model.skops` file's dict. skops builds only trusted types: scikit-learn's and
    numpy's (its defaults); a file that needs any other type is refused, naming it."""
    sio = require("skops.io")
    _check_exists(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
        if untrusted:
            raise ModelFileError(
                f"{path}: refusing to load types that are not scikit-learn's or numpy's: "
                f"{', '.join(untrusted)}"
            )
        state = sio.load(path)
    except ModelFileError:
        raise
    except Exception as exc:  # skops raises zipfile, key and type errors on a foreign file
        raise ModelFileError(f"{path}: not a skops file mnistbench can read: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT or "estimator" not in state:
        raise ModelFileError(f"{path}: a skops file, but not a mnistbench SVM model")
    return state


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")


def model_engine(path: Path) -> str:
    """'svm' for a `.skops` file, else 'torch'."""
    return "svm" if path.name.endswith(".skops") else "torch"
