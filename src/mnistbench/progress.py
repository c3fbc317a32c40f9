"""How long work shows progress: a silent base reporter, a rich one for terminals, a plain one.

Engines call these few methods and never print themselves, so the same run can show bars in a
terminal, log lines under `--quiet` or in a worker process, or nothing in tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Receives progress; does nothing. Subclasses show it."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch (1-based) of `steps` optimizer steps begins."""

    def update(self, steps_done: int, metrics: dict[str, float]) -> None:
        """Progress within the epoch, with running metrics (loss, acc, img/s)."""

    def end_epoch(self, summary: dict[str, object]) -> None:
        """The epoch finished; summary holds its history entry."""

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        """A long step without intermediate progress (an SVM fit): shown with elapsed time."""
        yield

    def log(self, message: str) -> None:
        """A one-off message."""


def _format_metrics(metrics: dict[str, object]) -> str:
    parts = []
    for name, value in metrics.items():
        if value is None:
            continue
        parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    return "  ".join(parts)


class PlainReporter(Reporter):
    """One log line per epoch and per phase: for --quiet, files and worker processes."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write

    def end_epoch(self, summary: dict[str, object]) -> None:
        self.write(_format_metrics(summary))

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        started = time.perf_counter()
        self.write(f"{description} ...")
        yield
        self.write(f"{description}: done in {time.perf_counter() - started:.1f} s")

    def log(self, message: str) -> None:
        self.write(message)


class RichReporter(Reporter):
    """A progress bar per epoch with loss, accuracy and img/s; a spinner with elapsed time."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, metrics="")

    def update(self, steps_done: int, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=steps_done, metrics=_format_metrics(metrics)
            )

    def end_epoch(self, summary: dict[str, object]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(_format_metrics(summary))

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        with Progress(
            SpinnerColumn(),
            TextColumn(description),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            progress.add_task(description, total=None)
            started = time.perf_counter()
            yield
        self.console.print(f"{description}: done in {time.perf_counter() - started:.1f} s")

    def log(self, message: str) -> None:
        self.console.print(message)
