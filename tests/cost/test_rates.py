"""The cost arithmetic: seconds from an engine's work at observed rates, and wall time on slots."""

from __future__ import annotations

import pytest

from mnistbench.config import RunSpec
from mnistbench.cost.rates import Observation, Rates, gpu_lane_seconds, makespan, rates_from
from mnistbench.data.sizes import Sizes
from mnistbench.engines import Work
from mnistbench.engines.svm import ENGINE as SVM
from mnistbench.engines.svm import GROWTH
from mnistbench.engines.torch import ENGINE as TORCH
from mnistbench.engines.torch.prepare import run_images
from mnistbench.progress import load_factor


def test_makespan_places_longest_first_on_the_freest_slot() -> None:
    assert makespan([5, 4, 3, 3, 3], slots=1) == 18
    assert makespan([5, 4, 3, 3, 3], slots=2) == 10  # slots: 5+3 and 4+3+3
    assert makespan([3, 3, 3, 4, 5], slots=2) == 10  # longest first, whatever the order given
    assert makespan([7, 1, 1, 1], slots=4) == 7  # one long run bounds it
    assert makespan([], slots=3) == 0
    with pytest.raises(ValueError, match="at least 1"):
        makespan([1.0], slots=0)


def test_a_gpu_lane_is_its_shared_runs_k_at_a_time_then_its_runs_alone() -> None:
    shared = [100.0] * 8  # each at the rate it trained while sharing
    assert gpu_lane_seconds(shared, at_once=4, alone=[]) == 200  # two waves of four
    assert gpu_lane_seconds(shared, at_once=1, alone=[]) == 800
    assert gpu_lane_seconds(shared, at_once=4, alone=[30.0, 20.0]) == pytest.approx(250)
    assert gpu_lane_seconds([], at_once=4, alone=[30.0]) == pytest.approx(30)


def test_seconds_are_the_runs_cost_plus_its_work_at_the_rates() -> None:
    rates = Rates(train=0.01, evaluate=0.001, run=3.0, source="test")
    # `test` is part of `evaluate` (the final pass), timed apart only to measure its rate.
    assert rates.seconds(Work(train=2_000, evaluate=1_000, test=500)) == pytest.approx(24.0)
    assert rates.seconds(Work(0, 0, 0)) == 3.0


def test_a_runs_rates_split_its_life_into_training_evaluation_and_the_rest() -> None:
    # 49k images trained in 10 s; a 14k test pass in 2 s (7k/s); 5 x 7k validation + 14k test
    # evaluated (49k at 7k/s: 7 s); a life of 20 s leaves 3 s of set-up.
    seen = Observation(Work(49_000, 49_000, 14_000), 10.0, 2.0, wall_seconds=20.0)
    rates = rates_from([seen], "a probe")
    assert rates is not None and rates.source == "a probe"
    assert (1 / rates.train, 1 / rates.evaluate) == (pytest.approx(4_900), pytest.approx(7_000))
    assert rates.run == pytest.approx(3.0)
    # The run itself, estimated again, takes what it took; 2 epochs validated each take less.
    assert rates.seconds(seen.work) == pytest.approx(20.0)
    assert rates.seconds(Work(98_000, 28_000, 14_000)) == pytest.approx(20.0 + 4.0 + 3.0)


def test_rates_are_the_medians_of_the_usable_observations() -> None:
    work = Work(1_000, 500, 500)
    seen = [
        Observation(work, 10.0, 1.0, 20.0),  # rest: 20 - 10 - 500 x 0.004 = 8
        Observation(work, 20.0, 4.0, 30.0),  # rest: 30 - 20 - 2 = 8
        Observation(work, 90.0, 2.0, 95.0),  # rest: 95 - 90 - 2 = 3
    ]
    rates = rates_from(seen, "3 finished runs")
    assert rates is not None
    assert (rates.train, rates.evaluate) == (pytest.approx(0.02), pytest.approx(0.004))
    assert rates.run == pytest.approx(8.0)
    # A wall time shorter than its work leaves no negative rest.
    fast = rates_from([Observation(work, 10.0, 1.0, wall_seconds=5.0)], "fast")
    assert fast is not None and fast.run == 0.0


def test_observations_without_timings_or_test_images_give_no_rates() -> None:
    work = Work(1_000, 500, 500)
    assert rates_from([], "none") is None
    assert rates_from([Observation(work, 0.0, 1.0, 5.0)], "untrained") is None
    assert rates_from([Observation(work, 1.0, 0.0, 5.0)], "untested") is None
    assert rates_from([Observation(Work(1_000, 0, 0), 1.0, 1.0, 5.0)], "no test") is None
    # An unusable one is left out, not counted in the medians.
    rates = rates_from([Observation(work, 0.0, 1.0, 5.0), Observation(work, 5.0, 1.0, 9.0)], "")
    assert rates is not None and rates.train == pytest.approx(0.005)


def _resnet(epochs: int, eval_each_epoch: bool) -> RunSpec:
    return RunSpec(model="resnet18", epochs=epochs, eval_each_epoch=eval_each_epoch)


def test_images_of_the_published_q1a_runs() -> None:
    # 5 epochs of 49k, validation (7k) after each epoch, then the 14k test split.
    sizes = Sizes(49_000, 7_000, 14_000)
    assert run_images(_resnet(5, True), sizes) == (245_000, 49_000)
    assert run_images(_resnet(2, False), sizes) == (98_000, 21_000)


def test_without_a_validation_split_each_epoch_evaluates_on_the_test_split() -> None:
    sizes = Sizes(1_000, 0, 500)
    assert run_images(_resnet(3, True), sizes) == (3_000, 1_500)  # the 3rd pass is the final
    assert run_images(_resnet(3, False), sizes) == (3_000, 500)
    # A ResNet's work is those images, and the final test pass alone.
    assert TORCH.work(_resnet(3, True), sizes) == Work(3_000, 1_500, 500)


@pytest.mark.parametrize("backend", ["sklearn", "sklearnex"])
def test_an_svms_work_grows_as_its_back_ends_power_laws(backend: str) -> None:
    fit, predict = GROWTH[backend]
    spec = RunSpec(model="svm", svm_backend=backend)
    small, large = SVM.work(spec, Sizes(2_000, 0, 500)), SVM.work(spec, Sizes(4_000, 0, 1_000))
    assert small == Work(2_000**fit, 500 * 2_000**predict, 500 * 2_000**predict)
    assert large.train / small.train == pytest.approx(2**fit)  # twice the images to fit
    # twice the images predicted, each with about 2**predict times the support vectors
    assert large.test / small.test == pytest.approx(2 * 2**predict)
    # validation images are predicted too, but only the test pass is timed on its own
    with_val = SVM.work(spec, Sizes(2_000, 300, 500))
    assert (with_val.evaluate, with_val.test) == (800 * 2_000**predict, small.test)


def test_an_svm_estimate_scales_its_reference_fit_by_the_power_laws() -> None:
    spec = RunSpec(model="svm", svm_backend="sklearn")
    fit, predict = GROWTH["sklearn"]
    # A reference fit of 1,000 images in 4 s, 500 predicted in 1 s, 6 s in all.
    seen = Observation(SVM.work(spec, Sizes(1_000, 0, 500)), 4.0, 1.0, wall_seconds=6.0)
    rates = rates_from([seen], "a probe")
    assert rates is not None
    assert rates.seconds(seen.work) == pytest.approx(6.0)
    assert rates.seconds(SVM.work(spec, Sizes(2_000, 0, 500))) == pytest.approx(
        1.0 + 4.0 * 2**fit + 1.0 * 2**predict
    )


def test_the_load_factor_is_actual_over_estimated_and_clamped() -> None:
    assert load_factor([]) == 1.0
    assert load_factor([(10.0, 15.0), (30.0, 45.0)]) == pytest.approx(1.5)
    assert load_factor([(10.0, 5.0), (30.0, 35.0)]) == pytest.approx(1.0)  # sums, not means
    assert load_factor([(1.0, 100.0)]) == 3.0 and load_factor([(100.0, 1.0)]) == 0.33
    assert load_factor([(0.0, 5.0)]) == 1.0  # nothing estimated: nothing to scale
