"""The cost arithmetic behind study projections (gpu_check's projected study time)."""

import pytest

from mnistbench.estimate import RunCost, makespan, shared_makespan, torch_run_images


def test_run_seconds_are_images_over_measured_rates_plus_overhead():
    cost = RunCost("r18", train_images=98_000, eval_images=28_000,
                   train_images_per_second=2_000, eval_images_per_second=7_000,
                   overhead_seconds=5)  # fmt: skip
    assert cost.seconds == pytest.approx(49 + 4 + 5)


def test_a_run_without_throughput_is_an_error():
    with pytest.raises(ValueError, match="r50"):
        _ = RunCost("r50", 10, 10, 0.0, 1.0).seconds


def test_images_of_the_published_q1a_runs():
    # 5 epochs of 49k, validation (7k) after each epoch, then the 14k test split.
    assert torch_run_images(5, 49_000, 7_000, 14_000, eval_each_epoch=True) == (245_000, 49_000)
    assert torch_run_images(2, 49_000, 7_000, 14_000, eval_each_epoch=False) == (98_000, 21_000)


def test_makespan_places_longest_first_on_the_freest_slot():
    assert makespan([5, 4, 3, 3, 3], slots=1) == 18
    assert makespan([5, 4, 3, 3, 3], slots=2) == 10  # slots: 5+3 and 4+3+3
    assert makespan([7, 1, 1, 1], slots=4) == 7  # one long run bounds it
    assert makespan([], slots=3) == 0


def test_sharing_a_gpu_helps_only_by_its_measured_speedup():
    alone = [100.0] * 8
    assert shared_makespan(alone, runs_at_once=1, speedup=1.0) == 800
    # Four at a time with 2x the total throughput: each run takes 200 s, two waves.
    assert shared_makespan(alone, runs_at_once=4, speedup=2.0) == 400
    # No gain from sharing: the same 800 s, just interleaved.
    assert shared_makespan(alone, runs_at_once=4, speedup=1.0) == 800
    with pytest.raises(ValueError):
        shared_makespan(alone, runs_at_once=0, speedup=1.0)
