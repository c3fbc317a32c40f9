"""How a study's runs execute: one interface, `Executor`, and the registry of them, EXECUTORS.

run.py hands an executor the runs still to do and a context that claims a run before it starts
and records it when it ends: executors only decide where and when runs compute. `study run
--executor` and run_study read EXECUTORS, so a new executor is a module here and its line in
EXECUTORS. `base.py` is the interface; `local.py` this machine (in process, or `processes.py`'s
worker processes and GPU threads); `on_ray.py` Ray.

The CLI imports this module to list the executors, and must start without torch: what needs it
(engines, devices, measure, scheduler, sharedgpu, progress's rich) is imported where it is used.
"""

from __future__ import annotations

from mnistbench.study.executors.base import (
    Executor,
    ExecutorContext,
    ExecutorOptions,
    RunToDo,
)
from mnistbench.study.executors.local import LocalExecutor
from mnistbench.study.executors.on_ray import RayExecutor

__all__ = ["EXECUTORS", "Executor", "ExecutorContext", "ExecutorOptions", "RunToDo",
           "make_executor"]  # fmt: skip

EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (LocalExecutor, RayExecutor)}
"""The `--executor` choices, in the order `study run --help` lists them."""


def make_executor(executor: str | Executor, options: ExecutorOptions) -> Executor:
    """The executor EXECUTORS names, configured by `options`; an Executor is used as it is."""
    if isinstance(executor, Executor):
        return executor
    if executor not in EXECUTORS:
        raise ValueError(f"no executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    return EXECUTORS[executor].from_options(options)
