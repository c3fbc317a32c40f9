"""An epoch's loss trace (EpochRecord.loss_trace): the mean loss over equal chunks of its steps,
copied on the device as the epoch runs and read once at its end, for a curve within an epoch."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.engines.torch.loops import LOSS_TRACE_CHUNKS, LossTrace
from mnistbench.engines.torch.train import run
from tests.conftest import synthetic_dataset


def traced(losses: list[float], batch: int = 16) -> tuple[LossTrace, list[float]]:
    """The trace of an epoch whose step i has mean loss losses[i], as drive_epoch marks it."""
    trace, loss_sum = LossTrace(), torch.zeros(())
    for step, loss in enumerate(losses, start=1):
        loss_sum += loss * batch  # in place, as StepCounters adds: a mark must be a copy
        trace.mark(step, step * batch, loss_sum)
    return trace, trace.means(len(losses), len(losses) * batch, float(loss_sum))


def test_a_short_epoch_keeps_each_steps_loss() -> None:
    losses = [2.0, 1.5, 1.0, 0.75, 0.5]
    assert traced(losses)[1] == losses


@pytest.mark.parametrize("steps", [40, 125, 1000, 3063])
def test_a_long_epoch_keeps_between_20_and_40_equal_chunks_whose_means_are_exact(
    steps: int,
) -> None:
    losses = [float(i % 7) for i in range(steps)]
    trace, means = traced(losses)
    stride = trace.stride
    assert LOSS_TRACE_CHUNKS <= len(means) < 2 * LOSS_TRACE_CHUNKS
    # Chunks of `stride` steps from the start; the last takes the tail (under 1.5 strides).
    edges = [*range(0, stride * (len(means) - 1) + 1, stride), steps]
    assert steps - edges[-2] < 1.5 * stride
    expected = [sum(losses[a:b]) / (b - a) for a, b in pairwise(edges)]
    assert means == pytest.approx(expected, rel=1e-4)


def test_a_run_records_a_trace_per_epoch_that_averages_to_the_epochs_loss() -> None:
    spec = RunSpec(model="resnet18", epochs=1, batch_size=16, threads=1, device="cpu")
    (epoch,) = run(spec, synthetic_dataset(n_train=160, n_test=20)).history
    assert len(epoch.loss_trace) == 10  # 10 steps: one chunk each
    assert sum(epoch.loss_trace) / 10 == pytest.approx(epoch.train_loss, rel=1e-4)
    assert epoch.loss_trace[0] > epoch.loss_trace[-1]  # it learns
