"""Fit and evaluate one kernel SVM for a RunSpec -> RunResult.

Read top to bottom: split the data as the spec says, turn images into feature vectors (the
transform is fitted on the training split only), fit the back-end's SVC, predict, measure.
train_seconds is the fit alone and eval_seconds the test prediction alone, both wall-clock
(perf_counter). FLOPs are not defined for an SVM, so those fields stay None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import confusion_matrix
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.splits import SplitData, limit_split, make_split
from mnistbench.errors import UserError
from mnistbench.measure import environment, peak_memory, reset_peak_memory
from mnistbench.modelfile import SVM_SUFFIX, save_svm_file
from mnistbench.models import build_svm
from mnistbench.progress import Reporter
from mnistbench.result import RunResult, per_class_accuracy

T = TypeVar("T")


class SVMFitError(RuntimeError):
    """The back-end failed to fit or predict; the message names the run, the cause is chained."""


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def pixels(images: torch.Tensor) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) float32 in [0, 1]; N may be 0 (no validation split)."""
    flat = images.reshape(len(images), int(np.prod(images.shape[1:])))
    return flat.numpy().astype(np.float32) / np.float32(255)


def fit_features(
    kind: str, train: torch.Tensor, others: list[torch.Tensor], seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], Any | None]:
    """Feature vectors for the train images and each of `others` (val, test), and the fitted
    transform (None for pixels), which a saved model keeps to apply to new images.

    'pixels': scaled to 0..1. 'standardized': zero mean, unit variance per pixel. 'pca:N': the
    first N principal components. Scaler and PCA are fitted on the training images only, so no
    statistic of the test set leaks into the model. float32, because oneDAL (sklearnex) and cuML
    fit in the input's precision, and float32 fits faster with the same model
    (benchmarks/README.md).
    """
    x_train = pixels(train)
    if kind == "pixels":
        return x_train, [pixels(images) for images in others], None
    if kind == "standardized":
        transform: Any = StandardScaler()
    elif kind.startswith("pca:"):
        components = int(kind[4:])
        limit = min(x_train.shape)
        if components > limit:
            raise ValueError(
                f"features={kind!r}: PCA can keep at most {limit} components "
                f"with {x_train.shape[0]} training images of {x_train.shape[1]} pixels"
            )
        transform = PCA(n_components=components, random_state=seed)
    else:
        raise ValueError(f"features={kind!r}: choose pixels, standardized or pca:N")
    x_train = transform.fit_transform(x_train).astype(np.float32)
    return x_train, [features(images, transform) for images in others], transform


def features(images: torch.Tensor, transform: Any | None) -> np.ndarray:
    """Feature vectors of images under a fitted transform (None: the pixels)."""
    x = pixels(images)
    if transform is None:
        return x
    if not len(x):  # transform() rejects 0 rows, which an absent validation split has
        return np.zeros((0, getattr(transform, "n_components_", x.shape[1])), np.float32)
    return transform.transform(x).astype(np.float32)


def make_features(
    kind: str, train: torch.Tensor, others: list[torch.Tensor], seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """fit_features without the transform."""
    x_train, x_others, _ = fit_features(kind, train, others, seed)
    return x_train, x_others


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(predictions == labels))


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    # get_params() of cuML holds handles and dtypes; keep what JSON can carry, name the rest.
    return {
        name: value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        for name, value in params.items()
    }


def _protocol(
    spec: RunSpec, split: SplitData, n_features: int, feature_seconds: float, estimator: Any
) -> dict[str, Any]:
    return {
        "split": spec.split,
        "sizes": split.sizes(),
        "train_limit": spec.train_limit,
        "test_limit": spec.test_limit,
        "features": spec.features,
        "n_features": n_features,
        # Scaler/PCA fitting happens before the SVM fit and is not part of train_seconds.
        "feature_seconds": feature_seconds,
        "estimator": type(estimator).__module__ + "." + type(estimator).__qualname__,
        "estimator_params": _json_safe(estimator.get_params()),
    }


def _fit_notice(spec: RunSpec, backend: str, shape: tuple[int, ...]) -> str:
    """What the user reads before a fit that may take minutes."""
    notice = (
        f"fitting a {spec.kernel} SVC (C={spec.C}, gamma={spec.gamma}) with {backend} on "
        f"{shape[0]:,} images of {shape[1]} features: a fit can take minutes "
        "(kernel SVMs scale worse than linearly in the number of images)"
    )
    if backend.startswith("sklearn "):
        notice += "; libsvm uses one core whatever `threads` says"
    return notice


def _fit(estimator: Any, x: np.ndarray, y: np.ndarray, spec: RunSpec, backend: str) -> float:
    """Fit and return the seconds it took; a failure says which fit failed and why."""
    try:
        _, seconds = _timed(lambda: estimator.fit(x, y))
    except Exception as exc:
        raise SVMFitError(
            f"{backend} SVC fit failed (kernel={spec.kernel}, C={spec.C}, gamma={spec.gamma}, "
            f"{len(y)} training images of {spec.dataset}): {type(exc).__name__}: {exc}"
        ) from exc
    return seconds


def predict(estimator: Any, x: np.ndarray) -> np.ndarray:
    """Class labels of `x` as numpy int64, predicted in float64 whatever the fit's precision.

    float64 on purpose: oneDAL's (sklearnex) float32 multiclass predict disagreed with libsvm
    on some FashionMNIST test images, even for a model fitted in float64, and its float64
    predict agreed on all of them (benchmarks/README.md).
    """
    # cuML may hand back its own array type; the metrics want numpy integers.
    return np.asarray(estimator.predict(x.astype(np.float64))).astype(np.int64)


def _predict_timed(estimator: Any, x: np.ndarray, backend: str) -> tuple[np.ndarray, float]:
    """Predict and return the seconds it took (the float64 cast included)."""
    try:
        return _timed(lambda: predict(estimator, x))
    except Exception as exc:
        raise SVMFitError(
            f"{backend} SVC predict failed on {len(x)} images: {type(exc).__name__}: {exc}"
        ) from exc


def _device(backend: str) -> torch.device:
    """cuML fits on the GPU, the other back-ends on the CPU."""
    return torch.device("cuda" if backend.startswith("cuml") else "cpu")


def _environment(spec: RunSpec, backend: str) -> dict[str, Any]:
    env = environment(_device(backend), threads=spec.threads)
    env["svm_backend"] = backend
    return env


def run(
    spec: RunSpec,
    data: Dataset,
    reporter: Reporter | None = None,
    checkpoint_dir: Path | None = None,
) -> RunResult:
    """Fit the spec's SVM on its training split and evaluate it on the test (and val) split;
    with checkpoint_dir, keep the fitted model there as `<key>.model.skops`."""
    if not spec.is_svm:
        raise ValueError(f"the SVM engine needs model='svm', got model={spec.model!r}")
    reporter = reporter or Reporter()
    reset_peak_memory(torch.device("cpu"))  # this run's own host peak, not an earlier run's
    # First, so that an unavailable back-end fails before any data is prepared.
    estimator, backend = build_svm(spec)
    split = make_split(data, spec.split, val_fraction=spec.val_fraction, seed=spec.seed)
    split = limit_split(split, spec.train_limit, spec.test_limit, spec.seed)
    y_train, y_test = split.train_labels.numpy(), split.test_labels.numpy()

    # Caps BLAS/OpenMP pools (PCA, the scaler, oneDAL's heuristics) at the spec's thread count.
    with threadpool_limits(limits=spec.threads):
        (x_train, (x_val, x_test), transform), feature_seconds = _timed(
            lambda: fit_features(
                spec.features, split.train_images, [split.val_images, split.test_images], spec.seed
            )
        )
        reporter.log(_fit_notice(spec, backend, x_train.shape))
        with reporter.phase(f"fit ({backend}, {spec.kernel}, n={len(y_train):,})"):
            fit_seconds = _fit(estimator, x_train, y_train, spec, backend)
        with reporter.phase(f"predict ({len(y_test):,} test images)"):
            test_predictions, predict_seconds = _predict_timed(estimator, x_test, backend)
        val_accuracy = None
        if len(x_val):
            with reporter.phase(f"predict ({len(x_val):,} validation images)"):
                val_predictions, _ = _predict_timed(estimator, x_val, backend)
            val_accuracy = _accuracy(val_predictions, split.val_labels.numpy())

    matrix = confusion_matrix(y_test, test_predictions, labels=range(data.info.num_classes))
    memory, memory_kind = peak_memory(torch.device("cpu"))
    result = RunResult(
        spec=spec.to_dict(),
        status="ok",
        test_accuracy=_accuracy(test_predictions, y_test),
        val_accuracy=val_accuracy,
        train_seconds=fit_seconds,
        eval_seconds=predict_seconds,
        # images_per_second and the FLOPs stay None: an SVM's fit cost is not per image, and the
        # torch engine's images/s is a training throughput; a number would compare unlike things.
        peak_memory_bytes=memory,
        peak_memory_kind=memory_kind,
        device=str(_device(backend)),
        per_class_accuracy=per_class_accuracy(matrix.tolist()),
        confusion_matrix=matrix.tolist(),
        environment=_environment(spec, backend),
        protocol=_protocol(spec, split, x_train.shape[1], feature_seconds, estimator),
        backend=backend,
        n_support=int(np.sum(estimator.n_support_)),
    )
    if checkpoint_dir is not None:
        result.model_path = keep_model(checkpoint_dir, spec, estimator, transform, reporter)
    return result


def keep_model(
    checkpoint_dir: Path, spec: RunSpec, estimator: Any, transform: Any | None, reporter: Reporter
) -> str | None:
    """Save the fitted SVM for later prediction (modelfile.py); its path, or None, said through
    the reporter, when it cannot be saved here (skops not installed, a cuML model)."""
    path = checkpoint_dir / f"{spec.key()}{SVM_SUFFIX}"
    try:
        save_svm_file(path, spec, estimator, transform)
    except UserError as exc:
        reporter.log(f"the SVM's model is not saved: {exc}")
        return None
    return str(path)
