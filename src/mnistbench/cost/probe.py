"""Probes: a short real run of the engine at a spec's speed, timed once per machine and cached.

A probe is `Engine.probe(spec)`, run by the engine itself: its own set-up, warm-up, a few
training steps (or a small fit) and one test pass, without writing its model. Its timings and its work are an Observation, which rates.py scales to the run's
work. Nothing here knows an engine's internals.

Each probe is cached in a JSON file next to the store (`calibration.json`), keyed by machine
(CPU, device, threads, torch) and speed key, so only the first estimate of a speed on a machine
pays for it (about a second); delete the file to measure again. Probes run on the real dataset
when it is here, else on random images of its size (a ResNet's speed does not depend on them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec, default_threads
from mnistbench.cost.rates import Observation, run_work, speed_key
from mnistbench.data.load import Dataset, load_dataset
from mnistbench.data.registry import get_dataset
from mnistbench.data.sizes import Sizes
from mnistbench.devices import auto_device
from mnistbench.engines import Engine, Work, engine_for
from mnistbench.files import atomic_write_text
from mnistbench.measure import machine_key

CACHE_VERSION = 3  # 3: probe observations by speed key (2: per-shape rates)
CACHE_NAME = "calibration.json"
WARM_UP_IMAGES = 32  # an engine's first, untimed run in a process: imports and thread pools


def cache_path_for(store_path: Path) -> Path:
    """The probe cache lives next to the results store."""
    return store_path.parent / CACHE_NAME


def device_kind(spec: RunSpec) -> str:
    """The kind of device the run computes on here ('auto' resolved)."""
    device = engine_for(spec).device(spec)
    return auto_device() if device == "auto" else device.split(":")[0]


def machine_of(spec: RunSpec) -> str:
    return machine_key(device_kind(spec), spec.threads)


class Probes:
    """Observations per speed on this machine: from the cache file, else probed and written
    there. `dataset(name)` gives the data a probe runs on (default: `probe_data`, real images
    where they decide the speed)."""

    def __init__(
        self,
        path: Path | None,
        *,
        root: str | None = None,
        dataset: Callable[[str], Dataset] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self._dataset = dataset
        self.root = root
        self.log = log or (lambda message: None)
        self.entries: dict[str, dict[str, dict[str, Any]]] = self._read()
        self.probed: list[str] = []  # the speed keys this object timed (not found in the cache)

    def _read(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # unreadable: measure again and overwrite it
        return document.get("machines", {}) if document.get("version") == CACHE_VERSION else {}

    def _lookup(self, machine: str, key: str) -> dict[str, Any] | None:
        return self.entries.get(machine, {}).get(key)

    def _store(self, machine: str, key: str, values: dict[str, Any]) -> None:
        on_disk = self._read()  # another process may have added entries meanwhile: keep them
        for name, entries in self.entries.items():
            on_disk[name] = on_disk.get(name, {}) | entries
        self.entries = on_disk
        self.entries.setdefault(machine, {})[key] = values | {"measured_at": time.time()}
        if self.path is not None:
            document = {"version": CACHE_VERSION, "machines": self.entries}
            atomic_write_text(self.path, json.dumps(document, indent=1, sort_keys=True))

    def cached(self, spec: RunSpec) -> Observation | None:
        return self.cached_by_key(machine_of(spec), speed_key(spec, device_kind(spec)))

    def cached_by_key(self, machine: str, key: str) -> Observation | None:
        entry = self._lookup(machine, key)
        if entry is None:
            return None
        try:
            return Observation(
                Work(**entry["work"]), entry["train_seconds"], entry["test_seconds"],
                entry["wall_seconds"],
            )  # fmt: skip
        except (KeyError, TypeError):  # written by another version: probe again
            return None

    def observation(self, spec: RunSpec) -> Observation:
        """The spec's speed, observed: cached, else probed now (and cached)."""
        found = self.cached(spec)
        if found is not None:
            return found
        key = speed_key(spec, device_kind(spec))
        self.log(f"timing a short run of {spec.label()} ({spec.threads} threads)")
        if self._dataset is not None:
            data = self._dataset(spec.dataset)
        else:  # an SVM's speed depends on its images: never random ones
            data = probe_data(spec.dataset, self.root, "dataset" not in spec.speed_fields())
        seen = probe(spec, data)
        self._store(machine_of(spec), key, dataclasses.asdict(seen))
        self.probed.append(key)
        return seen

    def load_seconds(self, name: str) -> float:
        """Loading a dataset (0 when it is not here yet: fetching is not estimated)."""
        machine, key = machine_key("cpu", default_threads()), f"load {name}"
        entry = self._lookup(machine, key)
        if entry is None:
            if (name, self.root) not in _load_seconds:
                try:
                    _timed_load(name, self.root)
                except FileNotFoundError:
                    return 0.0
            entry = {"seconds": _load_seconds[(name, self.root)]}
            self._store(machine, key, entry)
        return float(entry["seconds"])


_warm_engines: set[tuple[str, str]] = set()  # (engine, device kind) probed in this process


def probe(spec: RunSpec, data: Dataset) -> Observation:
    """Run the engine's probe of the spec, timed; its failure is the estimate's failure. An
    engine's first probe in a process is preceded by a smaller, untimed run: its imports and
    thread pools are a process's cost (the study's start-up), not each run's. A probe keeps no
    files: writing a model and a checkpoint (a few tenths of a second for a ResNet, a few per
    cent of a one-epoch quick run) would double a dry run's time, so estimates leave it out."""
    import torch  # the probe runs an engine, and engines set torch's threads: restored after

    engine, threads = engine_for(spec), torch.get_num_threads()
    short = engine.probe(spec)
    try:
        if (spec.engine(), device_kind(spec)) not in _warm_engines:
            _warm_up(engine, short, data)
            _warm_engines.add((spec.engine(), device_kind(spec)))
        started = time.perf_counter()
        result = engine.run(short, data)
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    if result.status != "ok" or not result.train_seconds or not result.eval_seconds:
        raise RuntimeError(f"its probe run ended {result.status}: {result.message}")
    ran = Sizes(*(int(result.protocol["sizes"][part]) for part in ("train", "val", "test")))
    return Observation(run_work(short, ran), result.train_seconds, result.eval_seconds, wall)


def _warm_up(engine: Engine, short: RunSpec, data: Dataset) -> None:
    """A small untimed run; one that cannot run so small (a PCA wider than its images) leaves
    the warming to the probe itself."""
    with contextlib.suppress(Exception):
        engine.run(short.replace(train_limit=WARM_UP_IMAGES, test_limit=WARM_UP_IMAGES), data)


@functools.lru_cache(maxsize=4)
def probe_data(name: str, root: str | None = None, random_ok: bool = True) -> Dataset:
    """The dataset when it is here; else, `random_ok`, random images and labels of its size,
    which time a run whose speed does not depend on its images (a ResNet's). Without the
    dataset and random_ok: DatasetNotFoundError, which says how to fetch it."""
    try:
        return _timed_load(name, root)
    except FileNotFoundError:
        if not random_ok:
            raise
        return _random_images(name)


# Seconds each dataset took to load in this process: a dry run loads it for its probes, and
# its study overhead (Probes.load_seconds) reads that time instead of loading it again.
_load_seconds: dict[tuple[str, str | None], float] = {}


def _timed_load(name: str, root: str | None) -> Dataset:
    started = time.perf_counter()
    data = load_dataset(name, root)
    _load_seconds[(name, root)] = time.perf_counter() - started
    return data


def _random_images(name: str) -> Dataset:
    import torch

    info = get_dataset(name)
    generator = torch.Generator().manual_seed(0)
    n_train, n_test = info.sizes["train"], info.sizes["test"]
    images = torch.randint(
        0, 256, (n_train + n_test, 28, 28), dtype=torch.uint8, generator=generator
    )
    labels = torch.arange(n_train + n_test) % info.num_classes
    return Dataset(info, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
