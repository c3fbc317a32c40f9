"""How a study's runs execute: in this process, in worker processes, or as Ray tasks.

Each executor takes the runs still to do and a RunContext (study.py), which claims a run before
it starts and records it when it ends: executors only decide where and when runs compute.
- run_sequential: one run after another in this process, with live epoch progress;
- run_processes: `--jobs` CPU runs at once in spawned worker processes, and on each GPU as many
  runs as their GPU fractions allow (scheduler.py) as threads of this process, each with its
  own CUDA stream (sharedgpu.py), fed as slots free up; a worker that dies fails its runs and
  fresh workers take the rest;
- run_ray: one Ray task per run with its num_cpus/num_gpus request, handled as they finish.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench.config import default_threads
from mnistbench.engines import cached_dataset, run_in_worker, run_spec
from mnistbench.progress import Reporter
from mnistbench.result import RunResult
from mnistbench.study.file import Experiment, StudySpec
from mnistbench.study.scheduler import Slots, gpu_slots, worker_threads
from mnistbench.study.sharedgpu import in_own_stream, mark_shared_peak

if TYPE_CHECKING:
    from mnistbench.study.run import PlannedRun, RunContext


def run_sequential(todo: list[PlannedRun], context: RunContext) -> None:
    checkpoints = context.checkpoints
    for run in todo:
        if not context.claim(run):
            continue
        context.reporter.run_started(run.spec.label())
        try:
            data = cached_dataset(run.spec.dataset, context.root)
            result = run_spec(run.spec, data, checkpoints, context.reporter)
        except KeyboardInterrupt:
            context.release(run)  # a clean Ctrl-C: the run goes back to pending
            raise
        except Exception as exc:  # a failed run is recorded; the study goes on
            context.finish(run, None, exc)
            continue
        context.finish(run, result, None)


@dataclass
class _WorkerPlan:
    """What every worker submission needs: where runs may go and with how many threads."""

    shares: dict[str, float | None]  # per run key: its GPU fraction, None for a CPU run
    slots: Slots
    cpu_threads: int
    gpu_threads: int
    checkpoints: str


def run_processes(
    todo: list[PlannedRun],
    context: RunContext,
    shares: dict[str, float | None],
    jobs: int,
    gpus: int,
) -> None:
    """Runs fed as slots free up: `jobs` CPU runs at once in worker processes (spawned: no
    inherited torch threads or locks), and on each GPU as many runs as their GPU fractions
    (`shares`, per run key; None for a CPU run) allow, as threads of this process (GpuThreads).
    The driver claims, records and beats the heart; workers only compute. A worker that dies
    (killed, out of memory, a crash in native code) fails the runs it had in flight, and fresh
    workers take the rest of the queue."""
    gpu_shares = [share for share in shares.values() if share is not None]
    gpu_capacity = min(gpu_slots(gpu_shares, gpus), len(gpu_shares))
    plan = _WorkerPlan(
        shares, Slots(cpu_workers=jobs, gpus=gpus),
        *worker_threads(default_threads(), jobs, gpu_capacity),
        str(context.checkpoints),
    )  # fmt: skip
    spawn = multiprocessing.get_context("spawn")
    queue = list(todo)
    gpu_pool = GpuThreads(max(gpu_capacity, 1))
    try:
        while queue:
            with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=spawn) as pool:
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
    queue: list[PlannedRun],
    plan: _WorkerPlan,
    context: RunContext,
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
            on_cpu = placement.gpu_index is None
            threads = plan.cpu_threads if on_cpu else plan.gpu_threads
            try:
                args = (run.spec.to_dict(), context.root, plan.checkpoints, threads)
                if on_cpu:
                    future = pool.submit(run_in_worker, *args)
                else:
                    gpu = placement.gpu_index
                    # The thread sets its GPU and stream (sharedgpu.in_own_stream).
                    future = gpu_pool.submit(run_in_worker, *args, gpu_index=gpu)
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
                mark_shared_peak(result)
                context.finish(run, result, None)
    return broken


class StopRequested(KeyboardInterrupt):
    """Raised inside a GPU thread's run at its next progress report once the study stops."""


class _StopWhenAsked(Reporter):
    """A GPU thread's reporter: shows nothing, and stops its run when the study stops (a thread
    cannot be killed; at its next report the run stops, its last epoch checkpoint kept)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.update(0, {})

    def update(self, steps_done: int, metrics: dict[str, float]) -> None:
        if self.stop.is_set():
            raise StopRequested("the study stopped")


class GpuThreads:
    """GPU runs as threads of this process, each with its own CUDA stream (sharedgpu.py):
    runs sharing a GPU overlap their kernels there, where processes would take turns."""

    def __init__(self, max_runs: int) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_runs, thread_name_prefix="gpu-run")
        self.stopping = threading.Event()

    def submit(
        self, work: Any, *args: Any, gpu_index: int | None = None
    ) -> concurrent.futures.Future:
        """`work(*args, reporter=...)` in a thread, on GPU `gpu_index` with a stream of its own."""
        reporter = _StopWhenAsked(self.stopping)
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


def run_ray(
    todo: list[PlannedRun], context: RunContext, study: StudySpec, address: str | None
) -> None:
    """One Ray task per run. Without an address Ray starts a local instance."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray executor needs Ray: pip install 'mnistbench[ray]'") from exc
    # "local": a new instance of its own, as the docstring says; without it ray.init joins any
    # cluster already running on the machine (another study's, which may stop under it).
    ray.init(address=address or "local", ignore_reinit_error=True, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        remote = ray.remote(run_in_worker)
        checkpoints = str(context.checkpoints.resolve())
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
