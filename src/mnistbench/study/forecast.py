"""A study's runs as this machine sees them, before they start and while they run: each run's
status in the store, whether this machine will skip it and why (`engines.skip_reason`), its
estimated wall seconds here (given: cost.estimate's estimates), and the disk its final model
needs under the study's keep policy.

A study whose runs are all done is answered from the store alone: no estimate, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mnistbench.config import RunSpec
from mnistbench.engines import engine_for, skip_reason
from mnistbench.study.run import PlannedRun, adoptable
from mnistbench.study.store import RunRecord, Store

TO_DO = ("pending", "running")

Estimate = Callable[[RunSpec], tuple[float | None, str]]
"""(estimated wall seconds here, what it rests on); (None, why) when it cannot say."""
Overhead = Callable[[list[RunSpec]], float]
"""Once per `study run` that has these runs to do: start-up, dataset loads."""


@dataclass(frozen=True)
class RunForecast:
    """One run of the study as this machine sees it."""

    experiment: str
    key: str
    label: str
    status: str  # the store's ('pending' when it has none yet)
    skip: str | None  # why this machine skips it; None when it runs (or ran) here
    seconds: float | None  # a run to do here: its estimated wall seconds (None: cannot say)
    actual: float | None  # a done run: its wall seconds
    model_bytes: int  # its final model file (0 for an SVM)
    basis: str = ""  # what the estimate rests on, or why there is none

    @property
    def runs_here(self) -> bool:
        return self.status in TO_DO and self.skip is None


@dataclass
class Summary:
    """Counts, time left and disk of a group of runs (an experiment, or the whole study)."""

    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # estimated wall seconds of the runs left to do here
    unknown: int = 0  # runs left to do whose time cannot be estimated
    disk_bytes: int = 0  # the kept final models, under the study's keep policy
    skips: dict[str, int] = field(default_factory=dict)  # reason -> runs skipped here


COLUMNS = ("done", "failed", "skipped", "running", "pending", "skip here")


@dataclass
class StudyForecast:
    runs: list[RunForecast]
    keep_models: str
    overhead_seconds: float  # once per `study run`: process start-up and dataset loads

    def experiments(self) -> list[str]:
        return list(dict.fromkeys(run.experiment for run in self.runs))

    def summary(self, experiment: str | None = None) -> Summary:
        """One experiment's summary; the whole study's (each run once) without a name."""
        if experiment is not None:
            runs = [run for run in self.runs if run.experiment == experiment]
            return _summarize(runs, _disk(runs, self.keep_models))
        unique = list({run.key: run for run in self.runs}.values())
        disk = _study_disk(self.runs, self.keep_models, self.experiments())
        summary = _summarize(unique, disk)
        if any(run.runs_here for run in unique):
            summary.seconds += self.overhead_seconds
        return summary


def _summarize(runs: list[RunForecast], disk: int) -> Summary:
    summary = Summary(counts=dict.fromkeys(COLUMNS, 0), disk_bytes=disk)
    for run in runs:
        summary.counts[run.status] = summary.counts.get(run.status, 0) + 1
        if run.skip is not None:
            if run.status in TO_DO:
                summary.counts["skip here"] += 1
            summary.skips[run.skip] = summary.skips.get(run.skip, 0) + 1
        elif run.runs_here and run.seconds is None:
            summary.unknown += 1
        elif run.runs_here:
            summary.seconds += run.seconds
    return summary


def _kept(runs: Iterable[RunForecast]) -> dict[str, int]:
    """Runs that have or will have a final model (done, or to do here): key -> bytes."""
    return {
        run.key: run.model_bytes
        for run in runs
        if run.model_bytes and (run.status == "done" or run.runs_here)
    }


def _disk(runs: list[RunForecast], keep_models: str) -> int:
    """'all': every model; 'best': the experiment's one best (the largest it may be); 'none'."""
    kept = _kept(runs)
    if keep_models == "all":
        return sum(kept.values())
    if keep_models == "best":
        return max(kept.values(), default=0)
    return 0


def _study_disk(runs: list[RunForecast], keep_models: str, experiments: list[str]) -> int:
    if keep_models == "all":
        return sum(_kept(runs).values())
    return sum(_disk([r for r in runs if r.experiment == e], keep_models) for e in experiments)


def model_bytes(spec: RunSpec, record: RunRecord | None) -> int:
    """The final model's size: the file's own for a done run (0 once it is gone), else what
    its engine says it will be."""
    if record is not None and record.status == "done":
        path = record.result.model_path if record.result else None
        return os.stat(path).st_size if path and os.path.isfile(path) else 0
    return engine_for(spec).model_file_bytes(spec)


def forecast_study(
    runs: list[PlannedRun],
    store: Store | None,
    estimate: Estimate,
    keep_models: str,
    overhead: Overhead,
) -> StudyForecast:
    """Every run's status, skip reason, estimate and model size; the study's fixed overhead.
    A run that `study run` will adopt from its old 'auto' key is what its stored record says
    (done: nothing to estimate), as it will be once the run's plan has moved it."""
    records = stored_records(runs, store)
    forecasts = [forecast_run(run, records.get(run.key), estimate) for run in runs]
    to_do = [run.spec for run, f in zip(runs, forecasts, strict=True) if f.runs_here]
    return StudyForecast(forecasts, keep_models, overhead(to_do) if to_do else 0.0)


def stored_records(runs: list[PlannedRun], store: Store | None) -> dict[str, RunRecord]:
    """Each run's record as `study run` will find it after planning: under its key, or under
    the old 'auto' key that the plan moves to it (`run.adoptable`)."""
    if store is None:
        return {}
    records = {run.key: record for run in runs if (record := store.get(run.key)) is not None}
    return records | adoptable(store, runs)


def forecast_run(run: PlannedRun, record: RunRecord | None, estimate: Estimate) -> RunForecast:
    """One run: its status as `study run` will see it, and its estimate when it runs here."""
    status = record.status if record else "pending"
    if status == "pruned":
        status = "pending"  # a grid's run that a search pruned: study run takes it on
    reason = skip_reason(run.spec) if status in (*TO_DO, "skipped") else None
    if status == "skipped" and reason is None:
        status = "pending"  # study run puts it back: its reason no longer holds here
    skip = reason if status in TO_DO else (record.error if status == "skipped" else None)
    seconds, basis, actual = None, "", None
    if status in TO_DO and skip is None:
        seconds, basis = estimate(run.spec)
    if record is not None and status == "done" and record.started_at and record.finished_at:
        actual = record.finished_at - record.started_at
    return RunForecast(
        run.experiment, run.key, run.spec.label(), status, skip, seconds, actual,
        model_bytes(run.spec, record), basis,
    )  # fmt: skip
