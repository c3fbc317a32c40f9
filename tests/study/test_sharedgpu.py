"""Runs sharing a GPU as threads (sharedgpu.py): the accounting of who shared it and for how
long, checked with runs that only wait (no GPU needed); the CUDA side runs in test_cuda.py's
study test and benchmarks/gpu_lane.py."""

from __future__ import annotations

import threading
import time

import pytest

from mnistbench.result import RunResult
from mnistbench.study.sharedgpu import run_sharing_gpu


def waiting_run(seconds: float, started: threading.Barrier | None = None):
    def work() -> RunResult:
        if started is not None:
            started.wait(timeout=10)
        time.sleep(seconds)
        return RunResult(spec={"seconds": seconds})

    return work


def test_two_runs_together_then_one_alone_record_their_sharing_and_the_groups_wall():
    together = threading.Barrier(2)
    works = [waiting_run(0.4, together), waiting_run(0.4, together), waiting_run(0.2)]
    first, second, third = run_sharing_gpu(works, at_once=2)
    for result in (first, second):
        concurrency = result.environment["concurrency"]
        assert concurrency["runs_on_same_gpu"] == 2
        assert concurrency["mean_runs_on_same_gpu"] == pytest.approx(2.0, abs=0.15)
        assert concurrency["life_seconds"] == pytest.approx(0.4, abs=0.1)
    alone = third.environment["concurrency"]
    assert alone["mean_runs_on_same_gpu"] == pytest.approx(1.0, abs=0.15)
    # Each run's own time is its own; its group's wall time (the GPU busy since the first run
    # began) is said apart: up to the pair's end, and up to the third's, the whole span.
    walls = [r.environment["concurrency"]["group_wall_seconds"] for r in (first, second, third)]
    assert walls == pytest.approx([0.4, 0.4, 0.6], abs=0.15)


def test_a_run_that_fails_is_returned_as_its_error_and_the_others_finish():
    def failing() -> RunResult:
        raise RuntimeError("out of memory")

    outcomes = run_sharing_gpu([failing, waiting_run(0.05)], at_once=2)
    assert isinstance(outcomes[0], RuntimeError) and "out of memory" in str(outcomes[0])
    assert outcomes[1].environment["concurrency"]["runs_on_same_gpu"] >= 1
