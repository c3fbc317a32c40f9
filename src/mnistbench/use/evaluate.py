"""Re-evaluate a saved model on a dataset and split: accuracy, per-class accuracy, confusion.

By default the model's own dataset, split protocol and subset (its spec's split, val_fraction,
seed and test_limit), so that its test part gives back the stored test accuracy exactly: the saved model predicts
as its run did (a ResNet with its preprocessing, batch size and precision; an SVM with its
features and float64 predict). Another dataset (an MNIST model on FashionMNIST) is split by the
same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnistbench.data.load import Dataset
from mnistbench.data.splits import split_for_run
from mnistbench.engines import SavedModel
from mnistbench.errors import UserError
from mnistbench.result import accuracy_percent, per_class_accuracy

PARTS = ("test", "val", "train")


@dataclass(frozen=True)
class Evaluation:
    """What a model scored on one part of one dataset."""

    dataset: str
    part: str
    images: int
    accuracy: float
    per_class_accuracy: list[float | None]
    confusion_matrix: list[list[int]]
    classes: tuple[str, ...]
    """The dataset's class names (rows of the matrix: true class; columns: predicted)."""


def split_part(model: SavedModel, data: Dataset, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of `part` of the data, split and subset as the model's run did."""
    split = split_for_run(data, model.spec)
    images, labels = getattr(split, f"{part}_images"), getattr(split, f"{part}_labels")
    if not len(labels):
        raise UserError(f"the {part} part of {data.name} is empty under this model's split")
    return images, labels


def evaluate_model(
    model: SavedModel, data: Dataset, part: str = "test", device: torch.device | None = None
) -> Evaluation:
    """Accuracy, per-class accuracy and confusion matrix of the model on `part` of `data`."""
    if len(data.info.classes) != len(model.classes):
        raise UserError(
            f"{data.name} has {len(data.info.classes)} classes, the model {len(model.classes)}"
        )
    images, labels = split_part(model, data, part)
    classes = len(model.classes)
    predicted = model.predict(images, device or torch.device("cpu"))
    flat = labels.numpy() * classes + predicted
    confusion = np.bincount(flat, minlength=classes**2).reshape(classes, classes).tolist()
    accuracy = accuracy_percent(int(np.trace(np.array(confusion))), len(labels))
    return Evaluation(
        data.name, part, len(labels), accuracy, per_class_accuracy(confusion), confusion,
        data.info.classes,
    )  # fmt: skip
