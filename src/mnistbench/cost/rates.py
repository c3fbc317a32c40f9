"""Seconds from work and rates: what a run's engine computes (`Work`), at the rates that runs
of its speed showed here, plus the wall time of many runs placed on parallel slots.

No torch here, and nothing that measures: probe.py times runs, forecast.py reads them from
the store.
"""

from __future__ import annotations

import heapq
import json
import statistics
from dataclasses import dataclass

from mnistbench.config import RunSpec
from mnistbench.data.registry import get_dataset
from mnistbench.data.sizes import Sizes, split_sizes
from mnistbench.engines import Work, engine_for


@dataclass(frozen=True)
class Observation:
    """What one run took (a probe, or a finished run in the store), and its work."""

    work: Work
    train_seconds: float  # the training (or fit) alone
    test_seconds: float  # the final test pass alone
    wall_seconds: float  # the whole run, set-up and saving included


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work, and per run, at one speed on one machine."""

    train: float
    evaluate: float
    run: float  # set-up, warm-up, saving: what a run costs besides its work
    source: str

    def seconds(self, work: Work) -> float:
        return self.run + work.train * self.train + work.evaluate * self.evaluate


def rates_from(seen: list[Observation], source: str) -> Rates | None:
    """The median rates of the observations (None without a usable one); what their wall time
    leaves beyond their work is the per-run cost."""
    seen = [o for o in seen if o.train_seconds > 0 and o.test_seconds > 0 and o.work.test > 0]
    if not seen:
        return None
    train = statistics.median(o.train_seconds / o.work.train for o in seen)
    evaluate = statistics.median(o.test_seconds / o.work.test for o in seen)
    rest = statistics.median(
        max(0.0, o.wall_seconds - o.train_seconds - o.work.evaluate * evaluate) for o in seen
    )
    return Rates(train, evaluate, rest, source)


def run_sizes(spec: RunSpec) -> Sizes:
    """The train/val/test sizes the spec's run will have, from the registry (no data loaded)."""
    info = get_dataset(spec.dataset)
    return split_sizes(
        spec.split, spec.val_fraction, info.sizes,
        train_limit=spec.train_limit, val_limit=spec.val_limit, test_limit=spec.test_limit,
    )  # fmt: skip


def run_work(spec: RunSpec, sizes: Sizes | None = None) -> Work:
    return engine_for(spec).work(spec, sizes or run_sizes(spec))


def speed_key(spec: RunSpec, device_kind: str) -> str:
    """The fields that decide the run's speed (RunSpec.speed_fields), with its device as the
    kind it ran or will run on."""
    fields = spec.speed_fields()
    if "device" in fields:
        fields["device"] = device_kind
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


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


def gpu_lane_seconds(shared: list[float], at_once: int, alone: list[float]) -> float:
    """Wall time of a GPU's lane of runs: those that share the GPU `at_once` at a time (their
    seconds at the rates measured while sharing that way), then those that must run alone (a
    timed comparison such as Q2's GPU rows), one after another."""
    return (makespan(shared, at_once) if shared else 0.0) + sum(alone)
