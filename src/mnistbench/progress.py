"""How long work shows progress: a silent base reporter, a rich one for terminals, a plain one.

Engines and the study runner call these few methods and never print themselves, so the same run
shows bars in a terminal, log lines under `--quiet` or in a worker process, or nothing in tests.
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
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Receives progress; shows nothing. Subclasses show it."""

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

    # --- studies ---
    def start_study(self, total: int, already_done: int) -> None:
        """A study of `total` runs begins, `already_done` of which the store already holds."""

    def run_started(self, label: str) -> None:
        """A run was claimed and starts."""

    def run_finished(self, label: str, summary: str) -> None:
        """A run ended (done, failed, skipped) or was left to another process."""

    def close(self) -> None:
        """Nothing more will be reported."""


def format_metrics(metrics: dict[str, object]) -> str:
    parts = []
    for name, value in metrics.items():
        if value is None:
            continue
        parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    return "  ".join(parts)


class PlainReporter(Reporter):
    """Log lines: one per epoch, phase and run. For --quiet, files and worker processes."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self._total = self._finished = 0

    def end_epoch(self, summary: dict[str, object]) -> None:
        self.write(format_metrics(summary))

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        started = time.perf_counter()
        self.write(f"{description} ...")
        yield
        self.write(f"{description}: done in {time.perf_counter() - started:.1f} s")

    def log(self, message: str) -> None:
        self.write(message)

    def start_study(self, total: int, already_done: int) -> None:
        self._total, self._finished = total, already_done
        self.write(f"{total} runs, {already_done} already in the store")

    def run_started(self, label: str) -> None:
        self.write(f"[{self._finished + 1}/{self._total}] {label} ...")

    def run_finished(self, label: str, summary: str) -> None:
        self._finished += 1
        self.write(f"[{self._finished}/{self._total}] {label}: {summary}")


class RichReporter(Reporter):
    """Live bars: the study's runs (with ETA), the current epoch (loss, acc, img/s), phases."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._epoch_task: TaskID | None = None
        self._study_task: TaskID | None = None

    @property
    def progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.console,
            )
            self._progress.start()
        return self._progress

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch_task = self.progress.add_task(
            f"epoch {epoch}/{epochs}", total=steps, metrics=""
        )

    def update(self, steps_done: int, metrics: dict[str, float]) -> None:
        if self._epoch_task is not None:
            self.progress.update(
                self._epoch_task, completed=steps_done, metrics=format_metrics(metrics)
            )

    def end_epoch(self, summary: dict[str, object]) -> None:
        if self._epoch_task is not None:
            self.progress.remove_task(self._epoch_task)
            self._epoch_task = None
        self.progress.console.print(format_metrics(summary))

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        task = self.progress.add_task(description, total=None, metrics="")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.progress.remove_task(task)
        self.progress.console.print(f"{description}: done in {time.perf_counter() - started:.1f} s")

    def log(self, message: str) -> None:
        self.progress.console.print(message)

    def start_study(self, total: int, already_done: int) -> None:
        self._study_task = self.progress.add_task(
            "runs", total=total, completed=already_done, metrics=""
        )
        if already_done:
            self.log(f"{already_done} of {total} runs already in the store: skipping them")

    def run_started(self, label: str) -> None:
        self.log(f"[bold]{label}[/bold]")

    def run_finished(self, label: str, summary: str) -> None:
        if self._study_task is not None:
            self.progress.advance(self._study_task)
        self.log(f"  {label}: {summary}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
