"""RunResult: what one run measured, the same type and meaning for both engines.

Null where a metric does not apply (an SVM has no FLOPs or epochs). Results are stored as JSON;
`from_stored` reads what any mnistbench version wrote (renamed fields mapped, unknown ones kept
apart), so an older store stays readable.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Fields stored under another name by earlier versions: old name -> (new name, value map).
_RENAMED = {"amp": ("precision", {"off": "fp32", "fp16": "fp16", "bf16": "bf16"})}


def accuracy_percent(correct: int, total: int) -> float:
    """The one formula every engine and `evaluate` use, so that re-evaluating a saved model
    gives its stored accuracy to the last bit (0 for no images)."""
    return 100.0 * correct / max(total, 1)


def per_class_accuracy(confusion: list[list[int]]) -> list[float | None]:
    """Recall of each class in percent, from a confusion matrix [true][predicted]; None for a
    class absent from the evaluated split (no images is not 0 % right)."""
    return [
        100.0 * row[index] / sum(row) if sum(row) else None for index, row in enumerate(confusion)
    ]


@dataclass
class EpochRecord:
    """One epoch of a torch run. A diverged epoch has status "diverged", the step at which the
    loss became non-finite, and no metrics."""

    epoch: int
    status: str = "ok"
    """'ok' or 'diverged'."""
    train_loss: float | None = None
    train_accuracy: float | None = None
    """Percent, over the augmented training batches as trained (running, not re-evaluated)."""
    lr: float | None = None
    """The learning rate after the epoch's last step."""
    train_seconds: float | None = None
    images: int = 0
    images_per_second: float | None = None
    eval_split: str | None = None
    """Which split eval_accuracy was measured on: 'val' when the run has one, else 'test'."""
    eval_accuracy: float | None = None
    loss_scale: float | None = None
    """fp16 AMP only: the GradScaler's loss scale at the end of the epoch (one that keeps
    falling is how fp16 overflow shows)."""
    diverged_step: int | None = None
    loss_trace: list[float] | None = None
    """Mean train loss over consecutive equal chunks of the epoch's steps (20 to 40 of them),
    for a curve within an epoch; None from versions before it was kept."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def progress_line(self) -> dict[str, Any]:
        """What a progress line shows: the epoch's metrics, the held-out accuracy under its
        split's name; for a diverged epoch, where it diverged."""
        if not self.ok:
            return {"epoch": self.epoch, "status": self.status, "step": self.diverged_step}
        line = {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "lr": self.lr,
            "train_seconds": self.train_seconds,
            "images_per_second": self.images_per_second,
        }
        if self.eval_split is not None:
            line[f"{self.eval_split}_accuracy"] = self.eval_accuracy
        if self.loss_scale is not None:
            line["loss_scale"] = self.loss_scale
        return line

    @classmethod
    def from_dict(cls, values: dict[str, Any], position: int = 0) -> EpochRecord:
        """Today's shape, or the dict of earlier versions ('val_accuracy'/'test_accuracy',
        a diverged epoch's 'step'); unknown keys are dropped, and an entry without an epoch
        number gets its position in the history (1-based)."""
        values = {"epoch": position + 1, **values}
        for split in ("val", "test"):
            if f"{split}_accuracy" in values:
                values["eval_split"] = split
                values["eval_accuracy"] = values.pop(f"{split}_accuracy")
        if "step" in values:
            values["diverged_step"] = values.pop("step")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})


@dataclass
class RunResult:
    """What one run measured.

    Accuracies are percentages. Times are seconds: train_seconds excludes evaluation and warm-up
    and is device-synchronised; eval_seconds covers the final test evaluation.
    """

    spec: dict[str, Any]
    status: str = "ok"
    """'ok', 'diverged', 'failed' or 'pruned' (a search's trial that its pruner stopped: no
    test evaluation, its checkpoint kept)."""
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    images_per_second: float | None = None
    """Training throughput (torch only: an SVM fit's cost is not per image)."""
    flops_per_image: float | None = None
    """Forward-pass FLOPs per image at the real input size (counted, not estimated)."""
    macs_per_image: float | None = None
    """flops_per_image / 2 (what thop and the published study call 'FLOPs')."""
    train_flops: float | None = None
    """Total training FLOPs: forward + backward FLOPs per image, counted by FlopCounterMode on
    one training step, times the images trained."""
    peak_memory_bytes: int | None = None
    peak_memory_kind: str | None = None
    device: str | None = None
    """Where the model trained: 'cpu', 'cuda:0', 'mps' (the hardware's name is in
    environment['device_name'])."""
    precision: str = "fp32"
    """What the arithmetic ran in: 'fp32', 'fp16' (autocast + GradScaler, CUDA) or 'bf16'
    (autocast, CPU)."""
    history: list[EpochRecord] = field(default_factory=list)
    per_class_accuracy: list[float | None] | None = None
    """Recall per class in percent; None for a class absent from the test split."""
    confusion_matrix: list[list[int]] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    """Why the run did not finish normally (divergence, error), or a note on it."""
    backend: str | None = None
    """SVM only: the back-end that ran, with its version."""
    n_support: int | None = None
    """SVM only: number of support vectors."""
    model_path: str | None = None
    """Where the final model was saved, when it was."""
    resumed_from_epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def summary(self) -> str:
        """One line: status, test accuracy, train time and any note."""
        parts = [self.status]
        if self.test_accuracy is not None:
            parts.append(f"{self.test_accuracy:.2f} %")
        if self.train_seconds is not None:
            parts.append(f"train {self.train_seconds:.1f} s")
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunResult:
        """The inverse of to_dict (between processes of one version)."""
        entries = values.get("history") or []
        history = [EpochRecord.from_dict(entry, index) for index, entry in enumerate(entries)]
        return cls(**{**values, "history": history})

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> tuple[RunResult, dict[str, Any]]:
        """A result as any mnistbench version stored it: (result, fields this one does not
        know). Renamed fields are mapped to today's names; nothing raises."""
        values = dict(values)
        for old, (new, mapping) in _RENAMED.items():
            if old in values and new not in values:
                value = values.pop(old)
                values[new] = mapping.get(value, value) if isinstance(value, str) else value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = {name: value for name, value in values.items() if name not in known}
        kept = {name: value for name, value in values.items() if name in known}
        # Containers of the wrong type (null, a string) would break every reader: emptied.
        for name, kind in (("spec", dict), ("environment", dict), ("protocol", dict)):
            if not isinstance(kept.get(name, {}), kind):
                unknown[name] = kept.pop(name)
        kept.setdefault("spec", {})
        history = kept.get("history")
        if not isinstance(history, list):
            history = []
        kept["history"] = [entry for entry in history if isinstance(entry, dict)]
        return cls.from_dict(kept), unknown
