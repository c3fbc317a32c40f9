"""What a study will cost on this machine, before it starts and while it runs.

For each run of the study's one expansion (`study.expand`): its status in the store, whether
this machine will skip it and why (`engines.skip_reason`), its estimated wall seconds here, and
the disk its final model needs under the study's keep policy. A run's estimate is its work at
the rates of the finished runs of its speed on this machine (the store), else at those of a
probe (probe.py), scaled by how far the finished runs' wall times fell from their probes'
estimates (the machine is busier, or quieter, than when it was probed).

A study whose runs are all done is answered from the store alone: no probe, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.cost.probe import Probes, cache_path_for, device_kind, machine_of
from mnistbench.cost.rates import Observation, Rates, rates_from, run_sizes, run_work, speed_key
from mnistbench.engines import engine_for, skip_reason
from mnistbench.progress import Reporter, load_factor
from mnistbench.study.run import PlannedRun
from mnistbench.study.store import RunRecord, Store

TO_DO = ("pending", "running")
# A `study run` starts in seconds; a process older than this (the Python API in a notebook)
# is not one starting, and its age says nothing of a study's start-up.
STARTUP_AT_MOST = 30.0


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


# --- The store's finished runs ----------------------------------------------------------------


def observations(records: Iterable[RunRecord]) -> dict[tuple[str, str], list[Observation]]:
    """Done runs that ran alone, from the start, on this machine's CPU: (machine, speed key)
    -> what they took."""
    from mnistbench.measure import this_cpu

    found: dict[tuple[str, str], list[Observation]] = {}
    for record in records:
        result = record.result
        if (
            record.status != "done" or result is None or result.status != "ok"
            or not (record.started_at and record.finished_at)
            or result.environment.get("cpu") != this_cpu() or result.resumed_from_epoch is not None
            or not ran_alone(result.environment.get("concurrency"))
            or not result.train_seconds or not result.eval_seconds
        ):  # fmt: skip
            continue
        try:
            key, seen = _observed(record)
        except (ValueError, TypeError, KeyError):  # stored by another version: not comparable
            continue
        found.setdefault(key, []).append(seen)
    return found


def ran_alone(concurrency: dict[str, Any] | int | None) -> bool:
    """Whether a run had the machine to itself: no concurrency recorded (this process), or
    the executor's record of it (a dict since worker processes; a plain 1 once) says one run."""
    if concurrency is None:
        return True
    if isinstance(concurrency, dict):
        return concurrency.get("runs_at_once", 1) == 1
    return concurrency == 1


def _observed(record: RunRecord) -> tuple[tuple[str, str], Observation]:
    """A finished run's (machine, speed key), and what it took."""
    from mnistbench.data.sizes import Sizes
    from mnistbench.measure import machine_key

    result = record.result
    assert result is not None and record.finished_at and record.started_at
    env = result.environment
    sizes = Sizes(*(int(result.protocol["sizes"][s]) for s in ("train", "val", "test")))
    kind = (result.device or "cpu").split(":")[0]
    spec = record.spec.replace(threads=int(env.get("threads", record.spec.threads)))
    seen = Observation(
        run_work(spec, sizes), result.train_seconds, result.eval_seconds,
        record.finished_at - record.started_at,
    )  # fmt: skip
    return (machine_key(kind, spec.threads, env), speed_key(spec, kind)), seen


# --- Estimates --------------------------------------------------------------------------------


class Estimator:
    """Seconds per run here: at the rates of finished runs of its speed, else at its probe's
    (timed once, then cached) scaled by the machine's pace."""

    def __init__(self, probes: Probes, store: Store | None) -> None:
        self.probes = probes
        self.observed = observations(store.runs() if store is not None else [])
        self.pace = self._pace()

    def _key(self, spec: RunSpec) -> tuple[str, str]:
        return machine_of(spec), speed_key(spec, device_kind(spec))

    def _pace(self) -> float:
        """Finished runs' wall seconds over their probes' estimates (for speeds probed)."""
        pairs = []
        for key, runs in self.observed.items():
            probed = self.probes.cached_by_key(*key)
            rates = rates_from([probed], "probe") if probed else None
            if rates is not None:
                pairs += [(rates.seconds(run.work), run.wall_seconds) for run in runs]
        return load_factor(pairs)

    def rates(self, spec: RunSpec) -> Rates | None:
        seen = self.observed.get(self._key(spec), [])
        rates = rates_from(seen, f"{len(seen)} finished run(s) of its speed")
        return rates or rates_from([self.probes.observation(spec)], "a probe")

    def seconds(self, spec: RunSpec) -> tuple[float | None, str]:
        """(estimated wall seconds, what it rests on); (None, why) when it cannot say."""
        try:
            rates = self.rates(spec)
        except Exception as exc:  # the run would fail the same way: say so, estimate the rest
            return None, f"cannot estimate: {type(exc).__name__}: {exc}"
        if rates is None:
            return None, "cannot estimate: no timings"
        seconds = rates.seconds(run_work(spec, run_sizes(spec)))
        if rates.source == "a probe" and self.pace != 1.0:
            return seconds * self.pace, f"a probe x{self.pace:.2f} (finished runs' pace)"
        return seconds, rates.source


def model_bytes(spec: RunSpec, record: RunRecord | None) -> int:
    """The final model's size: the file's own for a done run (0 once it is gone), else what
    its engine says it will be."""
    if record is not None and record.status == "done":
        path = record.result.model_path if record.result else None
        return os.stat(path).st_size if path and os.path.isfile(path) else 0
    return engine_for(spec).model_file_bytes(spec)


def forecast_study(
    runs: list[PlannedRun], store: Store | None, probes: Probes, keep_models: str
) -> StudyForecast:
    """Every run's status, skip reason, estimate and model size; the study's fixed overhead."""
    started = min(process_age(), STARTUP_AT_MOST)
    estimator = Estimator(probes, store)
    forecasts = [
        forecast_run(run, store.get(run.key) if store is not None else None, estimator)
        for run in runs
    ]
    return StudyForecast(forecasts, keep_models, _overhead(runs, forecasts, probes, started))


def forecast_run(run: PlannedRun, record: RunRecord | None, estimator: Estimator) -> RunForecast:
    """One run: its status as `study run` will see it, and its estimate when it runs here."""
    status = record.status if record else "pending"
    reason = skip_reason(run.spec) if status in (*TO_DO, "skipped") else None
    if status == "skipped" and reason is None:
        status = "pending"  # study run puts it back: its reason no longer holds here
    skip = reason if status in TO_DO else (record.error if status == "skipped" else None)
    seconds, basis, actual = None, "", None
    if status in TO_DO and skip is None:
        seconds, basis = estimator.seconds(run.spec)
    if record is not None and status == "done" and record.started_at and record.finished_at:
        actual = record.finished_at - record.started_at
    return RunForecast(
        run.experiment, run.key, run.spec.label(), status, skip, seconds, actual,
        model_bytes(run.spec, record), basis,
    )  # fmt: skip


def _overhead(
    runs: list[PlannedRun], forecasts: list[RunForecast], probes: Probes, startup: float
) -> float:
    """A `study run`'s start-up (this process's, to the forecast: the same imports), and each
    dataset loaded twice (fetch check, then the runs)."""
    to_do = [run.spec for run, f in zip(runs, forecasts, strict=True) if f.runs_here]
    if not to_do:
        return 0.0
    datasets = {spec.dataset for spec in to_do}
    return startup + 2 * sum(probes.load_seconds(name) for name in datasets)


def process_age() -> float:
    """Seconds since this process started (Linux; 0 where that is not known)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def run_estimates(
    runs: list[PlannedRun], store: Store, probes: Probes
) -> list[tuple[str, float | None]]:
    """(label, estimated seconds) per run about to be claimed, for the live ETA; 0 for a run
    this machine will skip."""
    estimator = Estimator(probes, store)
    return [
        (run.spec.label(), 0.0 if skip_reason(run.spec) else estimator.seconds(run.spec)[0])
        for run in runs
    ]


def live_estimates(
    runs: list[PlannedRun], store: Store, reporter: Reporter, root: str | None = None
) -> list[tuple[str, float | None]] | None:
    """The estimates a reporter that shows an ETA wants (None for one that does not); shapes
    not probed yet are timed first (about a second each, once per machine)."""
    if not reporter.shows_eta or not runs:
        return None
    probes = Probes(cache_path_for(store.path), root=root, log=reporter.log)
    try:
        return run_estimates(runs, store, probes)
    except Exception as exc:  # the ETA is never a reason to stop a study
        reporter.log(f"no ETA: {type(exc).__name__}: {exc}")
        return None
