"""The executor interface: what an executor is given (the runs to do, a context that claims and
records them) and what it must do with them.

Light: imported by the CLI to list the executors, so nothing here imports torch.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from mnistbench.config import RunSpec
    from mnistbench.data import Dataset
    from mnistbench.progress import Reporter
    from mnistbench.result import RunResult
    from mnistbench.study.file import StudySpec


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

    sessions: int = 0
    """How many `session`s hold this executor (nested: one inside a caller's own)."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Held around every `run` of one study run (its grid, then each batch of a search's
        trials): an executor keeps what is dear to start (worker processes, a local Ray) from
        one `run` to the next, and lets it go when the outermost session ends. Outside a
        session a `run` lets go of what it started before it returns (`run_ended`)."""
        self.sessions += 1
        try:
            yield
        finally:
            self.sessions -= 1
            if not self.sessions:
                self.let_go()

    def let_go(self) -> None:  # noqa: B027 (most executors keep nothing: no override needed)
        """Stop what this executor keeps between runs; override when it keeps anything."""

    def run_ended(self) -> None:
        """Call at the end of `run`: outside a session, let go of what it started."""
        if not self.sessions:
            self.let_go()

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
