"""Worker processes for CPU runs and threads for GPU runs, fed as slots free up (the local
executor's parallel half)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnistbench.config import default_threads
from mnistbench.result import RunResult
from mnistbench.study.executors.base import Executor, ExecutorContext, RunToDo

if TYPE_CHECKING:
    from mnistbench.progress import Reporter
    from mnistbench.study.file import StudySpec
    from mnistbench.study.scheduler import Slots


@dataclass
class _WorkerPlan:
    """What every worker submission needs: where runs may go and with how many threads."""

    shares: dict[str, float | None]  # per run key: its GPU fraction, None for a CPU run
    slots: Slots
    cpu_threads: int
    gpu_threads: int
    checkpoints: str


class WorkerPool:
    """`jobs` worker processes, spawned (no inherited torch threads or locks) when a run first
    needs them and kept for the next `run` of the same session: a search's batches do not each
    pay for new processes importing torch. One that broke (a worker died) is closed, and the
    next `get` spawns fresh ones."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def get(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            spawn = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(self.jobs, mp_context=spawn)
        return self._pool

    def close(self) -> None:
        """Wait for the workers to end (after a Ctrl-C they end with the process group)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclass
class ProcessExecutor(Executor):
    """Runs fed as slots free up: `jobs` CPU runs at once in worker processes (spawned: no
    inherited torch threads or locks), and on each of `gpus` GPUs as many as their GPU fractions
    allow, as threads of this process (GpuThreads). Workers only compute. One that dies (killed,
    out of memory, a crash in native code) fails its runs; fresh workers take the rest.

    The caller owns `workers` (at least `jobs` of them) and closes them: LocalExecutor keeps
    them for the next `run` of its session."""

    jobs: int
    workers: WorkerPool
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
        queue = list(todo)
        gpu_pool = GpuThreads(max(gpu_capacity, 1))
        try:
            while queue:
                broken = _feed_workers(self.workers.get(), gpu_pool, queue, plan, context)
                if broken:
                    self.workers.close()
                if broken and queue:
                    context.reporter.log(
                        "a worker process died: a run it was running is recorded as failed "
                        "(--retry-failed runs it again); new workers take the remaining runs"
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
