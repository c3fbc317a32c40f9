"""A torch run before its first epoch: its device and backends, split, layout, preprocessing
and device copy, what it trains with (recipe.py), its warm-up and FLOP count, and its training
step captured in CUDA graphs where it can be (cudagraphs.py). train.py runs the epochs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.preprocess import Preprocess
from mnistbench.data.sizes import Sizes
from mnistbench.data.splits import SplitData, split_for_run
from mnistbench.devices import resolve_device
from mnistbench.engines.torch.batches import DeviceData, count_batches, warm_up_shapes
from mnistbench.engines.torch.cudagraphs import (
    GPU_GATE,
    CapturedSteps,
    capture,
    graph_protocol,
    not_captured_because,
)
from mnistbench.engines.torch.loops import StepCounters, count_train_flops, warm_up
from mnistbench.engines.torch.memory_format import choose_layout
from mnistbench.engines.torch.recipe import (
    Training,
    configure_backends,
    make_preprocess,
    make_training,
)
from mnistbench.measure import forward_flops


def run_images(spec: RunSpec, sizes: Sizes) -> tuple[int, int]:
    """(images trained, images evaluated) by a run: the held-out evaluations (on the validation
    split, or on the test split when there is none) and the final test pass, which without a
    validation split is the last epoch's evaluation itself."""
    held_out_passes = spec.epochs if spec.eval_each_epoch else 1
    if sizes.val == 0:
        return spec.epochs * sizes.train, held_out_passes * sizes.test
    return spec.epochs * sizes.train, held_out_passes * sizes.val + sizes.test


@dataclass
class Setup:
    """A run before its first epoch: where it runs, on what data, and with what."""

    spec: RunSpec
    device: torch.device
    backends: dict[str, Any]  # the backend settings and the layout chosen, for the protocol
    split: SplitData
    preprocess: Preprocess
    data: DeviceData
    steps_per_epoch: int
    training: Training
    not_captured_because: str | None  # None: the training step is to be captured (CUDA)
    captured: CapturedSteps | None = None  # once capture_steps has captured it


def prepare(spec: RunSpec, data: Dataset, work: tuple[int, int] | None = None) -> Setup:
    """Device, threads and backends; the split, its preprocessing and device copy; the model,
    optimizer and schedule over the whole run. The layout is chosen for `work` (images trained,
    evaluated), by default this run's; a short run prepared for a longer one passes the longer one's."""
    device = resolve_device(spec.device)
    torch.set_num_threads(spec.threads)
    split = split_for_run(data, spec)
    sizes = Sizes(len(split.train_labels), len(split.val_labels), len(split.test_labels))
    default_work = run_images(spec, sizes)
    backends = configure_backends(device)  # first: cuDNN's benchmark mode for the timing
    with GPU_GATE.shared():  # it times steps: threads set, and never during a capture
        layout = choose_layout(spec, device, work=work or default_work)
    backends |= layout.protocol()
    preprocess = make_preprocess(spec, split, layout.channels_last)
    on_device = DeviceData.from_split(split, device)
    steps_per_epoch = count_batches(len(split.train_labels), spec.batch_size)
    steps = steps_per_epoch * spec.epochs
    why_eager = not_captured_because(spec, device)
    training = make_training(
        spec, device, preprocess.channels_last, steps, layout.matmul_small_maps,
        captured=why_eager is None,
    )  # fmt: skip
    return Setup(
        spec, device, backends, split, preprocess, on_device, steps_per_epoch, training, why_eager
    )


def capture_steps(setup: Setup) -> None:
    """Capture the run's training step in CUDA graphs, one per batch shape, when the run
    allows it (cudagraphs.py); the protocol records the outcome, a failed capture's reason
    too, and the run then trains eagerly."""
    if setup.not_captured_because is None:
        spec, data = setup.spec, setup.data
        gather = spec.loader == "memory" and spec.augment == "none"
        setup.captured, setup.not_captured_because = capture(
            setup.training, setup.preprocess, StepCounters.on(setup.device),
            warm_up_shapes(len(data.train_labels), spec.batch_size),
            tuple(data.train_images.shape[1:]),
            (data.train_images, data.train_labels) if gather else None,
        )  # fmt: skip
    setup.backends |= graph_protocol(setup.not_captured_because)


@dataclass(frozen=True)
class Flops:
    forward_per_image: int  # one forward pass (eval mode)
    train_per_image: int  # one training step's forward + backward


# FLOPs per image by what they depend on (architecture, input, precision, convolutions on small
# maps, device kind): counted once per process, since counting costs a second of Python
# dispatch per model while every run of a grid shares a few architectures.
_COUNTED: dict[tuple[Any, ...], Flops] = {}


def measure_flops_and_warm_up(setup: Setup) -> Flops:
    """Count FLOPs on real images at the real input size (the count does not depend on the
    batch or the weights: once per process and architecture), then warm up, both on a scratch
    copy of the model."""
    training, on_device, spec = setup.training, setup.data, setup.spec
    scratch = copy.deepcopy(training.model)
    architecture = (
        spec.model, spec.image_size, spec.channels, spec.stem, training.precision.label,
        setup.device.type, setup.backends.get("small_map_convs"),
    )  # fmt: skip
    if architecture not in _COUNTED:
        probe = (setup.preprocess(on_device.train_images[:2]), on_device.train_labels[:2])
        with GPU_GATE.exclusive():  # the counter's module hooks see every thread's modules
            forward = forward_flops(training.model, probe[0]) // 2
            train = count_train_flops(
                scratch, training.criterion, probe, training.precision, setup.device
            )
        _COUNTED[architecture] = Flops(forward, train)
    with GPU_GATE.shared():  # first uses of every shape: cuDNN times them
        warm_up(
            setup.spec, scratch, training.criterion, setup.preprocess, setup.device,
            (on_device.train_images, on_device.train_labels),
            (on_device.eval_images, on_device.eval_labels),
        )  # fmt: skip
    return _COUNTED[architecture]
