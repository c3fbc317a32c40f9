"""How long work shows progress: a silent base reporter, a rich one for terminals, a plain one.

Engines and the study runner call these few methods and never print themselves, so the same run
shows bars in a terminal, log lines under `--quiet` or in a worker process, or nothing in tests.

A study's ETA is the estimated seconds of its runs (cost/estimate.py: probed on this
machine, refined by the store) not finished yet, scaled by how long the finished runs took against their
own estimates (`EtaClock`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def load_factor(pairs: list[tuple[float, float]], low: float = 0.33, high: float = 3.0) -> float:
    """How much slower (>1) or faster than estimated runs actually took: sum(actual) /
    sum(estimated) over (estimated, actual) pairs, clamped; 1 without pairs."""
    estimated = sum(e for e, _ in pairs)
    if not pairs or estimated <= 0:
        return 1.0
    return min(high, max(low, sum(a for _, a in pairs) / estimated))


Estimates = list[tuple[str, float | None]]
"""(run label, estimated seconds here) per run a study is about to claim, in order."""


class Reporter:
    """Receives progress; shows nothing. Subclasses show it."""

    shows_eta = False
    """Whether start_study's estimates are shown (the study runner computes them only then)."""

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
    def start_study(
        self, total: int, already_done: int, estimates: Estimates | None = None
    ) -> None:
        """A study of `total` runs begins, `already_done` of which the store already holds;
        `estimates` for the runs to claim, when the reporter shows an ETA."""

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


def clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class EtaClock:
    """A study's time left: the estimated seconds of the runs not finished yet, times how long
    the finished runs took against their estimates, spread over the runs in flight. Runs are
    matched by label, first come first served (two runs may share a label)."""

    def __init__(self, estimates: Estimates, clock: Callable[[], float] = time.monotonic) -> None:
        known = [seconds for _, seconds in estimates if seconds is not None]
        fallback = statistics.mean(known) if known else None
        self.waiting = [(label, fallback if s is None else s) for label, s in estimates]
        self.running: list[tuple[str, float | None, float]] = []
        self.finished: list[tuple[float, float]] = []  # (estimated, actual) of runs that ran
        self.clock = clock

    def started(self, label: str) -> None:
        estimate = self._take(label)
        self.running.append((label, estimate, self.clock()))

    def ended(self, label: str) -> None:
        """A run ended: one that ran counts towards the pace; a skipped one just leaves."""
        for index, (name, estimate, began) in enumerate(self.running):
            if name == label:
                del self.running[index]
                if estimate:
                    self.finished.append((estimate, self.clock() - began))
                return
        self._take(label)

    def _take(self, label: str) -> float | None:
        for index, (name, estimate) in enumerate(self.waiting):
            if name == label:
                del self.waiting[index]
                return estimate
        return None

    def pace(self) -> float:
        """Actual over estimated seconds of the finished runs (1 before the first)."""
        return load_factor(self.finished, 0.2, 5.0)

    def remaining(self) -> float | None:
        estimates = [e for _, e in self.waiting] + [e for _, e, _ in self.running]
        if any(e is None for e in estimates):
            return None
        pace, now = self.pace(), self.clock()
        left = sum(e for _, e in self.waiting) * pace
        left += sum(max(e * pace - (now - began), 0.0) for _, e, began in self.running)
        return left / max(1, len(self.running))


class PlainReporter(Reporter):
    """Log lines: one per epoch, phase and run. For --quiet, files and worker processes."""

    shows_eta = True

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self._total = self._finished = 0
        self._eta: EtaClock | None = None

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

    def start_study(
        self, total: int, already_done: int, estimates: Estimates | None = None
    ) -> None:
        self._total, self._finished = total, already_done
        self._eta = EtaClock(estimates) if estimates else None
        self.write(
            f"{total} runs, {already_done} already in the store" + self._eta_text("estimated")
        )

    def _eta_text(self, word: str = "eta") -> str:
        return f" ({word} {clock_text(self._eta.remaining())})" if self._eta else ""

    def run_started(self, label: str) -> None:
        if self._eta:
            self._eta.started(label)
        self.write(f"[{self._finished + 1}/{self._total}] {label} ...")

    def run_finished(self, label: str, summary: str) -> None:
        self._finished += 1
        if self._eta:
            self._eta.ended(label)
        self.write(f"[{self._finished}/{self._total}] {label}: {summary}" + self._eta_text())


class EtaColumn(ProgressColumn):
    """The study bar's ETA from the estimates (EtaClock); rich's own for the other bars."""

    def __init__(self, reporter: RichReporter) -> None:
        super().__init__()
        self.reporter, self.fallback = reporter, TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        eta = self.reporter.eta
        if task.id == self.reporter.study_task and eta is not None:
            return Text(clock_text(eta.remaining()), style="progress.remaining")
        return self.fallback.render(task)


class RichReporter(Reporter):
    """Live bars: the study's runs (with ETA), the current epoch (loss, acc, img/s), phases."""

    shows_eta = True

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._epoch_task: TaskID | None = None
        self.study_task: TaskID | None = None
        self.eta: EtaClock | None = None

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
                EtaColumn(self),
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

    def start_study(
        self, total: int, already_done: int, estimates: Estimates | None = None
    ) -> None:
        self.eta = EtaClock(estimates) if estimates else None
        self.study_task = self.progress.add_task(
            "runs", total=total, completed=already_done, metrics=""
        )
        if already_done:
            self.log(f"{already_done} of {total} runs already in the store: skipping them")
        if self.eta is not None:
            self.log(f"estimated {clock_text(self.eta.remaining())} for the runs left")

    def run_started(self, label: str) -> None:
        if self.eta is not None:
            self.eta.started(label)
        self.log(f"[bold]{label}[/bold]")

    def run_finished(self, label: str, summary: str) -> None:
        if self.eta is not None:
            self.eta.ended(label)
        if self.study_task is not None:
            self.progress.advance(self.study_task)
        self.log(f"  {label}: {summary}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
