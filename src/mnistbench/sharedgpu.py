"""Several torch runs on one GPU at once, in this process: one thread and one CUDA stream each.

A captured small-batch step leaves much of a large GPU idle: its kernels are too small to fill
the chip. Runs on separate streams of one process can overlap their kernels, where separate
processes (without NVIDIA's MPS) would take turns on it. Each run keeps its own model,
batch-norm statistics, optimizer, GradScaler and generators (they are its own objects), builds
its model under a lock on the process-wide RNG (recipe.make_training), and times itself by its
own stream (measure.synchronize), so its train time is its own synchronised time while it
shared the GPU, never the group's wall time divided by the number of runs.

Each result records, in environment["concurrency"], how many runs shared the GPU over its life
(time-weighted, scheduler.Slots), its life, and the wall time of the whole group.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mnistbench.result import RunResult
from mnistbench.scheduler import Slots


def in_own_stream(work: Callable[[], RunResult]) -> RunResult:
    """Run `work` with a CUDA stream of its own as this thread's current stream (on a machine
    without CUDA, as it is: the accounting is the same)."""
    if not torch.cuda.is_available():
        return work()
    with torch.cuda.stream(torch.cuda.Stream()):
        return work()


@dataclass
class SharingClock:
    """Who is on the GPU when: Slots' time-weighted count of runs sharing it, guarded for
    threads, and the span of the whole group."""

    at_once: int
    clock: Callable[[], float] = time.monotonic
    slots: Slots = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float | None = None
    ended: float | None = None

    def __post_init__(self) -> None:
        self.slots = Slots(cpu_workers=1, gpus=1, clock=self.clock)

    def enter(self, key: str) -> None:
        with self.lock:
            if self.slots.place(key, 1.0 / self.at_once) is None:
                raise RuntimeError(f"no room on the GPU for {key}: more runs than at_once")
            if self.started is None:
                self.started = self.clock()

    def leave(self, key: str) -> dict[str, float | int]:
        with self.lock:
            self.ended = self.clock()
            return self.slots.release(key)

    def group_wall_seconds(self) -> float:
        if self.started is None or self.ended is None:
            return 0.0
        return self.ended - self.started


def run_sharing_gpu(
    works: list[Callable[[], RunResult]], at_once: int
) -> list[RunResult | BaseException]:
    """Run each of `works` (a run on the current CUDA device) `at_once` at a time, each in its
    own thread and stream; results (or the exception a run raised) in the order given, each
    with its sharing recorded."""
    clock = SharingClock(at_once)
    sharing: dict[int, dict[str, float | int]] = {}

    def one(index: int) -> RunResult:
        clock.enter(str(index))
        try:
            return in_own_stream(works[index])
        finally:
            sharing[index] = clock.leave(str(index))

    with concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = [pool.submit(one, index) for index in range(len(works))]
        concurrent.futures.wait(futures)
    outcomes: list[RunResult | BaseException] = []
    for index, future in enumerate(futures):
        error = future.exception()
        if error is not None:
            outcomes.append(error)
            continue
        result = future.result()
        result.environment["concurrency"] = sharing[index] | {
            "group_wall_seconds": round(clock.group_wall_seconds(), 2),
            "sharing": "threads, one CUDA stream each",
        }
        outcomes.append(result)
    return outcomes
