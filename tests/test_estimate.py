"""The cost arithmetic behind study projections (gpu_check's projected study time)."""

import pytest

from mnistbench.estimate import (
    RunCost,
    Sizes,
    gpu_lane_seconds,
    makespan,
    rates_of_run,
    torch_run_images,
)


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


def test_a_gpu_lane_is_its_shared_runs_k_at_a_time_then_its_runs_alone():
    def cost(seconds: float) -> RunCost:  # 1,000 images at 10/s, no evaluation
        return RunCost("r", 1_000, 0, 1_000 / seconds, 1.0)

    shared = [cost(100.0)] * 8  # each at the rate it trained while sharing
    assert gpu_lane_seconds(shared, at_once=4, alone=[]) == 200  # two waves of four
    assert gpu_lane_seconds(shared, at_once=1, alone=[]) == 800
    assert gpu_lane_seconds(shared, at_once=4, alone=[cost(30.0), cost(20.0)]) == pytest.approx(250)
    assert gpu_lane_seconds([], at_once=4, alone=[cost(30.0)]) == pytest.approx(30)


def test_a_runs_rates_split_its_life_into_training_evaluation_and_overhead():
    # 49k images trained in 10 s; 14k test images in 2 s; 5 x 7k validation + 14k test
    # evaluated (49k at 7k/s: 7 s); a life of 20 s leaves 3 s of set-up.
    rates = rates_of_run(49_000, 10.0, 49_000, 14_000, 2.0, life_seconds=20.0)
    assert (rates.train_images_per_second, rates.eval_images_per_second) == (4_900, 7_000)
    assert rates.run_overhead_seconds == pytest.approx(3.0)
    # The same shape for 2 epochs, validated each: 98k trained, 14k + 14k evaluated.
    projected = rates.cost("r", epochs=2, sizes=Sizes(49_000, 7_000, 14_000), eval_each_epoch=True)
    assert projected.seconds == pytest.approx(20.0 + 4.0 + 3.0)


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
