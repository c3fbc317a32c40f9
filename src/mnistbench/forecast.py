"""What a study will cost on this machine, before it starts and while it runs.

For each run of the study's one expansion (`study.expand`): its status in the store, whether
this machine will skip it and why (`devices.skip_reason`), its estimated wall seconds here, and
the disk its final model needs under the study's keep policy. Estimates are calibrate.py's rates
for the run's shape, turned into seconds by estimate.py, and refined by the store: finished runs
of the same shape on this machine replace the calibrated rates with their measured ones, and
shapes without a finished run are scaled by how far the finished runs' wall times fell from
their own calibrated estimates (the machine is busier, or quieter, than when it was calibrated).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mnistbench.calibrate import (
    Calibration,
    cache_path_for,
    run_sizes,
    svm_shape_key,
    torch_shape_key,
)
from mnistbench.config import RunSpec
from mnistbench.devices import skip_reason
from mnistbench.estimate import (
    Sizes,
    SvmObservation,
    TorchObservation,
    load_factor,
    refine_svm,
    refine_torch,
)
from mnistbench.measure import machine_key, this_cpu
from mnistbench.models import build_resnet
from mnistbench.progress import Reporter
from mnistbench.study.store import RunRecord, Store

if TYPE_CHECKING:
    from mnistbench.study.run import PlannedRun

TO_DO = ("pending", "running")


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


# --- Disk ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _model_bytes(model: str, channels: int, stem: str) -> int:
    with torch.device("meta"):  # counted, not allocated
        net = build_resnet(model, channels=channels, stem=stem)
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def model_file_bytes(spec: RunSpec) -> int:
    """The final model a run keeps: its parameters and buffers (fp32 whatever the precision it
    trained in). An SVM keeps none."""
    return 0 if spec.is_svm else _model_bytes(spec.model, spec.channels, spec.stem)


# --- The store's finished runs ----------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """A finished run of this machine, under the calibration key of its shape."""

    spec: RunSpec
    observation: TorchObservation | SvmObservation


def observations(records: Iterable[RunRecord]) -> dict[tuple[str, str], list[Observed]]:
    """Done runs that ran alone, from the start, on this machine's CPU: (machine, shape) ->
    what they measured."""
    found: dict[tuple[str, str], list[Observed]] = {}
    here = this_cpu()
    for record in records:
        result = record.result
        if (
            record.status != "done" or result is None or result.status != "ok"
            or not (record.started_at and record.finished_at)
            or result.environment.get("cpu") != here or result.resumed_from_epoch is not None
            or not ran_alone(result.environment.get("concurrency"))
            or not result.train_seconds or not result.eval_seconds
        ):  # fmt: skip
            continue
        try:
            key, observed = _observed(record)
        except (ValueError, TypeError, KeyError):  # stored by another version: not comparable
            continue
        found.setdefault(key, []).append(observed)
    return found


def ran_alone(concurrency: dict[str, Any] | int | None) -> bool:
    """Whether a run had the machine to itself: no concurrency recorded (this process), or
    the executor's record of it (a dict since worker processes; a plain 1 once) says one run."""
    if concurrency is None:
        return True
    if isinstance(concurrency, dict):
        return concurrency.get("runs_at_once", 1) == 1
    return concurrency == 1


def _observed(record: RunRecord) -> tuple[tuple[str, str], Observed]:
    """A finished run's calibration key, and what it measured."""
    result = record.result
    assert result is not None and record.finished_at and record.started_at
    env, wall = result.environment, record.finished_at - record.started_at
    sizes = Sizes(*(int(result.protocol["sizes"][s]) for s in ("train", "val", "test")))
    device = (result.device or "cpu").split(":")[0]
    spec = record.spec.replace(threads=int(env.get("threads", record.spec.threads)))
    if spec.is_svm:
        shape = svm_shape_key(spec, result.backend or "")
        seen: TorchObservation | SvmObservation = SvmObservation(
            wall, result.train_seconds, result.eval_seconds, sizes
        )
    else:
        spec = spec.replace(device=device)
        shape = torch_shape_key(spec)
        seen = TorchObservation(
            wall, result.train_seconds, result.eval_seconds, len(result.history), sizes,
            spec.eval_each_epoch,
        )  # fmt: skip
    return (machine_key(device, spec.threads, env), shape), Observed(spec, seen)


def _key(spec: RunSpec) -> tuple[str, str]:
    if spec.is_svm:
        return machine_key("cpu", spec.threads), svm_shape_key(spec)
    device = spec.device.split(":")[0]
    return machine_key(device, spec.threads), torch_shape_key(spec)


def _calibrated_seconds(spec: RunSpec, sizes: Sizes, calibration: Calibration) -> float | None:
    """The calibrated estimate from the cache alone (no timing), or None."""
    if spec.is_svm:
        svm = calibration.cached_svm(spec)
        return svm.seconds(sizes) if svm else None
    rates = calibration.cached_torch(spec)
    if rates is None:
        return None
    return rates.cost(spec.label(), spec.epochs, sizes, spec.eval_each_epoch).seconds


def machine_load(
    observed: dict[tuple[str, str], list[Observed]], calibration: Calibration
) -> float:
    """Finished runs' wall seconds over their calibrated estimates (for shapes in the cache)."""
    pairs = []
    for runs in observed.values():
        for run in runs:
            estimated = _calibrated_seconds(run.spec, run.observation.sizes, calibration)
            if estimated is not None:
                pairs.append((estimated, run.observation.wall_seconds))
    return load_factor(pairs)


# --- Estimates --------------------------------------------------------------------------------


class Estimator:
    """Seconds per run here: refined rates where the store has finished runs of the shape,
    else calibrated rates (timed once, then cached) scaled by the machine's load factor."""

    def __init__(self, calibration: Calibration, store: Store | None) -> None:
        self.calibration = calibration
        self.observed = observations(store.runs() if store is not None else [])
        self.factor = machine_load(self.observed, calibration)

    def seconds(self, spec: RunSpec) -> tuple[float | None, str]:
        """(estimated wall seconds, what it rests on); (None, why) when it cannot say."""
        sizes = run_sizes(spec)
        try:
            seen = [o.observation for o in self.observed.get(_key(spec), [])]
        except Exception as exc:  # an SVM back-end that is not here: the run will fail
            return None, f"cannot estimate: {exc}"
        if seen:
            basis = f"{len(seen)} finished run(s) of its shape"
            if spec.is_svm:
                return refine_svm(self.calibration.cached_svm(spec), seen).seconds(sizes), basis
            rates = refine_torch(self.calibration.cached_torch(spec), seen)
            return rates.cost(spec.label(), spec.epochs, sizes, spec.eval_each_epoch).seconds, basis
        try:
            if spec.is_svm:
                seconds = self.calibration.svm_rates(spec).seconds(sizes)
            else:
                rates = self.calibration.torch_rates(spec)
                seconds = rates.cost(spec.label(), spec.epochs, sizes, spec.eval_each_epoch).seconds
        except Exception as exc:  # the run would fail the same way: say so, estimate the rest
            return None, f"cannot estimate: {type(exc).__name__}: {exc}"
        if self.factor != 1.0:
            return seconds * self.factor, f"calibrated x{self.factor:.2f} (finished runs' pace)"
        return seconds, "calibrated"


def forecast_study(
    runs: list[PlannedRun], store: Store | None, calibration: Calibration, keep_models: str
) -> StudyForecast:
    """Every run's status, skip reason, estimate and model size; the study's fixed overhead."""
    estimator = Estimator(calibration, store)
    forecasts = [
        forecast_run(run, store.get(run.key) if store is not None else None, estimator)
        for run in runs
    ]
    return StudyForecast(forecasts, keep_models, _overhead(runs, forecasts, calibration))


def forecast_run(run: PlannedRun, record: RunRecord | None, estimator: Estimator) -> RunForecast:
    """One run: its status as `study run` will see it, and its estimate when it runs here."""
    status = record.status if record else "pending"
    reason = skip_reason(run.spec)
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
        model_file_bytes(run.spec), basis,
    )  # fmt: skip


def _overhead(
    runs: list[PlannedRun], forecasts: list[RunForecast], calibration: Calibration
) -> float:
    """A `study run`'s start-up, and each dataset loaded twice (fetch check, then the runs)."""
    to_do = [run.spec for run, f in zip(runs, forecasts, strict=True) if f.runs_here]
    if not to_do:
        return 0.0
    startup = calibration.startup_seconds(with_svm=any(spec.is_svm for spec in to_do))
    datasets = {spec.dataset for spec in to_do}
    return startup + 2 * sum(calibration.load_seconds(name) for name in datasets)


def run_estimates(
    runs: list[PlannedRun], store: Store, calibration: Calibration
) -> list[tuple[str, float | None]]:
    """(label, estimated seconds) per run about to be claimed, for the live ETA; 0 for a run
    this machine will skip."""
    estimator = Estimator(calibration, store)
    return [
        (run.spec.label(), 0.0 if skip_reason(run.spec) else estimator.seconds(run.spec)[0])
        for run in runs
    ]


def live_estimates(
    runs: list[PlannedRun], store: Store, reporter: Reporter, root: str | None = None
) -> list[tuple[str, float | None]] | None:
    """The estimates a reporter that shows an ETA wants (None for one that does not); shapes
    not in the calibration cache yet are timed first (seconds each, once per machine)."""
    if not reporter.shows_eta or not runs:
        return None
    calibration = Calibration(cache_path_for(store.path), root=root, log=reporter.log)
    try:
        return run_estimates(runs, store, calibration)
    except Exception as exc:  # the ETA is never a reason to stop a study
        reporter.log(f"no ETA: {type(exc).__name__}: {exc}")
        return None
