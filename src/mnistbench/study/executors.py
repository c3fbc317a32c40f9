"""How a study's runs execute: one interface, `Executor`, and the registry of them, EXECUTORS.

run.py hands an executor the runs still to do and a context that claims a run before it starts
and records it when it ends: executors only decide where and when runs compute. `study run
--executor` and run_study read EXECUTORS, so a new executor is a class here and its line there.

The CLI imports this module to list the executors, and must start without torch: what needs it
(engines, devices, measure, scheduler, sharedgpu, progress's rich) is imported where it is used.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mnistbench.config import default_threads
from mnistbench.result import RunResult

if TYPE_CHECKING:
    from mnistbench.config import RunSpec
    from mnistbench.data import Dataset
    from mnistbench.progress import Reporter
    from mnistbench.study.file import Experiment, StudySpec
    from mnistbench.study.scheduler import Slots


class RunToDo(Protocol):
    """A run as executors see it: run.PlannedRun (run.py imports this module, not back)."""

    experiment: str
    spec: RunSpec

    @property
    def key(self) -> str: ...


class ExecutorContext(Protocol):
    """What an executor may ask of the driver (run.RunContext): claim a run before it starts
    (False: skip it, said why), release one claimed and never started, record one that ended."""

    reporter: Reporter
    root: str | None  # the datasets' root
    checkpoints: Path

    def claim(self, run: RunToDo) -> bool: ...
    def release(self, run: RunToDo) -> None: ...
    def finish(
        self, run: RunToDo, result: RunResult | None, error: BaseException | None
    ) -> None: ...


@dataclass(frozen=True)
class ExecutorOptions:
    """`study run`'s executor flags (run_study's arguments); each executor reads its own."""

    jobs: int | str = 1  # a count, or "auto"
    ray_address: str | None = None


class Executor(ABC):
    """Runs a study's runs still to do: each claimed through the context first, each recorded
    through it when it ends, all of them ended (or released) when `run` returns."""

    name: ClassVar[str]  # in EXECUTORS: its `--executor` choice
    help: ClassVar[str]  # in EXECUTORS: its line in `study run --help`

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        """This executor as the options configure it; override when it takes any."""
        return cls()

    @abstractmethod
    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        """Execute `todo` in its order as far as the executor keeps one. Ctrl-C: release the
        claimed runs that have not started, and let KeyboardInterrupt through."""


def cached_dataset(name: str, root: str | None) -> Dataset:
    """engines.cached_dataset, imported at the first run (module docstring)."""
    from mnistbench import engines

    return engines.cached_dataset(name, root)


def run_spec(
    spec: RunSpec, data: Dataset, checkpoint_dir: Path | None, reporter: Reporter | None
) -> RunResult:
    """engines.run_spec, imported at the first run (module docstring)."""
    from mnistbench import engines

    return engines.run_spec(spec, data, checkpoint_dir, reporter)


class SequentialExecutor(Executor):
    """One run after another in this process, with live epoch progress and timings alone."""

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        for run in todo:
            if not context.claim(run):
                continue
            context.reporter.run_started(run.spec.label())
            try:
                data = cached_dataset(run.spec.dataset, context.root)
                result = run_spec(run.spec, data, context.checkpoints, context.reporter)
            except KeyboardInterrupt:
                context.release(run)  # a clean Ctrl-C: the run goes back to pending
                raise
            except Exception as exc:  # a failed run is recorded; the study goes on
                context.finish(run, None, exc)
                continue
            context.finish(run, result, None)


@dataclass
class LocalExecutor(Executor):
    """This machine: in this process when one run at a time is all there is to do, else worker
    processes and GPU threads (wants_worker_processes decides, from --jobs and the GPU runs)."""

    name = "local"
    help = "this process, or worker processes and GPU threads (--jobs, GPU fractions)"
    jobs: int | str = 1

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        return cls(jobs=options.jobs)

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        from mnistbench.devices import visible_gpus
        from mnistbench.study.scheduler import gpu_share, wants_worker_processes

        gpus = visible_gpus()
        shares = {
            run.key: gpu_share(run.spec, study.experiment(run.experiment).resources, gpus)
            for run in todo
        }
        jobs = self.jobs if self.jobs != "auto" else _auto_jobs(shares, context.reporter)
        if wants_worker_processes(list(shares.values()), int(jobs), gpus):
            ProcessExecutor(int(jobs), gpus, shares).run(todo, context, study)
        else:
            SequentialExecutor().run(todo, context, study)


def _auto_jobs(shares: dict[str, float | None], reporter: Reporter) -> int:
    """--jobs auto for these runs (a share of None: a CPU run), said in the log."""
    from mnistbench.measure import available_memory
    from mnistbench.study.scheduler import auto_jobs

    cores, memory = default_threads(), available_memory()
    cpu_runs = list(shares.values()).count(None)
    jobs = auto_jobs(cpu_runs, cores, memory)
    room = f", {memory / 2**30:.0f} GiB free" if memory is not None else ""
    reporter.log(
        f"--jobs auto: {jobs} run(s) at once, {max(1, cores // jobs)} thread(s) each "
        f"({cores} cores, {cpu_runs} CPU runs to do{room})"
    )
    return jobs


@dataclass
class _WorkerPlan:
    """What every worker submission needs: where runs may go and with how many threads."""

    shares: dict[str, float | None]  # per run key: its GPU fraction, None for a CPU run
    slots: Slots
    cpu_threads: int
    gpu_threads: int
    checkpoints: str


@dataclass
class ProcessExecutor(Executor):
    """Runs fed as slots free up: `jobs` CPU runs at once in worker processes (spawned: no
    inherited torch threads or locks), and on each of `gpus` GPUs as many as their GPU fractions
    allow, as threads of this process (GpuThreads). Workers only compute. One that dies (killed,
    out of memory, a crash in native code) fails its runs; fresh workers take the rest."""

    jobs: int
    gpus: int
    shares: dict[str, float | None]  # per run key: its GPU fraction, None for a CPU run

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        from mnistbench.study.scheduler import Slots, gpu_slots, worker_threads

        gpu_shares = [share for share in self.shares.values() if share is not None]
        gpu_capacity = min(gpu_slots(gpu_shares, self.gpus), len(gpu_shares))
        plan = _WorkerPlan(
            self.shares, Slots(cpu_workers=self.jobs, gpus=self.gpus),
            *worker_threads(default_threads(), self.jobs, gpu_capacity),
            str(context.checkpoints),
        )  # fmt: skip
        spawn = multiprocessing.get_context("spawn")
        queue = list(todo)
        gpu_pool = GpuThreads(max(gpu_capacity, 1))
        try:
            while queue:
                with concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=spawn) as pool:
                    broken = _feed_workers(pool, gpu_pool, queue, plan, context)
                if broken and queue:
                    context.reporter.log(
                        "a worker process died: its runs are recorded as failed (--retry-failed "
                        "runs them again); new workers take the remaining runs"
                    )
        finally:
            gpu_pool.stop()


def _feed_workers(
    pool: concurrent.futures.ProcessPoolExecutor,
    gpu_pool: GpuThreads,
    queue: list[RunToDo],
    plan: _WorkerPlan,
    context: ExecutorContext,
) -> bool:
    """Submit queued runs as slots free up and record them as they finish, until the queue is
    empty or the pool broke; True when it broke."""
    from mnistbench.engines import run_in_worker

    in_flight: dict[Future, RunToDo] = {}
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
            on_cpu = placement.gpu_index is None
            threads = plan.cpu_threads if on_cpu else plan.gpu_threads
            args = (run.spec.to_dict(), context.root, plan.checkpoints, threads)
            try:
                if on_cpu:
                    future = pool.submit(run_in_worker, *args)
                else:  # the thread sets its GPU and stream (sharedgpu.in_own_stream)
                    future = gpu_pool.submit(run_in_worker, *args, gpu_index=placement.gpu_index)
            except BrokenProcessPool:
                # A worker died after the last wait() returned: this run never started, so it
                # goes back to the queue (and to pending) for the next pool's fresh workers.
                broken = True
                plan.slots.release(run.key)
                context.release(run)
                queue.insert(0, run)
                break
            context.reporter.run_started(run.spec.label())
            in_flight[future] = run
        if not in_flight:
            continue
        finished, _ = concurrent.futures.wait(
            in_flight, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in finished:
            broken = _record_finished(future, in_flight.pop(future), plan, context) or broken
    return broken


def _record_finished(
    future: Future, run: RunToDo, plan: _WorkerPlan, context: ExecutorContext
) -> bool:
    """Record a finished run with the runs it shared the machine with; True: its worker died."""
    from mnistbench.study.sharedgpu import mark_shared_peak

    concurrency = plan.slots.release(run.key)
    try:
        result = RunResult.from_dict(future.result())
    except BrokenProcessPool as exc:
        context.finish(run, None, WorkerDied(f"the worker process died: {exc}"))
        return True
    except Exception as exc:
        context.finish(run, None, exc)
        return False
    result.environment["concurrency"] = concurrency
    mark_shared_peak(result)
    context.finish(run, result, None)
    return False


class StopRequested(KeyboardInterrupt):
    """Raised inside a GPU thread's run at its next progress report once the study stops."""


def _reporter_that_stops(stop: threading.Event) -> Reporter:
    """A GPU thread's reporter: shows nothing, and stops its run when the study stops (a thread
    cannot be killed; at its next report the run stops, its last epoch checkpoint kept)."""
    from mnistbench.progress import Reporter  # rich: not at import (module docstring)

    class StopWhenAsked(Reporter):
        def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
            self.update(0, {})

        def update(self, steps_done: int, metrics: dict[str, float]) -> None:
            if stop.is_set():
                raise StopRequested("the study stopped")

    return StopWhenAsked()


class GpuThreads:
    """GPU runs as threads of this process, each with its own CUDA stream (sharedgpu.py):
    runs sharing a GPU overlap their kernels there, where processes would take turns."""

    def __init__(self, max_runs: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_runs, thread_name_prefix="gpu-run")
        self.stopping = threading.Event()

    def submit(self, work: Any, *args: Any, gpu_index: int | None = None) -> Future:
        """`work(*args, reporter=...)` in a thread, on GPU `gpu_index` with a stream of its own."""
        from mnistbench.study.sharedgpu import in_own_stream

        reporter = _reporter_that_stops(self.stopping)
        return self.pool.submit(in_own_stream, lambda: work(*args, reporter=reporter), gpu_index)

    def stop(self) -> None:
        """Ask running GPU runs to stop at their next report, and wait for them."""
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


class WorkerDied(RuntimeError):
    """The process running a run ended without a result (killed, out of memory, a crash)."""


def _ray_options(experiment: Experiment) -> dict[str, Any]:
    resources = experiment.resources
    return {
        "num_cpus": resources.get("num_cpus", 1),
        "num_gpus": resources.get("num_gpus", 0),
        "max_retries": int(resources.get("max_retries", 2)),  # a dead worker's run is retried
    }


@dataclass
class RayExecutor(Executor):
    """One Ray task per run with its experiment's num_cpus/num_gpus; no address: a new local Ray."""

    name = "ray"
    help = "one Ray task per run (--ray-address)"
    address: str | None = None

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        return cls(address=options.ray_address)

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("the ray executor needs Ray: pip install 'mnistbench[ray]'") from exc
        from mnistbench.engines import run_in_worker

        # "local": without it ray.init joins any cluster on the machine (which may stop under it)
        ray.init(address=self.address or "local", ignore_reinit_error=True,
                 include_dashboard=False, log_to_driver=False)  # fmt: skip
        try:
            remote = ray.remote(run_in_worker)
            checkpoints = str(context.checkpoints.resolve())
            root = str(Path(context.root).resolve()) if context.root else None
            pending: dict[Any, RunToDo] = {}
            for run in todo:
                if not context.claim(run):
                    continue
                options = _ray_options(study.experiment(run.experiment))
                threads = max(1, int(options["num_cpus"]))
                spec = run.spec.to_dict()
                pending[remote.options(**options).remote(spec, root, checkpoints, threads)] = run
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
            if self.address is None:
                ray.shutdown()


EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (LocalExecutor, RayExecutor)}
"""The `--executor` choices, in the order `study run --help` lists them."""


def make_executor(executor: str | Executor, options: ExecutorOptions) -> Executor:
    """The executor EXECUTORS names, configured by `options`; an Executor is used as it is."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ValueError(f"no executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    return EXECUTORS[executor].from_options(options)
