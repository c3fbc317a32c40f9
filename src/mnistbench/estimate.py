"""What runs will cost before they start: seconds per run from measured throughput, and the wall
time of many runs placed on parallel slots.

The inputs are measurements (calibrate.py times a few steps or small fits per shape on this
machine; finished runs in the store refine them); the arithmetic here only scales them: images
to process / images per second plus measured per-run and per-epoch overheads for a ResNet, a
power law in the training images for an SVM fit, and a greedy longest-first placement of runs on
slots, which is what the local executor's slots do. No torch here.
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RunCost:
    """The work of one run: images trained and images evaluated, and the rates measured."""

    label: str
    train_images: int  # epochs x train-split size
    eval_images: int  # held-out pass of each evaluated epoch (+ a test pass after a validation)
    train_images_per_second: float
    eval_images_per_second: float
    overhead_seconds: float = 0.0  # start-up, warm-up, data loading: measured, not guessed

    @property
    def seconds(self) -> float:
        if self.train_images_per_second <= 0 or self.eval_images_per_second <= 0:
            raise ValueError(f"{self.label}: throughput must be positive")
        return (
            self.train_images / self.train_images_per_second
            + self.eval_images / self.eval_images_per_second
            + self.overhead_seconds
        )


def torch_run_images(
    epochs: int, n_train: int, n_val: int, n_test: int, eval_each_epoch: bool
) -> tuple[int, int]:
    """(images trained, images evaluated) by one ResNet run: the held-out evaluations (on the
    validation split, or on the test split when there is none) and the final test pass, which
    without a validation split is the last epoch's evaluation itself."""
    held_out_passes = epochs if eval_each_epoch else 1
    if n_val == 0:
        return epochs * n_train, held_out_passes * n_test
    return epochs * n_train, held_out_passes * n_val + n_test


def makespan(durations: list[float], slots: int) -> float:
    """Wall time of independent jobs on `slots` identical slots, longest first onto the slot
    that frees up first (within 4/3 of the optimum; exact for one slot)."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    finish = [0.0] * min(slots, max(len(durations), 1))
    heapq.heapify(finish)
    for duration in sorted(durations, reverse=True):
        heapq.heappush(finish, heapq.heappop(finish) + duration)
    return max(finish)


def gpu_lane_seconds(shared: list[RunCost], at_once: int, alone: list[RunCost]) -> float:
    """Wall time of a GPU's lane of runs: those that share the GPU `at_once` at a time (their
    costs at the rates measured while sharing that way), then those that must run alone (a
    timed comparison such as Q2's GPU rows), one after another."""
    together = makespan([cost.seconds for cost in shared], at_once) if shared else 0.0
    return together + sum(cost.seconds for cost in alone)


# --- The sizes a run works on ---------------------------------------------------------------

ASSIGNMENT_FRACTIONS = (0.7, 0.1, 0.2)  # data/splits.py's (tests/test_estimate.py checks)


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    test: int


def split_sizes(
    split: str,
    val_fraction: float,
    train_limit: int | None,
    test_limit: int | None,
    dataset: dict[str, int],
) -> Sizes:
    """The train/val/test sizes data/splits.py makes from a dataset of `dataset` sizes, without
    loading it (the stratified hold-out rounds per class, so val may differ by a few images)."""
    if split == "assignment":
        total = dataset["train"] + dataset["test"]
        lengths = [int(total * fraction) for fraction in ASSIGNMENT_FRACTIONS]
        for index in range(total - sum(lengths)):
            lengths[index % 3] += 1
        train, val, test = lengths
    else:
        val = round(dataset["train"] * val_fraction)
        train, test = dataset["train"] - val, dataset["test"]
    if train_limit is not None:
        train = min(train, train_limit)
    if test_limit is not None:
        test = min(test, test_limit)
    return Sizes(train, val, test)


# --- ResNets: images over measured rates, plus overheads ------------------------------------


def rates_of_run(
    train_images: int,
    train_seconds: float,
    evaluated_images: int,
    test_images: int,
    test_seconds: float,
    life_seconds: float,
) -> TorchRates:
    """The rates one finished run shows: its own training rate, its evaluation rate (from its
    timed test pass), and as overhead what its life held besides (set-up, warm-up, capture,
    saving), for projecting runs of the same shape with other epochs."""
    eval_rate = test_images / test_seconds
    overhead = life_seconds - train_seconds - evaluated_images / eval_rate
    return TorchRates(train_images / train_seconds, eval_rate, max(overhead, 0.0), source="run")


@dataclass(frozen=True)
class TorchRates:
    """What one training shape (model, input, batch, precision, device, ...) costs here."""

    train_images_per_second: float
    eval_images_per_second: float
    run_overhead_seconds: float
    """Once per run: split, model build, FLOP count, warm-up, saving the final model."""
    epoch_overhead_seconds: float = 0.0
    """Once per epoch: writing the epoch checkpoint."""
    source: str = "calibrated"

    def cost(self, label: str, epochs: int, sizes: Sizes, eval_each_epoch: bool) -> RunCost:
        train, evaluated = torch_run_images(
            epochs, sizes.train, sizes.val, sizes.test, eval_each_epoch
        )
        overhead = self.run_overhead_seconds + epochs * self.epoch_overhead_seconds
        return RunCost(
            label, train, evaluated, self.train_images_per_second,
            self.eval_images_per_second, overhead,
        )  # fmt: skip


@dataclass(frozen=True)
class TorchObservation:
    """A finished ResNet run as the store has it."""

    wall_seconds: float  # claimed -> recorded
    train_seconds: float
    eval_seconds: float  # the final test pass alone
    epochs: int
    sizes: Sizes
    eval_each_epoch: bool


def refine_torch(rates: TorchRates | None, seen: list[TorchObservation]) -> TorchRates | None:
    """Rates from finished runs of the same shape on this machine: their training and test
    images/s, and what their wall time leaves for overheads (medians). The calibrated per-epoch
    overhead is kept; without observations the calibrated rates come back unchanged."""
    seen = [o for o in seen if o.train_seconds > 0 and o.eval_seconds > 0 and o.sizes.test > 0]
    if not seen:
        return rates
    epoch_overhead = rates.epoch_overhead_seconds if rates else 0.0
    train_ips = statistics.median(o.epochs * o.sizes.train / o.train_seconds for o in seen)
    eval_ips = statistics.median(o.sizes.test / o.eval_seconds for o in seen)
    overheads = []
    for o in seen:
        _, evaluated = torch_run_images(
            o.epochs, o.sizes.train, o.sizes.val, o.sizes.test, o.eval_each_epoch
        )
        rest = o.wall_seconds - o.train_seconds - evaluated / eval_ips
        overheads.append(max(0.0, rest - o.epochs * epoch_overhead))
    return TorchRates(
        train_ips, eval_ips, statistics.median(overheads), epoch_overhead,
        source=f"{len(seen)} finished run(s)",
    )  # fmt: skip


# --- SVMs: a power law in the training images -----------------------------------------------


@dataclass(frozen=True)
class SvmRates:
    """A kernel SVM's cost here, measured at `n_train` training images and scaled by power laws:
    the fit grows about quadratically with the training images, and predicting grows with the
    images predicted times the support vectors (which grow with the training images)."""

    n_train: int
    fit_seconds: float
    fit_exponent: float
    n_predicted: int  # test (+ validation) images predicted in the reference run
    predict_seconds: float
    predict_exponent: float  # in the training images
    overhead_seconds: float  # split, features, result
    source: str = "calibrated"

    def seconds(self, sizes: Sizes) -> float:
        scale = max(sizes.train, 1) / self.n_train
        fit = self.fit_seconds * scale**self.fit_exponent
        predicted = (sizes.test + sizes.val) / max(self.n_predicted, 1)
        predict = self.predict_seconds * predicted * scale**self.predict_exponent
        return fit + predict + self.overhead_seconds


@dataclass(frozen=True)
class SvmObservation:
    """A finished SVM run as the store has it."""

    wall_seconds: float
    fit_seconds: float
    predict_seconds: float  # the test prediction alone
    sizes: Sizes


def refine_svm(rates: SvmRates | None, seen: list[SvmObservation]) -> SvmRates | None:
    """The largest finished fit of the same shape here becomes the reference point (the
    calibrated exponents scale it to other sizes)."""
    seen = [o for o in seen if o.fit_seconds > 0 and o.sizes.train > 0 and o.sizes.test > 0]
    if not seen:
        return rates
    best = max(seen, key=lambda o: o.sizes.train)
    predicted = best.sizes.test + best.sizes.val
    predict = best.predict_seconds * predicted / best.sizes.test  # + the validation pass
    base = rates or SvmRates(1, 0.0, 1.7, 1, 0.0, 0.6, 0.0)  # calibrate.SVM_DEFAULT_GROWTH
    return replace(
        base,
        n_train=best.sizes.train,
        fit_seconds=best.fit_seconds,
        n_predicted=predicted,
        predict_seconds=predict,
        overhead_seconds=max(0.0, best.wall_seconds - best.fit_seconds - predict),
        source=f"{len(seen)} finished run(s)",
    )


def load_factor(pairs: list[tuple[float, float]], low: float = 0.33, high: float = 3.0) -> float:
    """How much slower (>1) or faster than estimated runs actually took: sum(actual) /
    sum(estimated) over (estimated, actual) pairs, clamped; 1 without pairs."""
    estimated = sum(e for e, _ in pairs)
    if not pairs or estimated <= 0:
        return 1.0
    return min(high, max(low, sum(a for _, a in pairs) / estimated))
