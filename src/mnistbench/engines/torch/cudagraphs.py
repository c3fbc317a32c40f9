"""The CUDA training step captured in CUDA graphs: one graph replay per step.

At the published protocol's small batches an eager step is bound by kernel launches and host
work, not by the GPU. Captured, the whole step (batch gather, preprocessing and the resize to
224 px, forward, backward, the GradScaler's unscale and inf check, the optimizer step and the
loss-scale update, and the running metrics) replays from one call, as in PyTorch's "whole
network capture" and NVIDIA Modulus's StaticCaptureTraining.

What keeps it the same training:
- The GradScaler is torch's own, called inside the graph. With a fused optimizer its overflow
  check and its skip happen on the device (the optimizer gets `found_inf`), so a step with inf
  or NaN gradients is skipped and the scale backs off or grows with torch's constants, and no
  step waits for the host. The scale is read only at the end of an epoch.
- Fused SGD skips a step whose gradients overflowed, except its very first: it then allocates
  its momentum buffers uninitialised and leaves them so (the fp16 divergence recorded in
  recipe.make_optimizer). Here every optimizer state exists, zeroed, before the capture, and a
  zero momentum buffer makes the first real step what SGD's first step is (buffer = gradient).
- The warm-up steps that a capture needs run on the real model and optimizer (their lazy state
  and cuDNN's autotuning must exist at fixed addresses), so everything they change (weights,
  batch-norm statistics, optimizer state, loss scale) is put back in place afterwards.
- One graph per batch shape: the full batch and the epoch's last partial one.

Where a run cannot be captured, `not_captured_because` says why and the run trains eagerly;
the protocol records which, and why.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.amp.grad_scaler import _refresh_per_optimizer_state

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import Preprocess
from mnistbench.engines.torch.loops import StepCounters, training_step
from mnistbench.engines.torch.recipe import Training

GRAPH_WARM_UP_STEPS = 3  # eager steps on a side stream before each capture (torch's notes)


class CaptureGate:
    """Runs sharing a process (sharedgpu.py) capture one at a time, and never while another
    run does GPU work that may synchronise the whole device: a first use of a shape (cuDNN's
    benchmark mode times its algorithms, with a device-wide synchronisation that would
    invalidate a capture in progress), a layout probe, a FLOP count (its module hooks are
    process-wide), an evaluation. Such work holds the gate `shared`; a capture holds it
    `exclusive`, and waiting captures go first. Graph replays need no gate."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sharing, self._exclusive, self._waiting = 0, False, 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive and not self._waiting)
            self._sharing += 1
        try:
            yield
        finally:
            with self._condition:
                self._sharing -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            self._condition.wait_for(lambda: not self._exclusive and not self._sharing)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


GPU_GATE = CaptureGate()


def not_captured_because(spec: RunSpec, device: torch.device) -> str | None:
    """None when this run's training step can be captured here, else why it runs eagerly."""
    if device.type != "cuda":
        return f"not a CUDA run ({device.type})"
    if spec.cuda_graphs == "off":
        return "cuda_graphs = 'off'"
    if spec.ema_decay:
        return "the weight average (ema_decay) decides its first update on the host"
    if spec.lr_schedule != "none":
        return "an lr schedule sets the learning rate on the host every step"
    return None


def graph_protocol(reason: str | None) -> dict[str, str]:
    """What the run's protocol records: whether its steps were captured, and if not, why."""
    if reason is None:
        return {"cuda_graphs": "on"}
    return {"cuda_graphs": "off", "cuda_graphs_reason": reason}


# --- Keeping the warm-up from changing the run -----------------------------------------------


@dataclass
class _State:
    """Copies of everything a training step changes, to be put back in place."""

    tensors: list[tuple[torch.Tensor, torch.Tensor]]  # (live tensor, copy)
    had_state: set[int]  # ids of the parameters that had optimizer state
    scale: tuple[torch.Tensor, torch.Tensor] | None  # the GradScaler's (scale, growth tracker)


def _step_tensors(training: Training) -> list[torch.Tensor]:
    model_state = list(training.model.state_dict(keep_vars=True).values())
    optimizer_state = [
        value
        for state in training.optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]
    return [tensor.data for tensor in model_state] + optimizer_state


def save_step_state(training: Training) -> _State:
    scaler = training.precision.scaler
    scale = None
    if scaler is not None and scaler._scale is not None:
        scale = (scaler._scale.clone(), scaler._growth_tracker.clone())
    return _State(
        tensors=[(tensor, tensor.clone()) for tensor in _step_tensors(training)],
        had_state={id(p) for p, s in training.optimizer.state.items() if s},
        scale=scale,
    )


@torch.no_grad()
def restore_step_state(training: Training, saved: _State) -> None:
    """Put back what the warm-up changed, in place (a graph holds these addresses). Optimizer
    state that the warm-up created is zeroed: a step from zero state is a first step."""
    for live, copy in saved.tensors:
        live.copy_(copy)
    for parameter, state in training.optimizer.state.items():
        if id(parameter) not in saved.had_state:
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    value.zero_()
    scaler = training.precision.scaler
    if scaler is not None and scaler._scale is not None:
        if saved.scale is not None:
            scaler._scale.copy_(saved.scale[0])
            scaler._growth_tracker.copy_(saved.scale[1])
        else:  # first use: as the scaler (or a checkpoint's load_state_dict) set it up
            scaler._scale.fill_(scaler._init_scale)
            scaler._growth_tracker.fill_(scaler._init_growth_tracker)


def create_optimizer_state(training: Training) -> None:
    """Give every parameter its optimizer state now, zeroed, by one step with zero gradients
    whose effects are then undone: a captured step needs the state at fixed addresses, and
    fused SGD's own first step would leave its momentum buffers uninitialised if skipped."""
    saved = save_step_state(training)
    for parameter in training.model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    training.optimizer.step()
    training.optimizer.zero_grad(set_to_none=True)
    restore_step_state(training, saved)


# --- Capture and replay ----------------------------------------------------------------------


class _Graph:
    """One captured step at one batch size, with its static inputs: an index into the train
    split on the device (gathered inside the graph), or a batch copied in before each replay."""

    def __init__(
        self,
        batch_size: int,
        image_shape: tuple[int, ...],
        device: torch.device,
        gather: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        self.gather = gather
        self.graph = torch.cuda.CUDAGraph()
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.images = torch.zeros((batch_size, *image_shape), dtype=torch.uint8, device=device)
        self.labels = torch.zeros(batch_size, dtype=torch.long, device=device)

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (uint8 images, labels)."""
        if self.gather is not None:
            return self.gather[0][self.index], self.gather[1][self.index]
        return self.images, self.labels


class CapturedSteps:
    """A run's training step captured at each batch size it will see.

    `gather`: the train split on the device; steps then take index tensors and gather inside
    the graph. Without it (DataLoader batches, augmentation drawn eagerly), steps take
    (images, labels), copied into the graph's static batch before each replay.
    """

    def __init__(
        self,
        training: Training,
        preprocess: Preprocess,
        counters: StepCounters,
        batch_sizes: list[int],
        image_shape: tuple[int, ...],
        gather: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.training, self.preprocess, self.counters = training, preprocess, counters
        self.gathers = gather is not None
        device = counters.steps.device
        self.stream = torch.cuda.Stream(device)  # this run's own: runs may share a process
        create_optimizer_state(training)
        self.graphs: dict[int, _Graph] = {}
        for size in batch_sizes:
            self.graphs[size] = _Graph(size, image_shape, device, gather)
            self._capture(self.graphs[size])
        counters.reset()

    def _step(self, graph: _Graph) -> None:
        training = self.training
        images, labels = graph.inputs()
        training_step(
            training.model, training.criterion, training.optimizer, training.precision,
            self.preprocess(images), labels, self.counters, autocast_cache=False,
        )  # fmt: skip

    def _capture(self, graph: _Graph) -> None:
        """Warm up on a side stream, capture, and undo what the warm-up steps changed."""
        saved = save_step_state(self.training)
        with GPU_GATE.exclusive():
            self._warm_up_and_capture(graph, saved)

    def _warm_up_and_capture(self, graph: _Graph, saved: _State) -> None:
        try:
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                for _ in range(GRAPH_WARM_UP_STEPS):
                    self._step(graph)
            torch.cuda.current_stream().wait_stream(self.stream)
            self.training.optimizer.zero_grad(set_to_none=True)  # grads from the graph's pool
            with torch.cuda.graph(
                graph.graph, stream=self.stream, capture_error_mode="thread_local"
            ):
                self._step(graph)
        finally:
            torch.cuda.current_stream().wait_stream(self.stream)
            restore_step_state(self.training, saved)

    def step_indices(self, index: torch.Tensor) -> int:
        """One step on the train split's images at `index` (gather mode)."""
        graph = self.graphs[len(index)]
        graph.index.copy_(index, non_blocking=True)
        graph.graph.replay()
        return len(index)

    def step_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        """One step on a batch made outside the graph (copy mode)."""
        images, labels = batch
        graph = self.graphs[len(labels)]
        graph.images.copy_(images, non_blocking=True)
        graph.labels.copy_(labels, non_blocking=True)
        graph.graph.replay()
        return len(labels)


def capture(
    training: Training,
    preprocess: Preprocess,
    counters: StepCounters,
    batch_sizes: list[int],
    image_shape: tuple[int, ...],
    gather: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[CapturedSteps | None, str | None]:
    """(the captured steps, None), or (None, why not) when capture failed: the run then trains
    eagerly, its state as it was (the warm-up's changes are undone either way)."""
    try:
        steps = CapturedSteps(training, preprocess, counters, batch_sizes, image_shape, gather)
    except Exception as exc:  # any failure to capture leaves the eager step, said in the protocol
        forget_unfinished_step(training)
        return None, f"capture failed: {type(exc).__name__}: {exc}"
    return steps, None


def forget_unfinished_step(training: Training) -> None:
    """What a step that failed half-way leaves behind, cleared for the eager steps that follow:
    its grads, and the GradScaler's hand-over to a fused optimizer (`grad_scale` and
    `found_inf`, which GradScaler.step removes only after a step that finished; an eager step
    would multiply the stale scale into its own) with the scaler's per-optimizer stage."""
    training.optimizer.zero_grad(set_to_none=True)
    for handed_over in ("grad_scale", "found_inf"):
        training.optimizer.__dict__.pop(handed_over, None)
    scaler = training.precision.scaler
    if scaler is not None:
        scaler._per_optimizer_states = defaultdict(_refresh_per_optimizer_state)
