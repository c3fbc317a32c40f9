"""Where the local executor puts a study's runs: CPU worker slots and shares of each GPU.

A GPU run asks for a fraction of one GPU, the experiment's `resources.num_gpus` read as Ray reads
it: 0.25 lets four runs share a GPU, 1 (the default) gives a run a GPU of its own. Several
small-batch runs on one GPU finish sooner in total than the same runs one after another, because
one batch-16 run leaves most of a large GPU idle (benchmarks/README.md, GPU section). A CPU run
(an SVM, a ResNet on device "cpu") takes one of `jobs` worker slots; CPU and GPU runs proceed side
by side. Every run records how many runs shared its GPU (the most at once, and the mean over its
life, time-weighted) and a CPU run how many GPU runs fed from the same cores beside it
(`Slots.release`), so no timing taken under contention is passed off as one taken alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.engines import engine_for

# --jobs auto leaves this much memory per worker: a ResNet run at 28 px peaks at about 1.4 GiB
# RSS (the quick study's runs), with its dataset as tensors and the model's activations.
MEMORY_PER_WORKER = 2 * 2**30
HOST_THREADS_PER_GPU_RUN = 2  # a GPU run's Python loop and copies; its compute is on the GPU
EPSILON = 1e-9  # 4 x 0.25 must fit in 1.0 despite float rounding


def needs_gpu(spec: RunSpec, gpus_here: int) -> bool:
    """Whether the run trains on a GPU here ('auto' means a GPU when there is one)."""
    device = engine_for(spec).device(spec)
    return device.startswith("cuda") or (device == "auto" and gpus_here > 0)


def gpu_fraction(resources: dict[str, Any]) -> float:
    """The share of one GPU a run of this experiment asks for, in (0, 1]."""
    requested = float(resources.get("num_gpus", 1) or 1)
    if requested <= 0:
        return 1.0
    return min(requested, 1.0)  # one run trains on one GPU; more would sit idle


def runs_per_gpu(fraction: float) -> int:
    return max(1, math.floor(1 / fraction + EPSILON))


def worker_threads(cores: int, cpu_workers: int, gpu_runs: int) -> tuple[int, int]:
    """(threads per CPU-run worker, threads per GPU-run worker) when both kinds run at once.

    GPU runs need a couple of host threads each; the CPU runs share the rest of the cores.
    """
    gpu_threads = min(HOST_THREADS_PER_GPU_RUN, cores) if gpu_runs else 0
    left = max(cores - gpu_threads * gpu_runs, cpu_workers)
    return max(1, left // max(cpu_workers, 1)), max(1, gpu_threads)


@dataclass(frozen=True)
class Placement:
    """Where one run goes: a CPU worker slot, or a share of GPU `gpu_index`."""

    gpu_index: int | None
    share: float = 0.0


@dataclass
class _Life:
    """One running run's sharing so far, advanced at every place and release (Slots._advance)."""

    placed_at: float
    gpu_run_seconds: float = 0.0
    """The integral over its life of the runs on its GPU (itself included), in run-seconds."""
    peak_same_gpu: int = 0
    peak_all: int = 0
    peak_gpu_runs: int = 0
    """The most GPU runs (on any GPU) at once while it ran."""


@dataclass
class Slots:
    """Free capacity: CPU worker slots and, per GPU, the fraction not yet handed out; and, per
    running run, how many runs it has shared the machine and its GPU with so far."""

    cpu_workers: int
    gpus: int
    clock: Callable[[], float] = time.monotonic
    """The driver's clock, read at every place and release (tests pass one they drive)."""
    free_cpu: int = field(init=False)
    free_gpu: list[float] = field(init=False)
    running: dict[str, Placement] = field(init=False, default_factory=dict)
    lives: dict[str, _Life] = field(init=False, default_factory=dict)
    # Per GPU with runs on it: when it last went from idle to busy (its group's start).
    busy_since: dict[int, float] = field(init=False, default_factory=dict)
    _last_event: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if self.cpu_workers < 1:
            raise ValueError(f"cpu_workers must be at least 1, got {self.cpu_workers}")
        self.free_cpu = self.cpu_workers
        self.free_gpu = [1.0] * self.gpus

    def place(self, key: str, gpu_share: float | None) -> Placement | None:
        """Reserve room for a run (gpu_share None: a CPU run); None when it must wait."""
        if gpu_share is None:
            if self.free_cpu < 1:
                return None
            self.free_cpu -= 1
            placement = Placement(None)
        else:
            # The GPU with the most room left: spreads runs over GPUs before stacking them.
            candidates = [i for i in range(self.gpus) if self.free_gpu[i] + EPSILON >= gpu_share]
            if not candidates:
                return None
            index = max(candidates, key=lambda i: self.free_gpu[i])
            self.free_gpu[index] -= gpu_share
            placement = Placement(index, gpu_share)
        now = self._advance()  # the runs so far shared the GPU without this one until now
        if placement.gpu_index is not None:
            self.busy_since.setdefault(placement.gpu_index, now)
        self.running[key] = placement
        self.lives[key] = _Life(placed_at=now)
        self._update_peaks()
        return placement

    def release(self, key: str) -> dict[str, int | float]:
        """Free a finished run's room; return how many runs it shared the machine with.

        Every run: `runs_at_once` (the most runs at once, itself included) and `life_seconds`
        (placement to release on the driver's clock: worker start, data loading and
        evaluation included, so longer than the run's own synchronised train_seconds).
        A GPU run: `runs_on_same_gpu` (the most on its GPU at once) and `mean_runs_on_same_gpu`
        (the runs on its GPU averaged over its life, time-weighted: 1.0 is a run that never
        shared), and `group_wall_seconds`, the wall time from when its GPU last went from idle
        to busy to this run's end: the group of runs that kept that GPU busy together. A run's
        own time is its train_seconds, never this divided by the runs.
        A CPU run: `gpu_runs_alongside`, the most GPU runs at once while it ran; their
        host threads feed from the same cores, so its time was not taken alone when this is
        above 0. The cores are split between the two kinds for the whole study: worker_threads
        gives the CPU workers the cores that the GPU runs' host threads leave (on too few cores
        every worker still gets one thread, and they oversubscribe), and the result's
        environment records the threads the run had (`threads`).
        """
        now = self._advance()
        placement, life = self.running.pop(key), self.lives.pop(key)
        if placement.gpu_index is None:
            self.free_cpu += 1
        else:
            self.free_gpu[placement.gpu_index] += placement.share
        seconds = now - life.placed_at
        concurrency: dict[str, int | float] = {
            "runs_at_once": life.peak_all, "life_seconds": round(seconds, 3),
        }  # fmt: skip
        if placement.gpu_index is None:
            concurrency["gpu_runs_alongside"] = life.peak_gpu_runs
            return concurrency
        # A run placed and released at one instant has no life to average over: its peak.
        mean = life.gpu_run_seconds / seconds if seconds > 0 else life.peak_same_gpu
        concurrency["runs_on_same_gpu"] = life.peak_same_gpu
        concurrency["mean_runs_on_same_gpu"] = round(mean, 2)
        concurrency["group_wall_seconds"] = round(now - self.busy_since[placement.gpu_index], 3)
        if placement.gpu_index not in self._runs_per_gpu():
            del self.busy_since[placement.gpu_index]  # idle: the next run starts a new group
        return concurrency

    def idle(self) -> bool:
        return not self.running

    def _runs_per_gpu(self) -> dict[int, int]:
        per_gpu: dict[int, int] = {}
        for placement in self.running.values():
            if placement.gpu_index is not None:
                per_gpu[placement.gpu_index] = per_gpu.get(placement.gpu_index, 0) + 1
        return per_gpu

    def _advance(self) -> float:
        """Add the time since the last event to each running GPU run's integral, at the number
        of runs its GPU had over that time (constant between events); the clock's time now."""
        now = self.clock()
        elapsed, per_gpu = now - self._last_event, self._runs_per_gpu()
        for key, placement in self.running.items():
            if placement.gpu_index is not None:
                self.lives[key].gpu_run_seconds += per_gpu[placement.gpu_index] * elapsed
        self._last_event = now
        return now

    def _update_peaks(self) -> None:
        total, per_gpu = len(self.running), self._runs_per_gpu()
        gpu_runs = sum(per_gpu.values())
        for key, placement in self.running.items():
            life = self.lives[key]
            life.peak_all = max(life.peak_all, total)
            if placement.gpu_index is None:
                life.peak_gpu_runs = max(life.peak_gpu_runs, gpu_runs)
            else:
                life.peak_same_gpu = max(life.peak_same_gpu, per_gpu[placement.gpu_index])


def gpu_share(spec: RunSpec, resources: dict[str, Any], gpus: int) -> float | None:
    """The GPU fraction a run asks for (its experiment's resources), or None for a run that
    trains on the CPU here."""
    if gpus == 0 or not needs_gpu(spec, gpus):
        return None  # a CUDA run on a machine without one is skipped when claimed
    return gpu_fraction(resources)


def gpu_slots(gpu_shares: list[float], gpus: int) -> int:
    """How many GPU runs the machine takes at once: the smallest fraction asked for decides how
    many fit on each GPU (Slots places the actual runs)."""
    return gpus * runs_per_gpu(min(gpu_shares)) if gpu_shares else 0


def auto_jobs(cpu_runs: int, cores: int, available_memory: int | None) -> int:
    """--jobs auto: one single-threaded worker per core, for no more workers than CPU runs to do
    and memory holds (`available_memory` in bytes, None: unknown, no cap).

    Separate processes beat one process's threads at these small shapes: a 28 px batch-16 step
    has too little work per convolution to split between threads, while two runs side by side
    each keep a core busy (benchmarks/README.md: 2 x 1 against 1 x 2 on 2 cores).
    """
    jobs = min(cores, max(cpu_runs, 1))
    if available_memory is not None:
        jobs = min(jobs, max(1, available_memory // MEMORY_PER_WORKER))
    return max(1, jobs)


def wants_worker_processes(shares: list[float | None], jobs: int, gpus: int) -> bool:
    """Worker processes when more than one run can go at once: --jobs N, runs sharing a GPU, or
    GPU runs beside CPU runs (`shares`: each run's gpu_share). Otherwise the study runs in its
    own process, with live epoch progress."""
    gpu_shares = [share for share in shares if share is not None]
    if jobs > 1:
        return True
    if not gpu_shares:
        return False
    return len(gpu_shares) < len(shares) or gpu_slots(gpu_shares, gpus) > 1
