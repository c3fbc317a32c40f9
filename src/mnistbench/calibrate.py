"""Calibration: what one shape of run costs on this machine, timed in seconds and cached.

A ResNet shape (model, input, batch, precision, optimizer, device, threads, ...) is timed with
the run's own pieces: `engines.torch.prepare.prepare` (split, preprocessing, model, optimizer, precision,
memory format, threads), `measure_flops_and_warm_up` (FLOP count and warm-up, as a run does
them), then about a second of real training steps, one evaluation batch, and the epoch
checkpoint and final-model writes, on random images of the real dataset's size. An SVM shape
(dataset, kernel, C, gamma, features, back-end) is timed with an SVM engine `run` fit of 2,000
real images, scaled to the run's size by the back-end's measured growth (SVM_GROWTH).

Each result is cached in a JSON file next to the store (`calibration.json`), keyed by machine
(CPU model, device, threads, torch version) and shape, so only the first estimate of a shape on
a machine pays for it; delete the file to measure again. estimate.py turns the rates into
seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from mnistbench.config import RunSpec, default_threads
from mnistbench.data.load import Dataset, load_dataset
from mnistbench.data.registry import get_dataset
from mnistbench.devices import auto_device, resolve_device
from mnistbench.engines.torch import prepare as prepare_torch
from mnistbench.engines.torch.batches import epoch_augment
from mnistbench.engines.torch.checkpoint import save_checkpoint, save_final_model
from mnistbench.engines.torch.loops import Diverged, eval_batch_size, evaluate, train_one_epoch
from mnistbench.engines.torch.memory_format import EVAL_PROBE_BATCH_LARGE, choose_layout
from mnistbench.engines.torch.recipe import make_precision
from mnistbench.estimate import Sizes, SvmRates, TorchRates, split_sizes, torch_run_images
from mnistbench.files import atomic_write_text
from mnistbench.measure import (
    Stopwatch,
    environment,
    machine_key,
    peak_memory,
    reset_peak_memory,
)
from mnistbench.models import resolve_svm_backend, svm_backend_version

CACHE_VERSION = 2  # raised when what a cached entry means changes
CACHE_NAME = "calibration.json"
TRAIN_SECONDS = 1.0  # timed training steps per ResNet shape (after the warm-up)
MIN_STEPS, MAX_STEPS = 1, 40  # timed steps: one at least, then until TRAIN_SECONDS
SVM_TRAIN_IMAGES = 2000  # the reference fit (the run's own size when it is smaller)
SVM_WARM_UP_IMAGES = 200  # a first fit per back-end and process: imports, thread pools
SVM_TEST_IMAGES = 500
# (fit, predict) growth exponents in the training images per back-end, measured from 2k images
# up (benchmarks/README.md); the ratio of two small fits scattered too much to use.
SVM_GROWTH = {"sklearnex": (1.5, 0.4), "sklearn": (1.9, 0.8)}
SVM_DEFAULT_GROWTH = (1.7, 0.6)


def cache_path_for(store_path: Path) -> Path:
    """The calibration cache lives next to the results store."""
    return store_path.parent / CACHE_NAME


def run_sizes(spec: RunSpec) -> Sizes:
    """The train/val/test sizes the spec's run will have, from the registry (no data loaded)."""
    info = get_dataset(spec.dataset)
    return split_sizes(spec.split, spec.val_fraction, spec.train_limit, spec.test_limit, info.sizes)


def torch_shape_key(spec: RunSpec) -> str:
    """The spec's fields that change a ResNet run's speed per image (not its length)."""
    precision = make_precision(spec.amp, torch.device(_device_kind(spec.device))).label
    # "auto" resolves the same way for every run of a shape on one machine
    layout = f"{spec.memory_format}/{spec.small_map_convs}"
    optimizer = "sgd" if spec.optimizer == "sgd" else "adam"  # adam and adamw: one update cost
    # The levers added later enter only when used, so earlier calibrations keep their keys
    levers = (" ema" if spec.ema_decay else "") + (f" tta-{spec.tta}" if spec.tta != "none" else "")
    return (
        f"{spec.model} {spec.image_size}px x{spec.channels} {spec.stem} B{spec.batch_size} "
        f"{precision} {optimizer} {layout} {spec.loader} {spec.augment}{levers}"
    )


def svm_shape_key(spec: RunSpec, backend: str | None = None) -> str:
    """The spec's fields that change an SVM's cost, with the back-end it fits on here (or, for a
    stored result, `backend`: the label it recorded, e.g. 'sklearnex 2026.2.0')."""
    if backend is None:
        resolved = resolve_svm_backend(spec.svm_backend)
        backend = f"{resolved} {svm_backend_version(resolved)}"
    return (
        f"svm {spec.dataset} {spec.kernel} C={spec.C:g} gamma={spec.gamma} degree={spec.degree} "
        f"{spec.features} {backend}"
    )


def _device_kind(device: str) -> str:
    return auto_device() if device == "auto" else device.split(":")[0]


class Calibration:
    """Rates per shape on this machine: from the cache file, else measured and written there.

    `dataset(name)` gives the data a calibration runs on: by default random images of the real
    dataset's size for ResNets and the real dataset (under `root`) for SVMs.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        root: str | None = None,
        dataset: Callable[[str], Dataset] | None = None,
        log: Callable[[str], None] | None = None,
        train_seconds: float | None = None,
    ) -> None:
        self.path, self.root = path, root
        self.train_seconds = TRAIN_SECONDS if train_seconds is None else train_seconds
        self._dataset = dataset
        self.log = log or (lambda message: None)
        self.entries: dict[str, dict[str, dict[str, Any]]] = self._read()
        self.measured: list[str] = []  # the shapes this object timed (not found in the cache)

    def _read(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            document = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # unreadable: measure again and overwrite it
        return document.get("machines", {}) if document.get("version") == CACHE_VERSION else {}

    def _lookup(self, machine: str, shape: str) -> dict[str, Any] | None:
        return self.entries.get(machine, {}).get(shape)

    def _store(self, machine: str, shape: str, values: dict[str, Any]) -> None:
        on_disk = self._read()  # another process may have added shapes meanwhile: keep them
        for name, shapes in self.entries.items():
            on_disk[name] = on_disk.get(name, {}) | shapes
        self.entries = on_disk
        self.entries.setdefault(machine, {})[shape] = values | {"measured_at": time.time()}
        self.measured.append(shape)
        if self.path is not None:
            document = {"version": CACHE_VERSION, "machines": self.entries}
            atomic_write_text(self.path, json.dumps(document, indent=1, sort_keys=True))

    # --- ResNets ---

    def cached_torch(self, spec: RunSpec) -> TorchRates | None:
        entry = self._lookup(
            machine_key(_device_kind(spec.device), spec.threads), torch_shape_key(spec)
        )
        return _rates(TorchRates, entry) if entry else None

    def torch_rates(self, spec: RunSpec) -> TorchRates:
        cached = self.cached_torch(spec)
        if cached is not None:
            return cached
        shape = torch_shape_key(spec)
        self.log(f"calibrating {shape} ({spec.threads} threads) on {_device_kind(spec.device)}")
        data = self._dataset(spec.dataset) if self._dataset else _random_images(spec.dataset)
        rates = time_torch_shape(spec, data, self.train_seconds)
        machine = machine_key(_device_kind(spec.device), spec.threads)
        self._store(machine, shape, {"kind": "torch", **dataclasses.asdict(rates)})
        return rates

    # --- SVMs ---

    def cached_svm(self, spec: RunSpec) -> SvmRates | None:
        entry = self._lookup(machine_key("cpu", spec.threads), svm_shape_key(spec))
        return _rates(SvmRates, entry) if entry else None

    def svm_rates(self, spec: RunSpec) -> SvmRates:
        """Cached rates, unless measured on fewer training images than this run's (or 2,000)."""
        wanted = min(run_sizes(spec).train, SVM_TRAIN_IMAGES)
        cached = self.cached_svm(spec)
        if cached is not None and cached.n_train >= wanted:
            return cached
        self.log(f"calibrating {svm_shape_key(spec)} ({spec.threads} threads)")
        data = self._dataset(spec.dataset) if self._dataset else _real_data(spec.dataset, self.root)
        rates = time_svm_shape(spec, data)
        shape = svm_shape_key(spec)
        self._store(
            machine_key("cpu", spec.threads), shape, {"kind": "svm", **dataclasses.asdict(rates)}
        )
        return rates

    # --- once per `study run` ---

    def startup_seconds(self, with_svm: bool) -> float:
        """A `study run` process's start: Python, mnistbench, torch (and the SVM back-end)."""
        shape = "startup" + (" with svm" if with_svm else "")
        machine = machine_key("cpu", default_threads())
        entry = self._lookup(machine, shape)
        if entry is None:
            entry = {"seconds": time_startup(with_svm)}
            self._store(machine, shape, entry)
        return float(entry["seconds"])

    def load_seconds(self, name: str) -> float:
        """Loading a dataset (0 when it is not here yet: fetching is not estimated)."""
        machine, shape = machine_key("cpu", default_threads()), f"load {name}"
        entry = self._lookup(machine, shape)
        if entry is None:
            started = time.perf_counter()
            try:
                load_dataset(name, self.root)  # not _real_data: its cache would time nothing
            except FileNotFoundError:
                return 0.0
            entry = {"seconds": time.perf_counter() - started}
            self._store(machine, shape, entry)
        return float(entry["seconds"])


def _rates(kind: type, entry: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    try:
        return kind(**{name: value for name, value in entry.items() if name in names})
    except TypeError:  # written by another version: measure again
        return None


@functools.lru_cache(maxsize=2)
def _random_images(name: str) -> Dataset:
    """Random images and labels of the real dataset's size (what a run's split costs)."""
    info = get_dataset(name)
    generator = torch.Generator().manual_seed(0)
    n_train, n_test = info.sizes["train"], info.sizes["test"]
    images = torch.randint(
        0, 256, (n_train + n_test, 28, 28), dtype=torch.uint8, generator=generator
    )
    labels = torch.arange(n_train + n_test) % info.num_classes
    return Dataset(info, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


@functools.lru_cache(maxsize=2)
def _real_data(name: str, root: str | None) -> Dataset:
    return load_dataset(name, root)


# --- Timing -----------------------------------------------------------------------------------


def time_torch_shape(spec: RunSpec, data: Dataset, seconds: float = TRAIN_SECONDS) -> TorchRates:
    """Rates of the spec's shape: its run's own set-up, warm-up, steps, evaluation and writes."""
    probe = spec.replace(
        train_limit=spec.batch_size * MAX_STEPS,
        test_limit=eval_batch_size(spec.image_size),
        epochs=1,
    )
    threads = torch.get_num_threads()
    sizes = run_sizes(spec)
    work = torch_run_images(spec.epochs, sizes.train, sizes.val, sizes.test, spec.eval_each_epoch)
    try:
        # The layout the real run will train in, timed (once per machine and shape) before the
        # clock starts: real runs find it cached, so it is no part of their set-up time.
        torch.set_num_threads(spec.threads)
        choose_layout(spec, resolve_device(spec.device), work=work)
        started = time.perf_counter()
        setup = prepare_torch.prepare(probe, data, work=work)
        prepare_torch.measure_flops_and_warm_up(setup)
        set_up = time.perf_counter() - started
        train_ips = _timed_steps(setup, seconds)
        eval_ips = _timed_evaluation(setup)
        checkpoint_seconds, final_seconds = _timed_writes(setup)
        started = time.perf_counter()
        reset_peak_memory(setup.device)  # a gc pass on a CPU
        peak_memory(setup.device)
        environment(setup.device, spec.threads)  # what every result records (a git call)
        set_up += time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return TorchRates(train_ips, eval_ips, set_up + final_seconds, checkpoint_seconds)


def _timed_steps(setup: prepare_torch.Setup, seconds: float) -> float:
    """Training images/s over at least MIN_STEPS steps and about `seconds`. On a CPU, from the
    median step: a burst of other work on the machine during one step does not count."""
    data, size, stamps = setup.data, setup.spec.batch_size, []  # when each step began
    watch = Stopwatch(setup.device)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(MAX_STEPS):
            stamps.append(time.perf_counter())
            if step >= MIN_STEPS and stamps[-1] - stamps[0] > seconds:
                stamps.pop()  # not a step
                return
            chosen = slice(step * size, (step + 1) * size)
            yield data.train_images[chosen], data.train_labels[chosen]

    training = setup.training
    watch.start()
    with contextlib.suppress(Diverged):  # the speed is what is measured here
        train_one_epoch(
            training.model, training.criterion, training.optimizer, batches(), setup.preprocess,
            setup.device, training.precision, epoch=1, scheduler=training.scheduler,
            augment=epoch_augment(setup.spec, 1, setup.device), ema=training.ema,
        )  # fmt: skip
    total = watch.stop()
    steps = [end - begin for begin, end in itertools.pairwise(stamps)]
    if setup.device.type == "cpu" and len(steps) >= 3:  # elsewhere the host runs ahead
        return size / statistics.median(steps)
    return size * len(stamps) / total


def _timed_evaluation(setup: prepare_torch.Setup) -> float:
    """Evaluation images/s over one evaluation batch (forward only, as a run evaluates; fewer
    images above 64 px)."""
    size = setup.spec.image_size
    count = min(len(setup.data.eval_labels), eval_batch_size(size))
    if size > 64:  # per-image work dominates there: a few images tell the rate
        count = min(count, EVAL_PROBE_BATCH_LARGE)
    watch = Stopwatch(setup.device)
    watch.start()
    evaluate(
        setup.training.model, setup.data.eval_images[:count], setup.data.eval_labels[:count],
        setup.preprocess, setup.device, setup.training.precision, count,
        tta=setup.spec.tta == "flip",
    )  # fmt: skip
    return count / watch.stop()


def _timed_writes(setup: prepare_torch.Setup) -> tuple[float, float]:
    """Seconds to write an epoch checkpoint and the final model."""
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        save_checkpoint(Path(directory) / "c.pt", setup.spec, setup.training, 1, [], 0.0)
        checkpoint = time.perf_counter() - started
        started = time.perf_counter()
        save_final_model(
            Path(directory) / "m.pt", setup.spec, setup.training.model, setup.preprocess
        )
        return checkpoint, time.perf_counter() - started


_warm_svm_backends: set[str] = set()


def time_svm_shape(spec: RunSpec, data: Dataset) -> SvmRates:
    """One fit of the spec at SVM_TRAIN_IMAGES (after a tiny warm-up fit, once per back-end):
    its wall time beyond fit and predict is the per-run overhead, and the back-end's growth
    exponents scale it to the run's size."""
    from mnistbench.engines.svm import (
        train as train_svm,  # sklearn: imported when an SVM is calibrated
    )

    sizes = run_sizes(spec)
    backend = resolve_svm_backend(spec.svm_backend)
    test = min(sizes.test, SVM_TEST_IMAGES)
    if backend not in _warm_svm_backends:
        train_svm.run(spec.replace(train_limit=SVM_WARM_UP_IMAGES, test_limit=test), data)
        _warm_svm_backends.add(backend)
    probe = spec.replace(train_limit=min(sizes.train, SVM_TRAIN_IMAGES), test_limit=test)
    started = time.perf_counter()
    result = train_svm.run(probe, data)
    wall = time.perf_counter() - started
    run = result.protocol["sizes"]
    predicted = run["test"] + run["val"]
    predict = result.eval_seconds * predicted / max(run["test"], 1)
    fit_exponent, predict_exponent = SVM_GROWTH.get(backend, SVM_DEFAULT_GROWTH)
    return SvmRates(
        n_train=run["train"],
        fit_seconds=result.train_seconds,
        fit_exponent=fit_exponent,
        n_predicted=predicted,
        predict_seconds=predict,
        predict_exponent=predict_exponent,
        overhead_seconds=max(0.0, wall - result.train_seconds - predict),
    )


def time_startup(with_svm: bool) -> float:
    """Seconds for a fresh Python to import what `study run` imports before its first run."""
    modules = ", ".join(
        f"mnistbench.{name}"
        for name in ("cli.study", "study.run", "engines.torch.train", "engines.svm.train")
    )
    code = f"import {modules}"
    if with_svm:
        code += "\ntry:\n    import sklearnex.svm\nexcept ImportError:\n    pass"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=300)
    return time.perf_counter() - started
