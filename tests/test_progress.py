"""The live ETA of a study: the runs' estimates, corrected by the pace of the finished runs."""

from __future__ import annotations

import pytest

from mnistbench.progress import EtaClock, PlainReporter, clock_text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_is_the_estimates_left_at_the_pace_of_the_finished_runs() -> None:
    clock = Clock()
    eta = EtaClock([("r18", 10.0), ("r50", 36.0), ("cuda", 0.0)], clock)
    assert eta.remaining() == 46.0  # before anything ran: the estimates themselves
    eta.started("r18")
    clock.now = 4.0
    assert eta.remaining() == pytest.approx(6.0 + 36.0)  # the running one counts down
    clock.now = 20.0
    eta.ended("r18")  # took twice its estimate: the rest will too
    assert eta.pace() == 2.0 and eta.remaining() == pytest.approx(72.0)
    eta.ended("cuda")  # skipped: leaves the queue, says nothing of the pace
    assert eta.pace() == 2.0 and eta.remaining() == pytest.approx(72.0)
    eta.started("r50")
    clock.now = 50.0
    assert eta.remaining() == pytest.approx(72.0 - 30.0)


def test_a_run_without_an_estimate_counts_as_the_mean_of_the_others() -> None:
    eta = EtaClock([("a", 10.0), ("b", None), ("c", 30.0)], Clock())
    assert eta.remaining() == 60.0
    assert EtaClock([("a", None)], Clock()).remaining() is None


def test_the_plain_reporter_prints_the_estimate_and_the_eta() -> None:
    lines: list[str] = []
    reporter = PlainReporter(lines.append)
    reporter.start_study(3, 1, [("a", 65.0), ("b", 65.0)])
    reporter.run_started("a")
    reporter.run_finished("a", "ok")
    assert lines[0] == "3 runs, 1 already in the store (estimated 2m10s)"
    assert "[2/3] a: ok (eta " in lines[-1]
    without = PlainReporter(lines.append)
    without.start_study(3, 1)
    assert lines[-1] == "3 runs, 1 already in the store"
    assert clock_text(3725) == "1h02m" and clock_text(None) == "-"
