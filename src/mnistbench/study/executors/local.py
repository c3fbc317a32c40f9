"""The local executor: this machine, in this process or in worker processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mnistbench.config import default_threads
from mnistbench.study.executors.base import (
    Executor,
    ExecutorContext,
    ExecutorOptions,
    RunToDo,
    cached_dataset,
    run_spec,
)
from mnistbench.study.executors.processes import ProcessExecutor, WorkerPool

if TYPE_CHECKING:
    from mnistbench.progress import Reporter
    from mnistbench.study.file import StudySpec


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
    _workers: WorkerPool | None = field(default=None, init=False, repr=False)
    """The worker processes of the last `run`, kept while a session lasts."""

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
            workers = self._worker_pool(int(jobs))
            try:
                ProcessExecutor(int(jobs), workers, gpus, shares).run(todo, context, study)
            finally:
                self.run_ended()
        else:
            self.let_go()  # workers kept from an earlier run would only sit idle through this
            SequentialExecutor().run(todo, context, study)

    def _worker_pool(self, jobs: int) -> WorkerPool:
        """The session's workers when there are at least `jobs` of them (--jobs auto may ask
        fewer for a later batch), else `jobs` new ones in their place."""
        if self._workers is None or self._workers.jobs < jobs:
            self.let_go()
            self._workers = WorkerPool(jobs)
        return self._workers

    def let_go(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None


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
