"""memory_format = "auto": NCHW or NHWC (channels_last), whichever runs the run faster here.

Which layout oneDNN (CPU) or cuDNN (GPU) runs faster depends on the machine, not only on the
shape (benchmarks/README.md has the CPUs measured). So "auto" is decided by a short
measurement: a few training
steps and a few evaluation batches in each layout, alternated so that a burst of other work on
the machine slows both alike, the fastest of each kept. The layout chosen is the one in which
the run's own work (images trained, images evaluated) takes less time: one layout can train
faster while the other evaluates faster. The rates are cached
per machine and shape in `layouts.json` under the user's cache folder (MNISTBENCH_CACHE_DIR,
else $XDG_CACHE_HOME/mnistbench, else ~/.cache/mnistbench), so only the first run of a shape on
a machine pays for it (a few seconds at 28 px). The choice and its measured rates go into the
run's protocol.

The same probe times the training step with convolutions on tiny maps as matrix products
(small_map_convs, smallmaps.py) where the model has such maps, and keeps them where they win
here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.engines.torch.loops import eval_batch_size
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.recipe import GLOBAL_RNG, Precision, make_optimizer, make_precision
from mnistbench.engines.torch.smallmaps import count_small_map_convs, use_matmul_for_small_maps
from mnistbench.files import atomic_write_text
from mnistbench.measure import machine_key, synchronize

CACHE_NAME = "layouts.json"
# Raised when what a cached entry means changes (2: evaluation rates; 3: matmul on small maps).
CACHE_VERSION = 3
TIMED_SECONDS = 0.6  # per variant, after one warm-up step each
MIN_STEPS, MAX_STEPS = 3, 30  # timed steps per layout
# Evaluation is timed on batches of up to this many images: about a second at 28 px; above 64 px
# (slow per image) a few images tell the rate.
EVAL_PROBE_BATCH, EVAL_PROBE_BATCH_LARGE = 256, 32
# channels_last (or matmul on small maps) must win by this much to be chosen: within it the two
# are a wash, and NCHW with the backend's convolutions is what every other tool runs.
MARGIN = 1.03

StepTimer = Callable[[RunSpec, torch.device], dict[str, float]]


@dataclass(frozen=True)
class LayoutChoice:
    """The layout a run trains in, and why."""

    channels_last: bool
    reason: str  # "set in the spec", "measured now" or "measured earlier (cached)"
    images_per_second: dict[str, float] | None = None  # per variant, when measured
    matmul_small_maps: bool = False  # small_map_convs: train tiny maps as matrix products

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def protocol(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "memory_format": self.memory_format,
            "small_map_convs": "matmul" if self.matmul_small_maps else "conv",
        }
        if self.images_per_second is not None:
            entry["memory_format_choice"] = {"reason": self.reason, **self.images_per_second}
        return entry


def cache_dir() -> Path:
    """Where per-machine measurements are kept between runs and processes."""
    if os.environ.get("MNISTBENCH_CACHE_DIR"):
        return Path(os.environ["MNISTBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistbench"


def shape_key(spec: RunSpec, device: torch.device, precision: Precision) -> str:
    """What the layout's speed depends on: the machine and the step's shape."""
    machine = machine_key(str(device), spec.threads)
    return (
        f"{machine} | {spec.model} {spec.image_size}px x{spec.channels} {spec.stem} "
        f"B{spec.batch_size} {precision.label}"
    )


def choose_layout(
    spec: RunSpec,
    device: torch.device,
    *,
    work: tuple[int, int] = (1, 0),
    cache: Path | None = None,
    timer: StepTimer | None = None,
) -> LayoutChoice:
    """The spec's layout and small-map convolutions: as set, or for "auto" the ones that do
    `work` (images trained, images evaluated) faster here, from rates cached or measured now."""
    if spec.memory_format != "auto" and spec.small_map_convs != "auto":
        channels_last, matmul = spec.memory_format == "channels_last", spec.small_map_convs
        return LayoutChoice(channels_last, "set in the spec", matmul_small_maps=matmul == "matmul")
    path = cache or cache_dir() / CACHE_NAME
    key = shape_key(spec, device, make_precision(spec.amp, device))
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process measures a shape while the others wait for its answer: worker processes of a
    # study starting the same shape together would otherwise time each other.
    with FileLock(str(path) + ".lock"):
        cached = _read_cache(path).get(key)
        if cached is not None:
            return _decide(spec, cached, work, "measured earlier (cached)")
        rates = (timer or time_layouts)(spec, device)
        entries = _read_cache(path)
        entries[key] = rates
        atomic_write_text(path, json.dumps({"version": CACHE_VERSION, "entries": entries}))
    return _decide(spec, rates, work, "measured now")


def cached_choice(spec: RunSpec, device: torch.device, work: tuple[int, int]) -> LayoutChoice:
    """The choice `choose_layout` would make from the cache alone; without a cached entry for
    an "auto" shape, NCHW with the backend's convolutions (what every other tool runs)."""
    if spec.memory_format != "auto" and spec.small_map_convs != "auto":
        return choose_layout(spec, device, work=work)
    key = shape_key(spec, device, make_precision(spec.amp, device))
    cached = _read_cache(cache_dir() / CACHE_NAME).get(key)
    if cached is not None:
        return _decide(spec, cached, work, "measured earlier (cached)")
    channels_last = spec.memory_format == "channels_last"
    return LayoutChoice(channels_last, "not measured yet", None, spec.small_map_convs == "matmul")


def _decide(
    spec: RunSpec, rates: dict[str, float], work: tuple[int, int], reason: str
) -> LayoutChoice:
    """Within what the spec sets: matmul on small maps when it trains MARGIN faster in a layout,
    and channels_last when the work takes MARGIN less time in it. Rates: training img/s per
    layout ('<layout>', '<layout> matmul' where the model has small maps) and evaluation img/s
    as 'eval <layout>' (where measured)."""
    trained, evaluated = work

    def matmul(layout: str) -> bool:
        if spec.small_map_convs != "auto":
            return spec.small_map_convs == "matmul"
        return rates.get(f"{layout} matmul", 0.0) > MARGIN * rates[layout]

    def seconds(layout: str) -> float:
        evaluating = evaluated / rates[f"eval {layout}"] if f"eval {layout}" in rates else 0.0
        training = rates.get(f"{layout} matmul", rates[layout]) if matmul(layout) else rates[layout]
        return trained / training + evaluating

    if spec.memory_format == "auto":
        channels_last = seconds("contiguous") > MARGIN * seconds("channels_last")
    else:
        channels_last = spec.memory_format == "channels_last"
    layout = "channels_last" if channels_last else "contiguous"
    return LayoutChoice(channels_last, reason, dict(rates), matmul(layout))


def _read_cache(path: Path) -> dict[str, dict[str, float]]:
    """The cached entries; an unreadable or older cache counts as empty (it is measured again)."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("version") != CACHE_VERSION:
        return {}
    return dict(content.get("entries", {}))


def time_layouts(spec: RunSpec, device: torch.device) -> dict[str, float]:
    """Images per second of the spec's training step in each layout (and with matmul on small
    maps, '<layout> matmul', where the model has them), and of an evaluation batch
    ('eval <layout>'), on random data, each variant's fastest step. torch's RNG is left as it
    was: the run's seeded draws must not depend on whether this measurement ran."""
    devices = [device] if device.type == "cuda" else []
    largest = EVAL_PROBE_BATCH if spec.image_size <= 64 else EVAL_PROBE_BATCH_LARGE
    probe = min(eval_batch_size(spec.image_size), largest)
    with GLOBAL_RNG, torch.random.fork_rng(devices=devices):
        model = build_resnet(spec.model, channels=spec.channels, stem=spec.stem)
        variants = [(name, False) for name in LAYOUTS]
        if count_small_map_convs(model, spec.channels, spec.image_size):
            variants += [(name, True) for name in LAYOUTS]
        train = {
            f"{name} matmul" if matmul else name: _make_step(
                spec, device, name == "channels_last", matmul
            )
            for name, matmul in variants
        }
        rates = _alternate(train, spec.batch_size, device)
        evaluate = {
            name: _make_eval(spec, device, name == "channels_last", probe) for name in LAYOUTS
        }
        rates |= {
            f"eval {name}": rate for name, rate in _alternate(evaluate, probe, device).items()
        }
    return rates


def _alternate(
    steps: dict[str, Callable[[], None]], batch: int, device: torch.device
) -> dict[str, float]:
    """Images per second of each step, timed in turn after one warm-up call each."""
    for step in steps.values():
        step()  # warm-up: allocations, kernel selection
    times: dict[str, list[float]] = {name: [] for name in steps}
    started = time.perf_counter()
    budget = len(steps) * TIMED_SECONDS
    while len(times["contiguous"]) < MAX_STEPS and (
        len(times["contiguous"]) < MIN_STEPS or time.perf_counter() - started < budget
    ):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    # The fastest step, not the median: other work on the machine only ever adds time, and a
    # burst of it during a few steps must not decide (and be cached as) this machine's layout.
    return {name: round(batch / min(t), 1) for name, t in times.items()}


LAYOUTS = ("contiguous", "channels_last")


def _make_step(
    spec: RunSpec, device: torch.device, channels_last: bool, matmul: bool
) -> Callable[[], None]:
    """One training step of the spec's model, optimizer and precision on a fixed random batch."""
    model, images = _model_and_batch(spec, device, channels_last, spec.batch_size)
    if matmul:
        use_matmul_for_small_maps(model)
    labels = torch.randint(0, 10, (spec.batch_size,), device=device)
    precision = make_precision(spec.amp, device)
    optimizer = make_optimizer(spec, model, device, grad_scaler=precision.scaler is not None)
    criterion = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = criterion(model(images), labels)
        precision.backward_and_step(loss, optimizer)

    return step


def _make_eval(
    spec: RunSpec, device: torch.device, channels_last: bool, batch: int
) -> Callable[[], None]:
    """One evaluation batch of the spec's model and precision: forward only, no autograd."""
    model, images = _model_and_batch(spec, device, channels_last, batch)
    model.eval()
    precision = make_precision(spec.amp, device)

    def forward() -> None:
        with torch.inference_mode(), precision.autocast(device):
            model(images)

    return forward


def _model_and_batch(
    spec: RunSpec, device: torch.device, channels_last: bool, batch: int
) -> tuple[nn.Module, torch.Tensor]:
    """The spec's model and a random batch of its input shape, in the layout timed."""
    model = build_resnet(spec.model, channels=spec.channels, stem=spec.stem).to(device)
    images = torch.randn(batch, spec.channels, spec.image_size, spec.image_size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    return model, images


def _timed(step: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - started
