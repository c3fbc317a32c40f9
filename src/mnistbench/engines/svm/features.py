"""An SVM's inputs and outputs: images as feature vectors (the transform fitted on the
training split only), and class labels predicted in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler


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


def predict(estimator: Any, x: np.ndarray) -> np.ndarray:
    """Class labels of `x` as numpy int64, predicted in float64 whatever the fit's precision.

    float64 on purpose: oneDAL's (sklearnex) float32 multiclass predict disagreed with libsvm
    on some FashionMNIST test images, even for a model fitted in float64, and its float64
    predict agreed on all of them (benchmarks/README.md).
    """
    # cuML may hand back its own array type; the metrics want numpy integers.
    return np.asarray(estimator.predict(x.astype(np.float64))).astype(np.int64)
