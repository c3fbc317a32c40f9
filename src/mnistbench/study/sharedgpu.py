"""Several torch runs on one GPU at once, in this process: one thread and one CUDA stream each.

A captured small-batch step leaves much of a large GPU idle: its kernels are too small to fill
the chip. Runs on separate streams of one process can overlap their kernels, where separate
processes (without NVIDIA's MPS) would take turns on it. Each run keeps its own model,
batch-norm statistics, optimizer, GradScaler and generators (they are its own objects), builds
its model under a lock on the process-wide RNG (recipe.make_training), and times itself by its
own stream (measure.synchronize), so its train time is its own synchronised time while it
shared the GPU, never the group's wall time divided by the number of runs.

Each result records, in environment["concurrency"], how many runs shared the GPU over its life
(time-weighted), its life, and its group's wall time (scheduler.Slots.release).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from mnistbench.result import RunResult
from mnistbench.study.scheduler import Slots


def in_own_stream(work: Callable[[], Any], gpu_index: int | None = None) -> Any:
    """Run `work` on GPU `gpu_index` (this thread's current one when None) with a CUDA stream
    of its own as this thread's current stream; on a machine without CUDA, as it is (the
    accounting is the same). The device is set first: a stream belongs to one device, and on
    another the run would fall back to that device's default stream, shared with the others."""
    if not torch.cuda.is_available():
        return work()
    if gpu_index is not None:
        torch.cuda.set_device(gpu_index)
    with torch.cuda.stream(torch.cuda.Stream(torch.cuda.current_device())):
        return work()


def mark_shared_peak(result: RunResult) -> None:
    """A run that shared its GPU in this process cannot have a peak of its own: CUDA's peak
    statistics are the process's, reset by each run as it starts. Say so in its kind."""
    concurrency = result.environment.get("concurrency", {})
    if result.peak_memory_kind == "cuda_max_allocated" and (
        concurrency.get("runs_on_same_gpu", 1) > 1
    ):
        result.peak_memory_kind = "cuda_max_allocated, all runs sharing the GPU in its process"


class _SharedSlots:
    """Slots (scheduler.py) for one GPU, `at_once` runs on it, guarded for threads: who is on
    the GPU when, for each run's time-weighted sharing and its group's wall time."""

    def __init__(self, at_once: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.at_once, self.lock = at_once, threading.Lock()
        self.slots = Slots(cpu_workers=1, gpus=1, clock=clock)

    def enter(self, key: str) -> None:
        with self.lock:
            if self.slots.place(key, 1.0 / self.at_once) is None:
                raise RuntimeError(f"no room on the GPU for {key}: more runs than at_once")

    def leave(self, key: str) -> dict[str, float | int]:
        with self.lock:
            return self.slots.release(key)


def run_sharing_gpu(
    works: list[Callable[[], RunResult]], at_once: int
) -> list[RunResult | BaseException]:
    """Run each of `works` (a run on the current CUDA device) `at_once` at a time, each in its
    own thread and stream; results (or the exception a run raised) in the order given, each
    with its sharing recorded."""
    slots = _SharedSlots(at_once)
    sharing: dict[int, dict[str, float | int]] = {}

    def one(index: int) -> RunResult:
        slots.enter(str(index))
        try:
            return in_own_stream(works[index])
        finally:
            sharing[index] = slots.leave(str(index))

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
            "sharing": "threads, one CUDA stream each"
        }
        mark_shared_peak(result)
        outcomes.append(result)
    return outcomes
