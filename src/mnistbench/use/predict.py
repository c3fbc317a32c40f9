"""Predict classes of images with a saved model: one batched pass over all of them (the model is
loaded once), each image's class, its probability and the top 3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mnistbench.engines import SavedModel

TOP = 3


@dataclass(frozen=True)
class Prediction:
    """One image's prediction. `probability` is the softmax of a ResNet's logits; an SVM has
    none (its decision values rank the classes, in `top` as scores)."""

    input: str
    label: int
    name: str
    probability: float | None
    top: list[tuple[str, float]]
    """The best TOP classes with their probability (ResNet) or decision value (SVM)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "class": self.name,
            "label": self.label,
            "probability": self.probability,
            "top": [{"class": name, "score": round(score, 6)} for name, score in self.top],
        }


def predict_images(
    model: SavedModel, names: list[str], images: np.ndarray, device: torch.device | None = None
) -> list[Prediction]:
    """Predictions for uint8 images (N, 28, 28), named by `names`."""
    if not len(images):
        return []
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    scores = model.scores(tensor, device)
    if model.has_probabilities:
        scores = torch.softmax(torch.from_numpy(scores).double(), dim=1).numpy()
        labels = scores.argmax(axis=1)
    else:
        labels = model.predict(tensor)  # the SVM's own vote, as its run predicted
    order = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
    return [
        Prediction(
            input=name,
            label=int(label),
            name=model.classes[int(label)],
            probability=float(row[label]) if model.has_probabilities else None,
            top=[(model.classes[int(i)], float(row[i])) for i in ranks],
        )
        for name, label, row, ranks in zip(names, labels, scores, order, strict=True)
    ]
