"""What runs will cost before they start: seconds per run from measured throughput, and the wall
time of many runs placed on parallel slots.

The inputs are measurements (training and evaluation images/s for a shape on this machine);
the arithmetic here only scales them: images to process / images per second, and a greedy
longest-first placement of runs on slots, which is what the local executor's slots do.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class RunCost:
    """The work of one run: images trained and images evaluated, and the rates measured."""

    label: str
    train_images: int  # epochs x train-split size
    eval_images: int  # validation after each evaluated epoch + the final test pass
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
    """(images trained, images evaluated) by one ResNet run."""
    val_passes = epochs if eval_each_epoch else 1
    return epochs * n_train, val_passes * n_val + n_test


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


def shared_makespan(alone_seconds: list[float], runs_at_once: int, speedup: float) -> float:
    """Wall time of runs that share one device `runs_at_once` at a time, where running that many
    together gives `speedup` times the total throughput of one alone: each run then takes
    runs_at_once / speedup times its time alone."""
    if runs_at_once < 1 or speedup <= 0:
        raise ValueError(f"need runs_at_once >= 1 and speedup > 0, got {runs_at_once}, {speedup}")
    stretch = runs_at_once / speedup
    return makespan([seconds * stretch for seconds in alone_seconds], runs_at_once)
