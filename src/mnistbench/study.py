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

import concurrent.futures
import multiprocessing
import threading
import traceback
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistbench.config import RunResult, RunSpec, default_threads
from mnistbench.devices import skip_reason, visible_gpus
from mnistbench.progress import Reporter
from mnistbench.runner import cached_dataset, run_in_worker, run_spec
from mnistbench.scheduler import Slots, gpu_fraction, needs_gpu, runs_per_gpu, worker_threads
from mnistbench.store import Store
from mnistbench.studyfile import Experiment, StudySpec

DEFAULT_STORE = Path("results/mnistbench.db")
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


def plan(study: StudySpec, store: Store, only: list[str] | None = None) -> list[PlannedRun]:
    """Register every run of the selected experiments and return them with their status."""
    planned = []
    for experiment in study.select(only):
        specs = experiment.specs()
        store.register(study.name, experiment.name, specs)
        for spec in specs:
            record = store.get(spec.key())
            planned.append(
                PlannedRun(experiment.name, spec, record.status if record else "pending")
            )
    return planned


def checkpoint_dir_for(store_path: Path) -> Path:
    """Epoch checkpoints and final models live next to the store they belong to."""
    return store_path.parent / "checkpoints"


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
    executor: str = "local",
    jobs: int = 1,
    retry_failed: bool = False,
    root: str | None = None,
    ray_address: str | None = None,
    reporter: Reporter | None = None,
) -> StudyOutcome:
    """Execute every run of the study that the store does not have yet."""
    reporter = reporter or Reporter()
    outcome = StudyOutcome()
    with Store(store_path) as store, Heartbeat(store) as heartbeat:
        planned = plan(study, store, only)
        todo = _to_claim(store, planned, retry_failed, outcome)
        reporter.start_study(len(planned), outcome.already_done)
        context = _Context(store, heartbeat, outcome, reporter, retry_failed, root, store_path)
        if executor == "ray":
            _run_ray(todo, context, study, ray_address)
        elif wants_worker_processes(todo, study, jobs, gpus := visible_gpus()):
            _run_processes(todo, context, study, jobs, gpus)
        else:
            _run_sequential(todo, context)
        reporter.close()
    return outcome


@dataclass
class _Context:
    store: Store
    heartbeat: Heartbeat
    outcome: StudyOutcome
    reporter: Reporter
    retry_failed: bool
    root: str | None
    store_path: Path

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


def _run_sequential(todo: list[PlannedRun], context: _Context) -> None:
    checkpoints = checkpoint_dir_for(context.store_path)
    for run in todo:
        if not context.claim(run):
            continue
        context.reporter.run_started(run.spec.label())
        try:
            data = cached_dataset(run.spec.dataset, context.root)
            result = run_spec(run.spec, data, checkpoints, context.reporter)
        except KeyboardInterrupt:
            context.heartbeat.discard(run.key)
            context.store.release(run.key)  # a clean Ctrl-C: the run goes back to pending
            raise
        except Exception as exc:  # a failed run is recorded; the study goes on
            context.finish(run, None, exc)
            continue
        context.finish(run, result, None)


def gpu_share(run: PlannedRun, study: StudySpec, gpus: int) -> float | None:
    """The GPU fraction a run asks for, or None for a run that trains on the CPU here."""
    if gpus == 0 or not needs_gpu(run.spec, gpus):
        return None  # a CUDA run on a machine without one is skipped when claimed
    return gpu_fraction(study.experiment(run.experiment).resources)


def wants_worker_processes(todo: list[PlannedRun], study: StudySpec, jobs: int, gpus: int) -> bool:
    """Worker processes when more than one run can go at once: --jobs N, runs sharing a GPU, or
    GPU runs beside CPU runs. Otherwise in this process, with live epoch progress."""
    shares = [gpu_share(run, study, gpus) for run in todo]
    gpu_shares = [share for share in shares if share is not None]
    if jobs > 1:
        return True
    if not gpu_shares:
        return False
    return len(gpu_shares) < len(shares) or gpu_slots(gpu_shares, gpus) > 1


def gpu_slots(gpu_shares: list[float], gpus: int) -> int:
    """How many GPU runs the machine takes at once: the smallest fraction asked for decides how
    many fit on each GPU (Slots places the actual runs)."""
    return gpus * runs_per_gpu(min(gpu_shares)) if gpu_shares else 0


@dataclass
class _WorkerPlan:
    """What every worker submission needs: where runs may go and with how many threads."""

    shares: dict[str, float | None]  # per run key: its GPU fraction, None for a CPU run
    slots: Slots
    cpu_threads: int
    gpu_threads: int
    checkpoints: str


def _run_processes(
    todo: list[PlannedRun], context: _Context, study: StudySpec, jobs: int, gpus: int
) -> None:
    """Worker processes (spawned: no inherited torch threads or locks), fed as slots free up:
    `jobs` CPU runs at once, and on each GPU as many runs as their GPU fractions allow. The
    driver claims, records and beats the heart; workers only compute. A worker that dies
    (killed, out of memory, a crash in native code) fails the runs it had in flight, and fresh
    workers take the rest of the queue."""
    shares = {run.key: gpu_share(run, study, gpus) for run in todo}
    gpu_shares = [share for share in shares.values() if share is not None]
    gpu_capacity = min(gpu_slots(gpu_shares, gpus), len(gpu_shares))
    plan = _WorkerPlan(
        shares, Slots(cpu_workers=jobs, gpus=gpus),
        *worker_threads(default_threads(), jobs, gpu_capacity),
        str(checkpoint_dir_for(context.store_path)),
    )  # fmt: skip
    spawn = multiprocessing.get_context("spawn")
    queue = list(todo)
    while queue:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs + gpu_capacity, mp_context=spawn
        ) as pool:
            broken = _feed_workers(pool, queue, plan, context)
        if broken and queue:
            context.reporter.log(
                "a worker process died: its runs are recorded as failed (--retry-failed runs "
                "them again); new workers take the remaining runs"
            )


def _feed_workers(
    pool: concurrent.futures.ProcessPoolExecutor,
    queue: list[PlannedRun],
    plan: _WorkerPlan,
    context: _Context,
) -> bool:
    """Submit queued runs as slots free up and record them as they finish, until the queue is
    empty or the pool broke; True when it broke."""
    in_flight: dict[concurrent.futures.Future, PlannedRun] = {}
    broken = False
    while (queue and not broken) or in_flight:
        for run in [] if broken else list(queue):
            placement = plan.slots.place(run.key, plan.shares[run.key])
            if placement is None:
                continue  # no room now; a later run of another kind may still fit
            queue.remove(run)
            if not context.claim(run):
                plan.slots.release(run.key)
                continue
            context.reporter.run_started(run.spec.label())
            threads = plan.cpu_threads if placement.gpu_index is None else plan.gpu_threads
            future = pool.submit(
                run_in_worker, run.spec.to_dict(), context.root, plan.checkpoints, threads,
                placement.gpu_index,
            )  # fmt: skip
            in_flight[future] = run
        if not in_flight:
            continue
        finished, _ = concurrent.futures.wait(
            in_flight, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in finished:
            run = in_flight.pop(future)
            concurrency = plan.slots.release(run.key)
            try:
                result = RunResult.from_dict(future.result())
            except BrokenProcessPool as exc:
                broken = True
                context.finish(run, None, WorkerDied(f"the worker process died: {exc}"))
            except Exception as exc:
                context.finish(run, None, exc)
            else:
                result.environment["concurrency"] = concurrency
                context.finish(run, result, None)
    return broken


class WorkerDied(RuntimeError):
    """The process running a run ended without a result (killed, out of memory, a crash)."""


def _ray_options(experiment: Experiment) -> dict[str, Any]:
    resources = experiment.resources
    return {
        "num_cpus": resources.get("num_cpus", 1),
        "num_gpus": resources.get("num_gpus", 0),
        "max_retries": int(resources.get("max_retries", 2)),  # a dead worker's run is retried
    }


def _run_ray(
    todo: list[PlannedRun], context: _Context, study: StudySpec, address: str | None
) -> None:
    """One Ray task per run. Without an address Ray starts a local instance."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray executor needs Ray: pip install 'mnistbench[ray]'") from exc
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        remote = ray.remote(run_in_worker)
        checkpoints = str(checkpoint_dir_for(context.store_path).resolve())
        root = str(Path(context.root).resolve()) if context.root else None
        pending: dict[Any, PlannedRun] = {}
        for run in todo:
            if not context.claim(run):
                continue
            options = _ray_options(study.experiment(run.experiment))
            threads = max(1, int(options["num_cpus"]))
            ref = remote.options(**options).remote(run.spec.to_dict(), root, checkpoints, threads)
            pending[ref] = run
            context.reporter.run_started(run.spec.label())
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    result = RunResult.from_dict(ray.get(ref))
                except Exception as exc:  # RayTaskError wraps the worker's exception
                    context.finish(run, None, exc)
                else:
                    context.finish(run, result, None)
    finally:
        if address is None:
            ray.shutdown()


def status_rows(
    store: Store, study: StudySpec | None
) -> list[tuple[str, str, dict[str, int], float | None]]:
    """(study, experiment, counts, ETA seconds) per experiment, for `study status`.

    The ETA is the mean wall time of this experiment's finished runs times the runs left.
    """
    rows = []
    for (study_name, experiment), counts in store.counts(study.name if study else None).items():
        records = store.runs(study_name, experiment)
        durations = [
            r.finished_at - r.started_at
            for r in records
            if r.status == "done" and r.finished_at and r.started_at
        ]
        left = counts["pending"] + counts["running"]
        eta = sum(durations) / len(durations) * left if durations and left else None
        rows.append((study_name, experiment, counts, eta))
    return rows
