"""How long each run will take here: at the rates of finished runs of its speed in the store,
else at those of a probe (probe.py), scaled by how far the finished runs' wall times fell from
their probes' estimates (the machine is busier, or quieter, than when it was probed). The
study's forecast (study/forecast.py) and its live ETA get these estimates as callbacks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.cost.probe import Probes, cache_path_for, device_kind, machine_of
from mnistbench.cost.rates import Observation, Rates, rates_from, run_work, speed_key
from mnistbench.engines import skip_reason
from mnistbench.progress import Reporter, load_factor
from mnistbench.study.forecast import StudyForecast
from mnistbench.study.forecast import forecast_study as forecast_runs
from mnistbench.study.run import PlannedRun
from mnistbench.study.store import RunRecord, Store

# A `study run` starts in seconds; a process older than this (the Python API in a notebook)
# is not one starting, and its age says nothing of a study's start-up.
STARTUP_AT_MOST = 30.0


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
        seconds = rates.seconds(run_work(spec))
        if rates.source == "a probe" and self.pace != 1.0:
            return seconds * self.pace, f"a probe x{self.pace:.2f} (finished runs' pace)"
        return seconds, rates.source


def forecast_study(
    runs: list[PlannedRun], store: Store | None, probes: Probes, keep_models: str
) -> StudyForecast:
    """The study's forecast (study/forecast.py) with this machine's estimates: every run's
    status, skip reason, estimate and model size, and the study's fixed overhead."""
    startup = min(process_age(), STARTUP_AT_MOST)
    estimator = Estimator(probes, store)

    def overhead(to_do: list[RunSpec]) -> float:
        """A `study run`'s start-up (this process's, to the forecast: the same imports), and
        each dataset loaded twice (fetch check, then the runs)."""
        datasets = {spec.dataset for spec in to_do}
        return startup + 2 * sum(probes.load_seconds(name) for name in datasets)

    return forecast_runs(runs, store, estimator.seconds, keep_models, overhead)


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
