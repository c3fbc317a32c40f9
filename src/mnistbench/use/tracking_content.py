"""What an MLflow run shows of a mnistbench run: its metrics (final and per epoch) and its
confusion-matrix plot. Plain functions of a stored run; tracking.py logs them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mnistbench.data.registry import DATASETS
from mnistbench.result import RunResult
from mnistbench.study.store import RunRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Final results logged as metrics (step 0), under their RunResult names.
FINAL = (
    "test_accuracy", "val_accuracy", "train_seconds", "eval_seconds", "images_per_second",
    "flops_per_image", "macs_per_image", "train_flops", "peak_memory_bytes", "n_support",
)  # fmt: skip
# Per-epoch history entries logged as metrics with the epoch as step: RunResult name -> metric.
HISTORY = {
    "train_loss": "train_loss",
    "train_accuracy": "train_accuracy",
    "lr": "lr",
    "train_seconds": "epoch_train_seconds",
    "images_per_second": "epoch_images_per_second",
    "loss_scale": "loss_scale",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def result_metrics(result: RunResult | None) -> dict[str, float]:
    """The final numbers: accuracies, times, FLOPs, memory, support vectors, per-class accuracy
    (`class_accuracy/<index>`)."""
    if result is None:
        return {}
    metrics = {name: _number(getattr(result, name)) for name in FINAL}
    for index, accuracy in enumerate(result.per_class_accuracy or []):
        metrics[f"class_accuracy/{index}"] = _number(accuracy)
    return {name: value for name, value in metrics.items() if value is not None}


def history_metrics(result: RunResult | None) -> list[tuple[int, dict[str, float]]]:
    """(epoch, metrics) per finished epoch: training loss and accuracy, lr, time, throughput,
    and the held-out accuracy as `epoch_val_accuracy` or `epoch_test_accuracy`."""
    steps = []
    for entry in result.history if result else []:
        if not entry.ok:
            continue
        values = {metric: _number(getattr(entry, name)) for name, metric in HISTORY.items()}
        if entry.eval_split is not None:
            values[f"epoch_{entry.eval_split}_accuracy"] = _number(entry.eval_accuracy)
        steps.append((entry.epoch, {k: v for k, v in values.items() if v is not None}))
    return steps


def confusion_figure(record: RunRecord) -> Figure:
    """The test confusion matrix as a heat map, counts in the cells, class names on the axes."""
    from matplotlib.figure import Figure

    assert record.result is not None and record.result.confusion_matrix
    matrix = record.result.confusion_matrix
    info = DATASETS.get(record.spec.dataset)
    names = list(info.classes) if info else [str(i) for i in range(len(matrix))]
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    top = max(max(row) for row in matrix) or 1
    for true, row in enumerate(matrix):
        for predicted, count in enumerate(row):
            colour = "white" if count > top / 2 else "black"
            axes.text(
                predicted, true, str(count), ha="center", va="center", fontsize=7, color=colour
            )
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    accuracy = record.result.test_accuracy
    axes.set_title(
        f"{record.spec.label()}\ntest accuracy {accuracy:.2f} %"
        if accuracy is not None
        else record.spec.label(),
        fontsize=9,
    )
    return figure
