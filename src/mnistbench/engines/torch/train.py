"""Train and evaluate a torchvision ResNet for one RunSpec -> RunResult.

The dataset lives on the device as uint8 tensors; each step slices a batch by index, augments and
preprocesses it there (loader='memory'). loader='dataloader' feeds the same batches through a
torch DataLoader, which is where pin_memory and num_workers mean something. Running loss and
accuracy stay on the device and are read every few steps, so the GPU never waits for the host.
A checkpoint is written atomically after each epoch; a run with the same spec resumes from it,
and because batch order and augmentation are drawn from per-epoch seeds, a resumed run on CPU
ends bit-for-bit where an uninterrupted one would.

A run is set up before its first epoch in prepare.py (what it trains with is built in
recipe.py, its batches in batches.py, its captured CUDA step in cudagraphs.py), its checkpoints
written in checkpoint.py; this module trains, evaluates, and assembles the RunResult.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.preprocess import Preprocess
from mnistbench.data.splits import SplitData
from mnistbench.engines.torch.batches import epoch_augment, epoch_batches, epoch_indices
from mnistbench.engines.torch.checkpoint import (
    checkpoint_path,
    final_model_path,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_final_model,
)
from mnistbench.engines.torch.cudagraphs import GPU_GATE, CapturedSteps
from mnistbench.engines.torch.loops import (
    Diverged,
    EpochStats,
    drive_epoch,
    eval_batch_size,
    evaluate,
    train_one_epoch,
)
from mnistbench.engines.torch.prepare import (
    Flops,
    Setup,
    capture_steps,
    measure_flops_and_warm_up,
    prepare,
)
from mnistbench.engines.torch.recipe import Precision, Training
from mnistbench.measure import Stopwatch, environment, peak_memory, reset_peak_memory
from mnistbench.progress import Reporter
from mnistbench.pruning import TrialLink
from mnistbench.result import EpochRecord, RunResult, per_class_accuracy
from mnistbench.specfields import field_role

# --- The run, step by step --------------------------------------------------------------------


def run(
    spec: RunSpec,
    data: Dataset,
    *,
    checkpoint_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train spec.model on data under spec, evaluate, and return everything measured.

    With checkpoint_dir, each finished epoch is saved there and a later call with the same spec
    resumes after the last saved epoch; the final model is kept there for later prediction.
    """
    if spec.is_svm:
        raise ValueError("the torch engine got an SVM spec; the SVM engine runs it")
    reporter = reporter or Reporter()
    setup = prepare(spec, data)
    ckpt_path = checkpoint_path(checkpoint_dir, spec) if checkpoint_dir else None
    progress = resume(setup, ckpt_path, reporter)
    flops = measure_flops_and_warm_up(setup)
    capture_steps(setup)
    reset_peak_memory(setup.device)
    train_epochs(setup, progress, ckpt_path, reporter)
    result = assemble_result(setup, progress, flops)
    if checkpoint_dir is not None and result.status == "ok":
        keep_final_model(result, setup, checkpoint_dir, ckpt_path)
    return result


@dataclass
class Progress:
    """How far the run has come: its history so far and the training time it took."""

    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    resumed_from: int | None = None  # the epoch a checkpoint brought the run back to
    status: str = "ok"  # or "diverged", or "pruned" (a search's trial its pruner stopped)
    message: str | None = None
    final_test: Evaluation | None = None  # the last epoch's evaluation, when it was the test's

    @property
    def next_epoch(self) -> int:
        return (self.resumed_from or 0) + 1


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the model: accuracy %, confusion matrix and the seconds it took."""

    accuracy: float
    confusion: torch.Tensor
    seconds: float


def resume(setup: Setup, ckpt_path: Path | None, reporter: Reporter) -> Progress:
    """The progress in this spec's checkpoint, its states put back into setup.training; a fresh
    start when there is none."""
    state = load_checkpoint(ckpt_path, setup.spec, reporter.log) if ckpt_path else None
    if state is None:
        return Progress()
    restore_checkpoint(state, setup.training)
    reporter.log(f"resuming from {ckpt_path} after epoch {state['epoch']}")
    history = [EpochRecord.from_dict(entry) for entry in state["history"]]
    return Progress(history, state["train_seconds"], resumed_from=state["epoch"])


def train_epochs(
    setup: Setup, progress: Progress, ckpt_path: Path | None, reporter: Reporter
) -> None:
    """The epochs left, each timed, evaluated when the spec says so and checkpointed; stops at
    the first diverged epoch."""
    spec, training = setup.spec, setup.training
    stopwatch = Stopwatch(setup.device)
    for epoch in range(progress.next_epoch, spec.epochs + 1):
        reporter.start_epoch(epoch, spec.epochs, setup.steps_per_epoch)
        stopwatch.start()
        try:
            stats = train_epoch(setup, epoch, reporter)
        except Diverged as exc:
            stopwatch.stop()
            progress.status, progress.message = "diverged", str(exc)
            progress.history.append(diverged_entry(exc))
            reporter.end_epoch(progress.history[-1].progress_line() | {"note": progress.message})
            return
        epoch_seconds = stopwatch.stop()
        progress.train_seconds += epoch_seconds
        entry = epoch_entry(epoch, stats, epoch_seconds, training)
        if spec.eval_each_epoch or epoch == spec.epochs:
            held_out = evaluate_held_out(setup)
            entry.eval_split, entry.eval_accuracy = setup.data.eval_name, held_out.accuracy
            if epoch == spec.epochs and setup.data.eval_name == "test":
                progress.final_test = held_out  # the result's test evaluation: not run twice
        progress.history.append(entry)
        reporter.end_epoch(entry.progress_line())
        if ckpt_path is not None:
            save_checkpoint(
                ckpt_path, spec, training, epoch, progress.history, progress.train_seconds
            )
        if spec.trial is not None and trial_stops(spec, epoch, entry, reporter):
            # The checkpoint stays: a trial stopped too early can be taken on later.
            progress.status = "pruned"
            progress.message = f"pruned by the search's pruner after epoch {epoch}"
            reporter.log(f"{spec.label()}: {progress.message}")
            return


def trial_stops(spec: RunSpec, epoch: int, entry: EpochRecord, reporter: Reporter) -> bool:
    """Whether the search this run is a trial of stops it after this epoch (pruning.py)."""
    link = TrialLink.from_text(spec.trial)
    try:
        return link.hears(epoch, entry.progress_line(), last=epoch == spec.epochs)
    except Exception as exc:  # a busy or unreachable storage: the run goes on, unjudged
        reporter.log(f"{spec.label()}: the search's pruner was not asked ({exc}); training on")
        return False


def assemble_result(setup: Setup, progress: Progress, flops: Flops) -> RunResult:
    """The RunResult of a run whose epochs are over: on a run that finished, with the test
    evaluation (timed apart from training)."""
    spec, device, precision = setup.spec, setup.device, setup.training.precision
    result = RunResult(
        spec=spec.to_dict(),
        status=progress.status,
        message=progress.message,
        device=str(device),
        precision=precision.label,
        history=progress.history,
        train_seconds=progress.train_seconds,
        flops_per_image=float(flops.forward_per_image),
        macs_per_image=flops.forward_per_image / 2,
        environment=environment(device, spec.threads),
        protocol=protocol(spec, setup.split, setup.preprocess, precision, device) | setup.backends,
        resumed_from_epoch=progress.resumed_from,
    )
    images_trained = sum(entry.images for entry in progress.history)
    result.train_flops = float(flops.train_per_image * images_trained)
    if progress.train_seconds > 0:
        result.images_per_second = images_trained / progress.train_seconds
    if progress.status == "ok":
        test = progress.final_test or evaluate_on(
            setup, setup.split.test_images.to(device), setup.split.test_labels.to(device)
        )
        fill_test_result(result, test)
        if setup.training.ema is not None or setup.spec.tta != "none":
            result.protocol["test_accuracy_by_lever"] = accuracy_by_lever(setup, test)
    result.peak_memory_bytes, result.peak_memory_kind = peak_memory(device)
    return result


def keep_final_model(
    result: RunResult, setup: Setup, checkpoint_dir: Path, ckpt_path: Path | None
) -> None:
    """Save the trained model for later prediction; it supersedes the epoch checkpoint."""
    final = final_model_path(checkpoint_dir, setup.spec)
    save_final_model(final, setup.spec, setup.training.evaluated, setup.preprocess)
    result.model_path = str(final)
    if ckpt_path is not None:
        ckpt_path.unlink(missing_ok=True)


# --- History entries ------------------------------------------------------------------------


def epoch_entry(epoch: int, stats: EpochStats, seconds: float, training: Training) -> EpochRecord:
    """One epoch's history entry, before its evaluation (the GradScaler's loss scale too, when
    there is one: a scale that keeps falling is how fp16 overflow shows)."""
    scaler = training.precision.scaler
    return EpochRecord(
        epoch=epoch,
        train_loss=stats.loss,
        train_accuracy=stats.accuracy,
        lr=training.optimizer.param_groups[0]["lr"],
        train_seconds=seconds,
        images=stats.images,
        images_per_second=stats.images / seconds,
        loss_scale=float(scaler.get_scale()) if scaler is not None else None,
        loss_trace=stats.loss_trace,
    )


def diverged_entry(exc: Diverged) -> EpochRecord:
    """The history entry of the epoch whose loss became non-finite (the run's last)."""
    return EpochRecord(epoch=exc.epoch, status="diverged", diverged_step=exc.step)


# --- Training and evaluation ----------------------------------------------------------------


def train_epoch(setup: Setup, epoch: int, reporter: Reporter) -> EpochStats:
    """One epoch of the run: its batches and augmentation, drawn from (seed, epoch)."""
    spec, training, device = setup.spec, setup.training, setup.device
    if setup.captured is not None:
        return train_captured_epoch(setup, setup.captured, epoch, reporter)
    return train_one_epoch(
        training.model, training.criterion, training.optimizer,
        epoch_batches(spec, setup.split, setup.data, epoch, device), setup.preprocess, device,
        training.precision, epoch=epoch, scheduler=training.scheduler,
        augment=epoch_augment(spec, epoch, device), reporter=reporter, ema=training.ema,
    )  # fmt: skip


def train_captured_epoch(
    setup: Setup, captured: CapturedSteps, epoch: int, reporter: Reporter
) -> EpochStats:
    """One epoch of graph replays, on the eager epoch's batches: indices gathered inside the
    graph, or batches (DataLoader's, or augmented here) copied into it."""
    spec, device = setup.spec, setup.device
    setup.training.model.train()
    if captured.gathers:
        batches = epoch_indices(spec, setup.data, epoch)
        return drive_epoch(captured.step_indices, batches, captured.counters, epoch, reporter)
    augment = epoch_augment(spec, epoch, device)
    loaded = epoch_batches(spec, setup.split, setup.data, epoch, device)
    batches = ((augment(images), labels) for images, labels in loaded) if augment else loaded
    return drive_epoch(captured.step_batch, batches, captured.counters, epoch, reporter)


def evaluate_held_out(setup: Setup) -> Evaluation:
    """The run's validation part (else its test split), for the history."""
    return evaluate_on(setup, setup.data.eval_images, setup.data.eval_labels)


def evaluate_on(
    setup: Setup,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    averaged: bool = True,
    tta: bool | None = None,
) -> Evaluation:
    """The model on device-resident images, timed apart from training: the weight average
    (when kept) and test-time augmentation as the spec says, unless told otherwise."""
    training = setup.training
    watch = Stopwatch(setup.device)
    with GPU_GATE.shared():  # its first batch shapes are timed by cuDNN: never during a capture
        watch.start()
        accuracy, confusion = evaluate(
            training.evaluated if averaged else training.model, images, labels,
            setup.preprocess, setup.device, training.precision,
            eval_batch_size(setup.spec.image_size),
            tta=setup.spec.tta == "flip" if tta is None else tta,
        )  # fmt: skip
        seconds = watch.stop()
    return Evaluation(accuracy, confusion, seconds)


def accuracy_by_lever(setup: Setup, test: Evaluation) -> dict[str, float]:
    """What the run's evaluation levers did: the test accuracy with and without the weight
    average and the mirror-image TTA, where the spec uses them ('raw' is neither). A user sees
    each lever's effect on this very run, at the cost of up to three more test passes."""
    images = setup.split.test_images.to(setup.device)
    labels = setup.split.test_labels.to(setup.device)
    uses_ema, uses_tta = setup.training.ema is not None, setup.spec.tta == "flip"
    accuracies: dict[str, float] = {}
    for averaged in (False, True) if uses_ema else (False,):
        for tta in (False, True) if uses_tta else (False,):
            name = "+".join(["ema"] * averaged + ["flip"] * tta) or "raw"
            same = averaged == uses_ema and tta == uses_tta  # the result's own evaluation
            again = None if same else evaluate_on(setup, images, labels, averaged=averaged, tta=tta)
            accuracies[name] = test.accuracy if again is None else again.accuracy
    return accuracies


# --- The result -----------------------------------------------------------------------------


def fill_test_result(result: RunResult, test: Evaluation) -> None:
    """The test evaluation's numbers in the result (and the last validation accuracy)."""
    if result.history[-1].eval_split == "val":
        result.val_accuracy = result.history[-1].eval_accuracy
    result.eval_seconds = test.seconds
    result.test_accuracy = test.accuracy
    result.confusion_matrix = test.confusion.tolist()
    result.per_class_accuracy = per_class_accuracy(result.confusion_matrix)


def protocol(
    spec: RunSpec,
    split: SplitData,
    preprocess: Preprocess,
    precision: Precision,
    device: torch.device,
) -> dict[str, Any]:
    """What a reader needs to compare this result with another: the protocol, stated."""
    return {
        "split": spec.split,
        "sizes": split.sizes(),
        "image_size": spec.image_size,
        "channels": spec.channels,
        "normalize": [round(preprocess.mean, 4), round(preprocess.std, 4)],
        "resize": "bilinear, per batch on the device" if spec.image_size != 28 else "none",
        "stem": spec.stem,
        "epochs": spec.epochs,
        "loader": spec.loader,
        "pin_memory": spec.pin_memory and device.type == "cuda" and spec.loader == "dataloader",
        "amp": spec.amp,  # as asked (True, False or "cuda"); precision is what ran here
        "precision": precision.label,
        "device": str(device),
    } | _levers_set(spec)


def _levers_set(spec: RunSpec) -> dict[str, Any]:
    """The fields added after the first results (identity "non-default") that this run sets:
    stated only then, so that the protocol of every earlier result reads the same. The rule of
    the run's identity (RunSpec.canonical) decides which."""
    added_later = {
        f.name for f in dataclasses.fields(spec) if field_role(f).identity == "non-default"
    }
    return {name: value for name, value in spec.canonical().items() if name in added_later}
