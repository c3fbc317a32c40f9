"""An SVM's final model file: `<key>.model.skops`, written and read here.

Written with skops, whose loader builds only the types it is told to trust (no pickle, so no
code runs on load): the spec, the class names, the feature transform (None, a StandardScaler or
a PCA) and the fitted scikit-learn SVC. An accelerated twin's fit (scikit-learn-intelex) is
saved as the scikit-learn SVC it is a subclass of, with the same support vectors and
coefficients, so that any scikit-learn (and skl2onnx) reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistbench.config import RunSpec
from mnistbench.engines import SavedModel
from mnistbench.engines.modelfile import (
    FORMAT,
    ModelFileError,
    check_exists,
    classes_in_file,
    header,
    spec_in_file,
)
from mnistbench.engines.svm.features import features, predict
from mnistbench.errors import require
from mnistbench.files import atomic_replace

MODEL_SUFFIX = ".model.skops"  # the final model: <key>.model.skops (the engine's model_suffix)

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
    decision function, to rounding: tests/engines/test_modelfile.py). cuML's SVC is another library's
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
    check_exists(path)
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


# --- Loaded to use ----------------------------------------------------------------------------


class SvmModel(SavedModel):
    """A fitted SVM ready to predict: its feature transform and SVC. Its scores are one-vs-rest
    decision values (not probabilities); its predictions come from its own float64 predict, as
    the run's did."""

    engine = "svm"
    has_probabilities = False

    def __init__(
        self, path: Path, spec: RunSpec, classes: tuple[str, ...], estimator: Any, transform: Any
    ) -> None:
        self.path, self.spec, self.classes = path, spec, classes
        self.estimator, self.transform = estimator, transform

    def scores(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        x = features(images, self.transform).astype(np.float64)
        return np.asarray(self.estimator.decision_function(x), dtype=np.float64)

    def predict(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        return predict(self.estimator, features(images, self.transform))


def load_svm_model(path: Path) -> SvmModel:
    state = read_svm_file(path)
    spec = spec_in_file(state, path)
    return SvmModel(
        path, spec, classes_in_file(state, spec), state["estimator"], state.get("transform")
    )
