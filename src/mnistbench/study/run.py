"""Run a study: expand its experiments, skip what the store already has, execute the rest.

Executors:
- local, sequential (default): runs in this process, with live epoch progress;
- local, --jobs N: N worker processes for CPU runs, the CPU threads split between them; on a
  GPU machine, GPU runs go to worker processes too, as many per GPU as the experiment's
  `resources.num_gpus` fraction allows (scheduler.py), beside the CPU runs;
- ray: one Ray task per run with its num_cpus/num_gpus request; results handled as they finish.

Only this (driver) process writes the store. A run is claimed before it starts; a heartbeat
thread keeps the claims fresh, so a killed driver's claims go stale and the next `study run`
takes them over, and the killed run resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnistbench.config import RunSpec
from mnistbench.devices import auto_device, concrete_spec
from mnistbench.engines import skip_reason
from mnistbench.progress import Estimates, Reporter
from mnistbench.result import RunResult
from mnistbench.study import DEFAULT_STORE, executors
from mnistbench.study.cleanup import apply_keep_policy, checkpoint_dir_for, run_files
from mnistbench.study.file import StudySpec
from mnistbench.study.search import SearchCounts, run_search, trials_at_once, trials_to_run
from mnistbench.study.store import RunRecord, Store

HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study and what the store says about it now."""

    experiment: str
    spec: RunSpec
    status: str  # the store's status before this invocation

    @property
    def key(self) -> str:
        return self.spec.key()


EstimateRuns = Callable[[list[PlannedRun], Store, Reporter], Estimates | None]
"""The seconds each run to do will take here, given the store (cost.estimate.live_estimates)."""


def expand(study: StudySpec, only: list[str] | None = None) -> list[PlannedRun]:
    """Every run of the selected experiments as this machine will run it, without touching a
    store (each 'pending'). The one expansion that `study run`, its dry run and the estimates
    share, so that they always agree on which runs a study has.

    device 'auto' becomes this machine's device kind ('cuda' or 'cpu': `devices.concrete_spec`)
    before keys are computed: a copied store then holds a CPU machine's 'auto' runs and a GPU
    machine's as different runs, and each machine counts only its own as done. On a CPU machine
    an 'auto' run and the same run with device 'cpu' are one run."""
    runs = []
    for experiment in study.select(only):
        specs: dict[str, RunSpec] = {}
        for spec in experiment.specs():
            resolved = concrete_spec(spec)
            specs.setdefault(resolved.key(), resolved)
        runs += [PlannedRun(experiment.name, spec, "pending") for spec in specs.values()]
    return runs


def plan(
    study: StudySpec,
    store: Store,
    only: list[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[PlannedRun]:
    """Register every run of the selected experiments and return them with their status.

    Before that, a run stored under its old 'auto' key (before `expand` resolved 'auto') moves
    to its key here when it ran on this kind of device (`adoptable`). After it, a skipped
    run whose reason no longer holds on this machine (a CUDA run, and now there is CUDA) is put
    back to pending, so that this study run does it. Both are said through `log`."""
    log = log or (lambda message: None)
    expanded = expand(study, only)
    _adopt_auto_runs(store, expanded, log)
    for experiment in dict.fromkeys(run.experiment for run in expanded):
        specs = [run.spec for run in expanded if run.experiment == experiment]
        store.register(study.name, experiment, specs)
    planned = []
    for run in expanded:
        record = store.get(run.key)
        status = record.status if record else "pending"
        if status == "skipped" and skip_reason(run.spec) is None and store.unskip(run.key):
            log(f"{run.spec.label()}: skipped before ({record.error}), runs here now")
            status = "pending"
        planned.append(dataclasses.replace(run, status=status))
    return planned


def adoptable(store: Store, runs: list[PlannedRun]) -> dict[str, RunRecord]:
    """The runs that `plan` will move from their old 'auto' key: run key -> the record stored
    under the old key. Reads the store, writes nothing: `plan` adopts these, and a dry run or
    `study status FILE` counts them as the run will (done runs done, nothing to train).

    Stores written before 'auto' was resolved hold 'auto' runs under the key of the spec with
    device 'auto'. Such a run moves to the resolved key when it is known to belong there: its
    result says it ran on this device kind, or it never ran (pending, on the machine that plans
    it first). Others stay where they are: a run done on the other kind of machine waits for
    that machine's planner; a failure without a result or a run in flight are left alone."""
    found = {}
    for run in runs:
        if not run.spec.reads("device") or run.spec.device not in ("cpu", "cuda", "mps"):
            continue
        old = store.get(run.spec.replace(device="auto").key())
        if old is None or store.get(run.key) is not None:
            continue
        if _device_kind(old) == run.spec.device:
            found[run.key] = old
    return found


def _adopt_auto_runs(store: Store, expanded: list[PlannedRun], log: Callable[[str], None]) -> None:
    """Move the `adoptable` runs to their key here, with their files."""
    found = adoptable(store, expanded)
    for run in expanded:
        old = found.get(run.key)
        if old is not None and store.adopt(old.key, run.spec, old.status):
            _rename_run_files(store, old, run.key)
            log(f"{run.spec.label()}: stored as an 'auto' run ({old.status}), now keyed {run.key}")


def _rename_run_files(store: Store, old: RunRecord, new_key: str) -> None:
    """A run that moved to a new key takes its checkpoint and model along, and its result
    points to the model's new name."""
    directory = checkpoint_dir_for(store.path)
    for before in run_files(directory, old.key):
        after = before.with_name(new_key + before.name.removeprefix(old.key))
        if before.exists() and not after.exists():
            before.rename(after)
    model_path = Path(old.result.model_path) if old.result and old.result.model_path else None
    if model_path and model_path.name.startswith(old.key):
        renamed = model_path.with_name(new_key + model_path.name.removeprefix(old.key))
        store.set_model_path(new_key, str(renamed))


def _device_kind(record: RunRecord) -> str | None:
    """The device kind a stored run ran on, as its result says; a pending run will run here."""
    if record.result is not None and record.result.device:
        return record.result.device.split(":")[0]
    return auto_device() if record.status == "pending" else None


class Heartbeat:
    """Refreshes the claims of the runs in flight every few seconds, from a daemon thread."""

    def __init__(self, store: Store) -> None:
        self.store = store  # thread-safe; one connection per process keeps SQLite's locks sane
        self.keys: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, key: str) -> None:
        with self._lock:
            self.keys.add(key)

    def discard(self, key: str) -> None:
        with self._lock:
            self.keys.discard(key)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                keys = list(self.keys)
            for key in keys:
                self.store.heartbeat(key)


@dataclass
class StudyOutcome:
    """Counts of what this invocation did."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    not_claimed: int = 0
    """Runs another live process held, or whose result it took over (reported, not counted
    as done or failed here)."""
    searches: dict[str, SearchCounts] = dataclasses.field(default_factory=dict)
    """Per searched experiment, where its search stands at the end."""


LOST_CLAIM = "result discarded: another process took the run over meanwhile"


def _record(store: Store, key: str, result: RunResult, outcome: StudyOutcome) -> bool:
    if not store.finish(key, result):
        outcome.not_claimed += 1
        return False
    if result.status == "failed":
        outcome.failed += 1
    else:
        outcome.done += 1
    return True


def _record_failure(store: Store, key: str, error: BaseException, outcome: StudyOutcome) -> bool:
    recorded = store.fail(
        key,
        f"{type(error).__name__}: {error}",
        "".join(traceback.format_exception(error)),
    )
    if not recorded:
        outcome.not_claimed += 1
        return False
    outcome.failed += 1
    return True


def _to_claim(
    store: Store, planned: list[PlannedRun], retry_failed: bool, outcome: StudyOutcome
) -> list[PlannedRun]:
    """Runs still to do, in order, without duplicates (one key may sit in two experiments)."""
    todo, seen = [], set()
    for run in planned:
        if run.key in seen:
            continue
        seen.add(run.key)
        if run.status in ("done", "skipped") or (run.status == "failed" and not retry_failed):
            outcome.already_done += 1
            continue
        todo.append(run)
    return todo


def run_study(
    study: StudySpec,
    store_path: Path = DEFAULT_STORE,
    *,
    only: list[str] | None = None,
    executor: str | executors.Executor = "local",
    jobs: int | str = 1,
    retry_failed: bool = False,
    root: str | None = None,
    ray_address: str | None = None,
    reporter: Reporter | None = None,
    on_recorded: Callable[[Store, str], None] | None = None,
    estimates: EstimateRuns | None = None,
) -> StudyOutcome:
    """Execute every run of the study that the store does not have yet. `on_recorded(store,
    key)` is called in this (driver) process after each run's result or failure is stored
    (`study run --mlflow` logs the run there). `estimates(todo, store, reporter)`: the
    seconds each run to do will take, for a reporter that shows an ETA (cost.estimate's
    `live_estimates`; without it, no ETA).

    `executor`: a name in executors.EXECUTORS, configured by `jobs` and `ray_address` (each
    executor reads its own), or an Executor to use as it is."""
    options = executors.ExecutorOptions(jobs=jobs, ray_address=ray_address)
    runner = executors.make_executor(executor, options)  # an unknown name: before any work
    reporter = reporter or Reporter()
    outcome = StudyOutcome()
    with Store(store_path) as store, Heartbeat(store) as heartbeat, runner.session():
        planned = plan(study, store, only, log=reporter.log)
        todo = _to_claim(store, planned, retry_failed, outcome)
        seconds = estimates(todo, store, reporter) if estimates and reporter.shows_eta else None
        trials = trials_to_run(store_path, study, only)  # a search's runs, asked as it goes
        reporter.start_study(len(planned) + trials, outcome.already_done, seconds)
        context = RunContext(store, heartbeat, outcome, reporter, retry_failed, root, store_path,
                             study=study.name, keep_models=study.keep_models,
                             on_recorded=on_recorded)  # fmt: skip
        runner.run(todo, context, study)
        for experiment in study.select(only):
            if experiment.search is not None:  # after the grids: their runs may be trials'
                parallel = trials_at_once(store_path, study, experiment, jobs)
                outcome.searches[experiment.name] = run_search(
                    store, store_path, study, experiment,
                    lambda runs: runner.run(runs, context, study), parallel, reporter.log,
                )  # fmt: skip
        reporter.close()
    return outcome


@dataclass
class RunContext:
    store: Store
    heartbeat: Heartbeat
    outcome: StudyOutcome
    reporter: Reporter
    retry_failed: bool
    root: str | None
    store_path: Path
    study: str = ""
    keep_models: str = "all"
    """The study's policy for final models (file.KEEP_MODELS), applied as runs finish."""
    on_recorded: Callable[[Store, str], None] | None = None
    """Called with the store and the run's key once its result (or failure) is stored and the
    keep policy applied."""

    @property
    def checkpoints(self) -> Path:
        return checkpoint_dir_for(self.store_path)

    def claim(self, run: PlannedRun) -> bool:
        """Claim a run, or record why it cannot run here. True when the caller should run it."""
        if not self.store.claim(
            run.key, stale_after=STALE_AFTER_SECONDS, retry_failed=self.retry_failed
        ):
            self.outcome.not_claimed += 1  # another live process has it, or it finished meanwhile
            self.reporter.run_finished(run.spec.label(), "claimed elsewhere")
            return False
        reason = skip_reason(run.spec)
        if reason is not None:
            self.store.skip(run.key, reason)
            self.outcome.skipped += 1
            self.reporter.run_finished(run.spec.label(), f"skipped: {reason}")
            return False
        self.heartbeat.add(run.key)
        return True

    def release(self, run: PlannedRun) -> None:
        """Give a claimed run back unstarted (Ctrl-C, a worker pool that broke before it took
        the run): it is pending again, for this study's next pass or another process."""
        self.heartbeat.discard(run.key)
        self.store.release(run.key)

    def finish(
        self, run: PlannedRun, result: RunResult | None, error: BaseException | None
    ) -> None:
        self.heartbeat.discard(run.key)
        if error is not None:
            recorded = _record_failure(self.store, run.key, error, self.outcome)
            summary = f"failed: {type(error).__name__}: {error}"
        else:
            recorded = _record(self.store, run.key, result, self.outcome)
            summary = result.summary()
        self.reporter.run_finished(run.spec.label(), summary if recorded else LOST_CLAIM)
        if recorded and result is not None and result.model_path:
            self._keep_models(run)
        if recorded and self.on_recorded is not None:
            self.on_recorded(self.store, run.key)

    def _keep_models(self, run: PlannedRun) -> None:
        """Delete the final models that the study's keep_models policy does not keep."""
        try:
            apply_keep_policy(self.store, self.study, run.key, self.keep_models, self.checkpoints)
        except OSError as exc:  # a model left on disk is no reason to stop the study
            self.reporter.log(f"keep_models = {self.keep_models!r}: {exc}")
