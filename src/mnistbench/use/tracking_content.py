"""What an MLflow run shows of a mnistbench run: its metrics (final and per epoch), its
description, its per-class accuracy table and its confusion-matrix plot. Plain functions of a
stored run; tracking.py logs them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mnistbench.data.registry import DATASETS
from mnistbench.pruning import TrialLink
from mnistbench.report import text
from mnistbench.result import RunResult
from mnistbench.study.store import RunRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KEY_TAG = "mnistbench.run_key"

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


def tags(record: RunRecord, study: str, experiment: str) -> dict[str, str]:
    """The tags that find and describe a run in MLflow's UI and search."""
    result = record.result
    environment = result.environment if result else {}
    values = {
        KEY_TAG: record.key,
        "mnistbench.study": study,
        "mnistbench.experiment": experiment,
        "mnistbench.status": record.status,
        "mnistbench.device": (result.device if result else None) or record.spec.device,
        "mnistbench.backend": (result.backend if result else None)
        or (record.spec.svm_backend if record.spec.engine() == "svm" else record.spec.engine()),
        "mnistbench.git_commit": environment.get("git_commit"),
        "mlflow.source.git.commit": environment.get("git_commit"),
        "mnistbench.error": (record.error or "")[:5000] or None,
        # A search's trial: the Optuna study it belongs to (its storage: study/search.py).
        "mnistbench.search": TrialLink.from_text(record.spec.trial).study
        if record.spec.trial
        else None,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


def model_name(record: RunRecord) -> str:
    """The logged model's name in MLflow's "Logged models": model, dataset, run key (MLflow
    allows no '.', '/' or ':' in it)."""
    return f"{record.spec.model}-{record.spec.dataset}-{record.key[:8]}"


def signature(graph: Any) -> Any:
    """An ONNX graph's inputs and outputs as an MLflow signature: uint8 images (-1, 28, 28) in,
    logits (or label and scores) out; a dimension named in the graph (the batch) is -1."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def spec(value: Any) -> Any:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return TensorSpec(tensor_dtype_to_np_dtype(tensor.elem_type), tuple(shape), value.name)

    return ModelSignature(
        Schema([spec(v) for v in graph.graph.input]), Schema([spec(v) for v in graph.graph.output])
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def result_metrics(result: RunResult | None) -> dict[str, float]:
    """The final numbers: accuracies, times, FLOPs, memory, support vectors. Not the per-class
    accuracies: ten more charts per run would crowd MLflow's; they are a table (class_table)."""
    if result is None:
        return {}
    metrics = {name: _number(getattr(result, name)) for name in FINAL}
    return {name: value for name, value in metrics.items() if value is not None}


def class_table(record: RunRecord) -> dict[str, list[Any]] | None:
    """Per class of the test split: its name, accuracy (%), images and images right, as columns
    (MLflow's log_table); None without per-class accuracies."""
    result = record.result
    if result is None or not result.per_class_accuracy:
        return None
    accuracies = result.per_class_accuracy
    matrix = result.confusion_matrix if result.confusion_matrix else None
    return {
        "class": list(range(len(accuracies))),
        "name": _class_names(record, len(accuracies)),
        "accuracy": accuracies,
        "images": [sum(row) for row in matrix] if matrix else [None] * len(accuracies),
        "right": [row[i] for i, row in enumerate(matrix)] if matrix else [None] * len(accuracies),
    }


def _class_names(record: RunRecord, count: int) -> list[str]:
    info = DATASETS.get(record.spec.dataset)
    return (
        list(info.classes)
        if info and len(info.classes) == count
        else [str(i) for i in range(count)]
    )


def description(record: RunRecord) -> str:
    """One sentence for MLflow's run description: 'ResNet-18 on MNIST, batch 32, SGD, lr 0.01,
    seed 0: 98.90 % test accuracy, 41 s on cpu' (or why it failed)."""
    spec, result = record.spec, record.result
    if spec.is_svm:
        what = f"SVM ({spec.kernel}, C={spec.C:g}) on {text.name(spec.dataset)}, seed {spec.seed}"
    else:
        what = (
            f"{text.name(spec.model)} on {text.name(spec.dataset)}, batch {spec.batch_size}, "
            f"{text.name(spec.optimizer)}, lr {spec.lr:g}, {spec.epochs} epoch"
            f"{'s' * (spec.epochs != 1)}, seed {spec.seed}"
        )
    if record.status != "done" or result is None:
        why = (record.error or (result.message if result else None) or "").splitlines()
        return f"{what}: {record.status}" + (f" ({why[0][:200]})" if why else "")
    numbers = []
    if result.test_accuracy is not None:
        numbers.append(f"{result.test_accuracy:.2f} % test accuracy")
    if (seconds := result.train_seconds) is not None:
        shown = f"{seconds:.1f}" if seconds < 10 else f"{seconds:,.0f}"
        numbers.append(f"{shown} s training on {result.device or spec.device}")
    return f"{what}: {', '.join(numbers) or 'no numbers recorded'}"


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
    names = _class_names(record, len(matrix))
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
