"""The Ray executor: one Ray task per run, on a local Ray or a cluster (--ray-address)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mnistbench.result import RunResult
from mnistbench.study.executors.base import Executor, ExecutorContext, ExecutorOptions, RunToDo

if TYPE_CHECKING:
    from mnistbench.study.file import Experiment, StudySpec


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

    started: bool = field(default=False, init=False, repr=False)
    """This executor started (or joined) Ray, and has not let go of it yet."""

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        ray = _ray()
        from mnistbench.engines import run_in_worker

        if not self.started:
            # "local": without it ray.init joins any cluster on the machine (which may stop
            # under it). Started once per session: a local Ray takes a minute on a small machine.
            ray.init(address=self.address or "local", ignore_reinit_error=True,
                     include_dashboard=False, log_to_driver=False)  # fmt: skip
            self.started = True
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
            self.run_ended()

    def let_go(self) -> None:
        """Shut down the local Ray this executor started (a cluster at --ray-address stays)."""
        if self.started and self.address is None:
            _ray().shutdown()
        self.started = False


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("the ray executor needs Ray: pip install 'mnistbench[ray]'") from exc
    return ray
