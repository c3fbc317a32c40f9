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


# --- sizes, rates, refinement -------------------------------------------------------------------


def test_split_sizes_are_those_the_splits_make() -> None:
    from mnistbench.data import splits
    from mnistbench.estimate import ASSIGNMENT_FRACTIONS, split_sizes
    from tests.conftest import synthetic_dataset

    assert ASSIGNMENT_FRACTIONS == splits.ASSIGNMENT_FRACTIONS
    data = synthetic_dataset(n_train=400, n_test=100)
    counts = {"train": 400, "test": 100}
    for split, val_fraction, train_limit, test_limit in (
        ("official", 0.0, None, None),
        ("official", 0.1, 200, 50),
        ("assignment", 0.0, None, 30),
    ):
        made = splits.limit_split(
            splits.make_split(data, split, val_fraction=val_fraction),
            train_limit, test_limit, seed=0,
        )  # fmt: skip
        sizes = split_sizes(split, val_fraction, train_limit, test_limit, counts)
        assert made.sizes() == {"train": sizes.train, "val": sizes.val, "test": sizes.test}


def test_without_a_validation_split_each_epoch_evaluates_on_the_test_split() -> None:
    assert torch_run_images(3, 1_000, 0, 500, eval_each_epoch=True) == (3_000, 1_500)
    assert torch_run_images(3, 1_000, 0, 500, eval_each_epoch=False) == (3_000, 500)


def test_torch_rates_cost_images_overheads_and_epochs() -> None:
    from mnistbench.estimate import Sizes, TorchRates

    rates = TorchRates(100.0, 1_000.0, run_overhead_seconds=3.0, epoch_overhead_seconds=0.5)
    cost = rates.cost("r18", epochs=2, sizes=Sizes(1_000, 0, 500), eval_each_epoch=True)
    assert cost.seconds == pytest.approx(20 + 1.0 + 3 + 1)  # 2 test passes: the 2nd is the final


def test_finished_runs_replace_the_calibrated_rates() -> None:
    from mnistbench.estimate import Sizes, TorchObservation, TorchRates, refine_torch

    sizes = Sizes(1_000, 0, 500)
    calibrated = TorchRates(100.0, 1_000.0, 3.0, 0.5)
    assert refine_torch(calibrated, []) is calibrated
    slow = TorchObservation(100.0, 80.0, 1.0, epochs=2, sizes=sizes, eval_each_epoch=True)
    refined = refine_torch(calibrated, [slow, slow])
    assert refined.train_images_per_second == 25.0 and refined.eval_images_per_second == 500.0
    assert refined.source == "2 finished run(s)"
    # The observed run, estimated again, takes what it took.
    assert refined.cost("r18", 2, sizes, True).seconds == pytest.approx(100.0)


def test_svm_seconds_follow_the_power_laws_from_the_reference_fit() -> None:
    from mnistbench.estimate import Sizes, SvmObservation, SvmRates, refine_svm

    rates = SvmRates(2_000, 4.0, 2.0, 500, 1.0, 1.0, 1.0)
    assert rates.seconds(Sizes(2_000, 0, 500)) == pytest.approx(6.0)
    assert rates.seconds(Sizes(4_000, 0, 1_000)) == pytest.approx(16 + 4 + 1)
    finished = SvmObservation(20.0, 16.0, 2.0, Sizes(4_000, 0, 1_000))
    refined = refine_svm(rates, [finished])
    assert refined.seconds(Sizes(4_000, 0, 1_000)) == pytest.approx(20.0)
    assert refined.fit_exponent == 2.0  # the calibrated growth scales it to other sizes


def test_the_load_factor_is_actual_over_estimated_and_clamped() -> None:
    from mnistbench.estimate import load_factor

    assert load_factor([]) == 1.0
    assert load_factor([(10.0, 15.0), (30.0, 45.0)]) == pytest.approx(1.5)
    assert load_factor([(1.0, 100.0)]) == 3.0 and load_factor([(100.0, 1.0)]) == 0.33
