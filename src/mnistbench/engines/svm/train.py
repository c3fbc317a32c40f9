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
from sklearn.metrics import confusion_matrix
from threadpoolctl import threadpool_limits

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.splits import SplitData, split_for_run
from mnistbench.engines.svm.backends import build_svm
from mnistbench.engines.svm.features import fit_features, predict
from mnistbench.engines.svm.saved import MODEL_SUFFIX, save_svm_file
from mnistbench.errors import UserError
from mnistbench.measure import environment, peak_memory, reset_peak_memory
from mnistbench.progress import Reporter
from mnistbench.result import RunResult, accuracy_percent, per_class_accuracy

T = TypeVar("T")


class SVMFitError(RuntimeError):
    """The back-end failed to fit or predict; the message names the run, the cause is chained."""


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return accuracy_percent(int(np.sum(predictions == labels)), len(labels))


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
        # Stated only when it applies and is set, so that earlier results' protocols read the same.
        **({"val_limit": spec.val_limit} if "val_limit" in spec.canonical() else {}),
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
    split = split_for_run(data, spec)
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
    """Save the fitted SVM for later prediction (saved.py); its path, or None, said through
    the reporter, when it cannot be saved here (skops not installed, a cuML model)."""
    path = checkpoint_dir / f"{spec.key()}{MODEL_SUFFIX}"
    try:
        save_svm_file(path, spec, estimator, transform)
    except UserError as exc:
        reporter.log(f"the SVM's model is not saved: {exc}")
        return None
    return str(path)
