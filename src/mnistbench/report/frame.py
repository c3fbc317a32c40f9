"""The report's one table: every stored run as one row, read from the store once.

Columns: identity (key, study, experiment), outcome (`state`: ok, diverged, pruned, failed, skipped,
running or not run, and its `reason`), every RunSpec field (empty where the run's engine ignores
it), the scalar RunResult fields (`model_path` included), the split sizes the run used, its
environment (`env_*`) and what it shared the machine with (SHARING). `memberships`, `history`
and `confusion` hold objects for grouping and plots, `engine` the spec's engine; they are not
exported (NOT_EXPORTED). Everything else in the report derives from this frame.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import numbers
from typing import Any

import pandas as pd

from mnistbench.config import RunSpec
from mnistbench.published import GridKey
from mnistbench.result import RunResult
from mnistbench.specfields import by_hand_fields
from mnistbench.study.store import RunRecord, Store

SPEC_FIELDS = list(by_hand_fields(RunSpec))
"""The run's settings (not a search's trial link: `trial`, which says how it was judged)."""
BUILT_OTHERWISE = {
    "spec": "its fields are the SPEC_FIELDS columns",
    "status": "`state` and `reason`, which say the store's status too",
    "device": "`device_kind` and `device_name`: the `device` column is the spec's",
    "history": "`epochs_completed`, `final_train_loss`, and the `history` object for plots",
    "per_class_accuracy": "a list, not a cell of a flat row; the confusion matrix holds it",
    "confusion_matrix": "the `confusion` object, for plots",
    "environment": "the env_* and SHARING columns",
    "protocol": "the split sizes (`<split>_images`) and the RAN columns",
}
"""RunResult fields that are not a column of their own, and what the frame makes of them."""
LAST = ("resumed_from_epoch", "model_path", "message")
"""Result columns after the others: the measurements first, then where a run resumed, its
model file and its note."""
RESULT_FIELDS = [
    *(f.name for f in dataclasses.fields(RunResult) if f.name not in {*BUILT_OTHERWISE, *LAST}),
    *LAST,
]
"""A column each, as stored: every RunResult field but those BUILT_OTHERWISE, so that a field
added to RunResult is in runs.csv without a change here."""
ENVIRONMENT = [
    "hostname", "cpu", "cpu_count", "threads", "gpu", "cuda", "cudnn", "python", "torch",
    "torchvision", "sklearn", "numpy", "mnistbench", "git_commit",
]  # fmt: skip
SHARING = ["runs_at_once", "runs_on_same_gpu", "mean_runs_on_same_gpu", "gpu_runs_alongside"]
"""The result's environment["concurrency"] (scheduler.Slots.release): how many runs shared the
machine and the run's GPU with it; empty for a run that ran in the study's own process."""
RAN = ["memory_format", "cuda_graphs"]
"""What the run's protocol says ran where its spec may say 'auto': the columns ran_<name>."""
METRICS = ["test_accuracy", "train_seconds", "flops_per_image", "macs_per_image",
           "images_per_second", "n_support"]  # fmt: skip
OBJECTS = ("memberships", "history", "confusion")
NOT_EXPORTED = (*OBJECTS, "engine")
"""Columns runs.csv and runs.json leave out: the objects, and the run's engine (what the report
branches on, RunSpec.engine(); the model column says it)."""
MISSING_STATES = ("diverged", "pruned", "failed", "skipped", "running", "not run")
"""Why a config has no number: when its seeds are missing for different reasons, the first."""
GRID_AXES = tuple(f for f in GridKey._fields if f not in ("dataset", "model"))
"""Q1(a)'s grid, what a published cell is keyed by beside its dataset and model: batch_size,
optimizer, lr (the rows of its tables, in the order of published.GridKey)."""
SVM_AXES = ("kernel", "C")
"""What names an SVM config in the published Q1(b) table (beside its dataset)."""
FIRST_AXES = ("dataset", "model", *GRID_AXES, *SVM_AXES, "gamma")
"""The axes that lead, in this order; the other spec fields that vary follow in RunSpec's."""
NOT_AXES = ("seed", "threads", "device", "memory_format", "svm_backend")
"""Spec fields that never make a grid axis: seeds repeat a config, the others change speed
only (the device that ran is the `device_kind` axis)."""


def load_runs(store: Store, study: str | None = None) -> pd.DataFrame:
    """One row per run of the study (of all studies when None), in store order."""
    rows: dict[str, dict[str, Any]] = {}
    for study_name, experiment in store.experiments(study):
        for record in store.runs(study_name, experiment):
            row = rows.get(record.key) or rows.setdefault(record.key, _row(record, study_name))
            row["memberships"].append((study_name, experiment))
    frame = pd.DataFrame(list(rows.values()))
    if not frame.empty:
        names = frame["memberships"].map(lambda pairs: dict.fromkeys(e for _, e in pairs))
        frame.insert(2, "experiment", names.map(";".join))
    return frame


def _row(record: RunRecord, study: str) -> dict[str, Any]:
    spec, result, state = record.spec, record.result, _state(record)
    canonical = spec.canonical()
    row: dict[str, Any] = {
        "key": record.key, "study": study, "memberships": [], "store_status": record.status,
        "state": state, "reason": _reason(record, state), "attempt": record.attempt,
        "host": record.host, "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
    }  # fmt: skip
    row |= {f: getattr(spec, f) if f in canonical or f == "threads" else None for f in SPEC_FIELDS}
    seedless = {name: value for name, value in canonical.items() if name != "seed"}
    row["config"] = json.dumps(seedless, sort_keys=True, default=str)
    row["engine"] = spec.engine()
    row |= {name: getattr(result, name, None) for name in RESULT_FIELDS}
    env = result.environment if result else {}
    used = (result.device if result else None) or spec.device
    svm_device = "cuda" if spec.svm_backend == "cuml" else "cpu"
    row["device_kind"] = svm_device if spec.is_svm else used.split(":")[0]
    row["device_name"] = env.get("device_name") or (result.device if result else None)
    sizes = result.protocol.get("sizes") if result else None
    sizes = sizes if isinstance(sizes, dict) else {}
    row |= {f"{s}_images": sizes.get(s) for s in ("train", "val", "test")}
    row |= {f"ran_{name}": result.protocol.get(name) if result else None for name in RAN}
    done = [entry for entry in (result.history if result else []) if entry.ok]
    row["epochs_completed"] = len(done) if result else None
    row["final_train_loss"] = done[-1].train_loss if done else None
    row |= {f"env_{name}": env.get(name) for name in ENVIRONMENT}
    shared = env.get("concurrency")
    row |= {name: shared.get(name) if isinstance(shared, dict) else None for name in SHARING}
    if row["device_kind"] == "cuda" and not spec.is_svm:
        row["env_gpu"] = row["device_name"]
    unknown = record.unknown_fields
    row["unknown_fields"] = json.dumps(unknown, default=str) if unknown else None
    row["history"] = result.history if result else []
    row["confusion"] = result.confusion_matrix if result else None
    return row


def _state(record: RunRecord) -> str:
    if record.status == "done" and record.result is not None:
        return record.result.status if record.result.status in ("ok", "diverged") else "failed"
    return (
        record.status if record.status in ("failed", "skipped", "running", "pruned") else "not run"
    )


def _reason(record: RunRecord, state: str) -> str:
    """Why the run has no result (the skip reason, the error, the divergence), or ''."""
    message = record.result.message if record.result else None
    if state == "diverged":
        return message or "diverged"
    if state in ("failed", "skipped"):
        text = (record.error or message or state).strip()
        return text.splitlines()[0] if text else state
    return f"{record.status} in the store" if state != "ok" else ""


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="seconds")


# --- configs: the runs of one spec but for the seed ---------------------------------------------


def axes(runs: pd.DataFrame) -> list[str]:
    """The grid axes: spec fields (and the device that ran) whose values differ between runs.
    A field only some runs have (momentum: SGD only) varies only where those runs disagree."""
    names = dict.fromkeys([*FIRST_AXES, *SPEC_FIELDS, "device_kind"])
    return [f for f in names if f not in NOT_AXES and runs[f].dropna().nunique() > 1]


def numeric(values: pd.Series) -> bool:
    """Numbers, not flags, also in a column with gaps (a field that some runs do not have)."""
    present = values.dropna()
    real = [isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present]
    return bool(real) and all(real)


def levels(values: pd.Series) -> list:
    """An axis' distinct values in its order: sorted when numeric, else as they first appear."""
    present = values.dropna()
    return sorted(present.unique()) if numeric(present) else list(dict.fromkeys(present))


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["state"].eq("ok") & runs["test_accuracy"].notna()]


def configs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per config (the runs of one spec but for the seed): its spec columns; over its
    finished seeds each metric's `_mean`, `_std` and `_count`, the median accuracy `acc` and
    train time `secs`; `n_ok` of `n` runs finished, and why the others did not: `missing` (the
    first missing state) and `partial` (' (1/2 seeds; 1 diverged)' when some seeds finished);
    `shared_gpu`: a finished seed shared its GPU with another run (`shared_gpu_runs`)."""
    scores = runs[METRICS].astype(float).where(runs["state"].eq("ok"))
    groups = scores.groupby(runs["config"], sort=False)
    stats = groups.agg(["mean", "std", "count"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["acc"], stats["secs"] = groups["test_accuracy"].median(), groups["train_seconds"].median()
    states = runs.groupby("config", sort=False)["state"].value_counts().unstack(fill_value=0)
    lost = states[[s for s in MISSING_STATES if s in states]]
    stats["n"], stats["n_ok"] = states.sum(axis=1), states.get("ok", 0)
    stats["missing"] = (
        lost.gt(0).idxmax(axis=1).where(lost.gt(0).any(axis=1), "n/a") if lost.size else "n/a"
    )
    stats["shared_gpu"] = shared_gpu_runs(runs).groupby(runs["config"], sort=False).any()
    stats["partial"] = ""
    for config in stats.index[stats["n_ok"].gt(0) & stats["n"].gt(stats["n_ok"])]:  # few
        said = ", ".join(f"{n} {state}" for state, n in lost.loc[config].items() if n)
        seeds = f"{stats['n_ok'][config]}/{stats['n'][config]} seeds"
        stats.loc[config, "partial"] = f" ({seeds}; {said})"
    fields = [*SPEC_FIELDS, "device_kind", "backend", "device_name"]
    return runs.groupby("config", sort=False)[fields].first().join(stats).reset_index()


def shared_gpu_runs(runs: pd.DataFrame) -> pd.Series:
    """Per run: it finished, and another run was on its GPU at some point of its life (the peak,
    which results stored before the time-weighted mean existed have too)."""
    peak = pd.to_numeric(runs["runs_on_same_gpu"], errors="coerce")
    return runs["state"].eq("ok") & peak.gt(1)
