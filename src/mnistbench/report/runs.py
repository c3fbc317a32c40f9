"""The report's view of the store: one `Run` per stored run, grouped into configs across seeds.

Everything downstream (tables, insights, plots, exports) reads these objects, never the store,
so that the tests can build them from synthetic results and the numbers have one source.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.data.registry import UnknownDatasetError, get_dataset
from mnistbench.result import RunResult
from mnistbench.store import Store

# Display names: the published study's spelling, not the spec's identifiers.
MODEL_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "svm": "SVM"}
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

# A missing cell names why it is missing; when several seeds of a config are missing for
# different reasons, the first of these wins (the most informative for the reader).
MISSING_STATES = ("diverged", "failed", "skipped", "running", "not run")


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def format_value(field: str, value: Any) -> str:
    """A spec value as a reader expects it (lr 1e-3, optimizer SGD, C 10)."""
    if value is None:
        return "n/a"
    if field == "optimizer":
        return OPTIMIZER_NAMES.get(value, value)
    if field == "model":
        return model_name(value)
    if field == "dataset":
        return dataset_name(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        # Image counts read better as 2,000; batch sizes and epochs stay plain.
        return f"{value:,}" if value >= 10_000 or field.endswith("_limit") else str(value)
    return str(value)


FIELD_LABELS = {
    "batch_size": "batch size",
    "optimizer": "optimizer",
    "lr": "lr",
    "C": "C",
    "train_limit": "train images",
    "test_limit": "test images",
    "image_size": "image size",
    "lr_schedule": "lr schedule",
    "weight_decay": "weight decay",
    "label_smoothing": "label smoothing",
    "svm_backend": "SVM back-end",
    "pin_memory": "pin_memory",
}


def field_label(field: str) -> str:
    return FIELD_LABELS.get(field, field.replace("_", " "))


def plural(count: int, word: str, words: str | None = None) -> str:
    """'1 run', '2 runs'."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


# Fields every label names already (or that only tell seeds apart): a label adds the others
# only when they vary between the runs it must tell apart.
USUAL_FIELDS = ("seed", "model", "dataset", "batch_size", "optimizer", "lr", "kernel", "C")


@dataclass(frozen=True)
class Run:
    """One stored run and the experiments of the study that asked for it."""

    key: str
    study: str
    experiments: tuple[str, ...]
    spec: RunSpec
    status: str
    """The store's status: 'pending', 'running', 'done', 'failed' or 'skipped'."""
    result: RunResult | None = None
    error: str | None = None
    attempt: int = 0
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    unknown_fields: dict[str, Any] = field(default_factory=dict)
    """Stored fields this mnistbench version does not know (kept, exported)."""

    @property
    def state(self) -> str:
        """'ok', 'diverged', 'failed', 'skipped', 'running' or 'not run'."""
        if self.status == "done" and self.result is not None:
            return self.result.status if self.result.status in ("ok", "diverged") else "failed"
        if self.status in ("failed", "skipped", "running"):
            return self.status
        return "not run"

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def accuracy(self) -> float | None:
        """Test accuracy (%) of a run that finished normally; None otherwise."""
        return self.result.test_accuracy if self.ok and self.result else None

    @property
    def train_seconds(self) -> float | None:
        return self.result.train_seconds if self.ok and self.result else None

    @property
    def reason(self) -> str:
        """Why the run has no result (the skip reason, the error, the divergence), or ''."""
        if self.state == "diverged" and self.result is not None:
            return self.result.message or "diverged"
        if self.state in ("failed", "skipped"):
            message = self.error or (self.result.message if self.result else None)
            return first_line(message) or self.state
        if self.state in ("running", "not run"):
            return f"{self.status} in the store"
        return ""

    @property
    def device_kind(self) -> str:
        """'cpu', 'cuda', 'mps' (what ran, else what was asked) or 'auto' for an unrun 'auto'."""
        if self.spec.is_svm:
            return "cuda" if self.spec.svm_backend == "cuml" else "cpu"
        used = self.result.device if self.result and self.result.device else self.spec.device
        return used.split(":")[0]

    @property
    def device_name(self) -> str:
        """The hardware's name (GPU model or CPU model), else the device the spec asked for."""
        if self.result is not None:
            name = self.result.environment.get("device_name") or self.result.device
            if name:
                return str(name)
        return self.spec.device if not self.spec.is_svm else "cpu"

    def label(self, fields: Iterable[str] | None = None) -> str:
        """'ResNet-18, MNIST, B16, SGD, lr 1e-3' (the given fields only, when given)."""
        spec = self.spec
        parts = [model_name(spec.model), dataset_name(spec.dataset)]
        if spec.is_svm:
            parts += [f"{spec.kernel} kernel", f"C={spec.C:g}"]
        else:
            parts += [
                f"B{spec.batch_size}",
                format_value("optimizer", spec.optimizer),
                f"lr {spec.lr:g}",
            ]
        for name in fields or ():
            parts.append(f"{field_label(name)} {format_value(name, getattr(spec, name))}")
        return ", ".join(parts)


def config_key(spec: RunSpec, without: tuple[str, ...] = ("seed",)) -> str:
    """The identity of a config across seeds: its canonical fields but `without` (read from
    the stored spec as it is, so that a spec today's validation rejects still groups)."""
    canonical = {name: value for name, value in spec.canonical().items() if name not in without}
    return json.dumps(canonical, sort_keys=True, default=str)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None for one value) of the values that exist."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


def stat(runs: Iterable[Run], metric: Callable[[Run], float | None]) -> Stat | None:
    values = tuple(v for run in runs if (v := metric(run)) is not None and math.isfinite(v))
    return Stat(values) if values else None


@dataclass(frozen=True)
class Group:
    """The runs of one config (same spec but for the seed)."""

    runs: tuple[Run, ...]

    @property
    def spec(self) -> RunSpec:
        return self.runs[0].spec

    @property
    def ok_runs(self) -> tuple[Run, ...]:
        return tuple(run for run in self.runs if run.ok)

    @property
    def accuracy(self) -> Stat | None:
        return stat(self.runs, lambda run: run.accuracy)

    @property
    def train_seconds(self) -> Stat | None:
        return stat(self.runs, lambda run: run.train_seconds)

    @property
    def missing_state(self) -> str | None:
        """Why no seed of this config has a result, or None when one has."""
        if self.ok_runs:
            return None
        states = {run.state for run in self.runs}
        return next((state for state in MISSING_STATES if state in states), "not run")

    def label(self, fields: Iterable[str] | None = None) -> str:
        return self.runs[0].label(fields)


def group_runs(runs: Iterable[Run]) -> list[Group]:
    """Runs grouped by config, in the order of each config's first run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run.spec), []).append(run)
    return [Group(tuple(members)) for members in groups.values()]


def load_runs(store: Store, study: str | None = None) -> dict[tuple[str, str], list[Run]]:
    """Every run of the study (all studies when None), per (study, experiment), in store order.

    A run that several experiments asked for appears in each of them, as the same Run.
    """
    memberships: dict[str, list[str]] = {}
    records: dict[tuple[str, str], list[Any]] = {}
    for study_name, experiment in store.experiments(study):
        records[(study_name, experiment)] = store.runs(study_name, experiment)
        for record in records[(study_name, experiment)]:
            memberships.setdefault(record.key, []).append(experiment)
    built: dict[str, Run] = {}
    by_experiment: dict[tuple[str, str], list[Run]] = {}
    for (study_name, experiment), rows in records.items():
        for record in rows:
            if record.key not in built:
                built[record.key] = Run(
                    key=record.key,
                    study=study_name,
                    experiments=tuple(dict.fromkeys(memberships[record.key])),
                    spec=record.spec,
                    status=record.status,
                    result=record.result,
                    error=record.error,
                    attempt=record.attempt,
                    host=record.host,
                    started_at=record.started_at,
                    finished_at=record.finished_at,
                    unknown_fields=record.unknown_fields,
                )
            by_experiment.setdefault((study_name, experiment), []).append(built[record.key])
    return by_experiment


def unique_runs(by_experiment: dict[tuple[str, str], list[Run]]) -> list[Run]:
    """Each run once, in store order."""
    seen: dict[str, Run] = {}
    for runs in by_experiment.values():
        for run in runs:
            seen.setdefault(run.key, run)
    return list(seen.values())


def varying_fields(specs: Iterable[RunSpec], exclude: Iterable[str] = ("seed",)) -> list[str]:
    """The spec fields whose canonical values differ between the specs that have them.

    A field only some specs have (momentum: SGD only) varies only if those specs disagree:
    its presence follows another field (the optimizer) and says nothing of its own.
    """
    canon = [spec.canonical() for spec in specs]
    names: list[str] = []
    for spec in canon:
        names += [name for name in spec if name not in names]
    skip = set(exclude)
    return [
        name
        for name in names
        if name not in skip and len({repr(spec[name]) for spec in canon if name in spec}) > 1
    ]


def best_run(runs: list[Run], dataset: str) -> Run | None:
    """The single most accurate finished run on `dataset` that recorded a confusion matrix."""
    candidates = [
        r
        for r in runs
        if r.ok and r.spec.dataset == dataset and r.result and r.result.confusion_matrix
    ]
    return max(candidates, key=lambda r: r.accuracy, default=None)


def class_names(dataset: str, n: int) -> list[str]:
    """The dataset's class names, or the label numbers when they do not match the matrix."""
    try:
        names = list(get_dataset(dataset).classes)
    except UnknownDatasetError:
        names = []
    return names if len(names) == n else [str(i) for i in range(n)]
