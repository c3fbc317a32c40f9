"""Write the golden model files that tests/test_golden_models.py reads (README.md beside this).

Run it only to replace them on purpose: their point is to stay what an older mnistbench wrote.
From a checkout of the code whose files they should be:

    .venv/bin/python -m tests.golden.models.regenerate

It needs the real MNIST files (`.venv/bin/mnistbench data fetch mnist`) and skops, and takes
about a minute on 2 CPU cores. A ResNet-18 model file is 45 MB and a checkpoint three times
that: each is written by today's save function from a model whose weights were pruned to 1 %
and rounded to bfloat16's precision (still float32 tensors), which gzip then packs into a few
hundred kB. The predictions and the resume that the tests pin are those of the files written.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tests.conftest import StopBeforeEpoch, synthetic_dataset
from torch import nn

import mnistbench
from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset, load_dataset
from mnistbench.engines import run_spec
from mnistbench.engines.torch import train
from mnistbench.engines.torch.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    save_final_model,
)
from mnistbench.engines.torch.prepare import prepare
from mnistbench.result import EpochRecord
from mnistbench.use.predict import predict_images
from mnistbench.use.saved import load_model

HERE = Path(__file__).parent
EXPECTED = HERE / "expected.json"
IMAGES = 64  # the first IMAGES MNIST test images are predicted with each file
KEEP = 0.01  # the fraction of each weight tensor (and its optimizer state) kept
# Explicit machine-independent settings: one thread, the CPU, no layout or matmul timing.
FIXED = {"device": "cpu", "threads": 1, "memory_format": "contiguous", "small_map_convs": "conv",
         "cuda_graphs": "off"}  # fmt: skip
TORCH = {"model": "resnet18", "epochs": 1, "train_limit": 2048, "test_limit": 256,
         "batch_size": 32, "lr_schedule": "none", **FIXED}  # fmt: skip
SVM = {"model": "svm", "svm_backend": "sklearn", "threads": 1, "train_limit": 300,
       "test_limit": 100, "features": "pca:20"}  # fmt: skip
# The checkpoint trains on tests/conftest.py's synthetic dataset of this size (no real data).
CHECKPOINT_DATA = {"n_train": 64, "n_test": 32}
CHECKPOINT = {"model": "resnet18", "epochs": 2, "batch_size": 16, **FIXED}  # adamw, onecycle
FINE_TUNE_EPOCHS = 4  # of the pruned weights, their zeros kept, so that it still predicts


def main() -> None:
    torch.manual_seed(0)
    data = load_dataset("mnist")
    images = data.test_images[:IMAGES]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        expected = {
            "mnistbench": mnistbench.__version__,
            "images": IMAGES,
            "torch": torch_model(data, images, work / "torch"),
            "svm": svm_model(data, images, work / "svm"),
            "checkpoint": checkpoint(work / "checkpoint"),
        }
    EXPECTED.write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    for name in sorted(HERE.glob("*.gz")):
        print(f"{name.relative_to(HERE.parents[2])}: {name.stat().st_size:,} bytes")


def torch_model(data: Dataset, images: torch.Tensor, work: Path) -> dict[str, Any]:
    """A ResNet-18 trained one epoch on 2048 images by the engine, pruned, fine-tuned with its
    zeros kept, then saved by save_final_model."""
    spec = RunSpec(**TORCH)
    result = run_spec(spec, data, work)
    model = load_model(Path(result.model_path))
    masks = prune(model.module, KEEP)
    fine_tune(model.module, masks, model.preprocess, data, spec)
    round_to_bfloat16(model.module.state_dict())
    path = work / "resnet18.model.pt"
    save_final_model(path, spec, model.module, model.preprocess)
    saved = load_model(path)
    predictions = predict_images(saved, [""] * len(images), images.numpy())
    scores = torch.softmax(torch.from_numpy(saved.scores(images)).double(), dim=1).numpy()
    labels = [p.label for p in predictions]
    check_margins(scores)
    right = int(np.sum(np.array(labels) == data.test_labels[: len(images)].numpy()))
    print(f"resnet18: {right} of {len(images)} right, classes {sorted(set(labels))}")
    return {
        "file": pack(path, "resnet18.model.pt.gz"),
        "spec": spec.to_dict(),
        "labels": labels,
        "probabilities": np.round(scores, 7).tolist(),
    }


def svm_model(data: Dataset, images: torch.Tensor, work: Path) -> dict[str, Any]:
    """An RBF SVC on 20 PCA components of 300 images, saved by the engine (save_svm_file)."""
    spec = RunSpec(**SVM)
    result = run_spec(spec, data, work)
    model = load_model(Path(result.model_path))
    return {
        "file": pack(Path(result.model_path), "svm.model.skops.gz"),
        "spec": spec.to_dict(),
        "labels": model.predict(images).tolist(),
        "scores": np.round(model.scores(images), 9).tolist(),
    }


def checkpoint(work: Path) -> dict[str, Any]:
    """Epoch 1 of a 2-epoch run (AdamW, one-cycle schedule), stopped before epoch 2, pruned
    with its optimizer state and saved by save_checkpoint; then resumed once, to pin what the
    resumed epoch gives."""
    spec = RunSpec(**CHECKPOINT)
    data = synthetic_dataset(**CHECKPOINT_DATA)
    with contextlib.suppress(KeyboardInterrupt):  # as Ctrl-C would stop it, after epoch 1
        train.run(spec, data, checkpoint_dir=work, reporter=StopBeforeEpoch(2))
    path = checkpoint_path(work, spec)
    state = load_checkpoint(path, spec)
    assert state is not None, "no checkpoint written"
    setup = prepare(spec, data)
    restore_checkpoint(state, setup.training)
    model, optimizer = setup.training.model, setup.training.optimizer
    masks = prune(model, KEEP)
    for parameter in model.parameters():
        for value in optimizer.state[parameter].values():
            if parameter in masks and value.shape == parameter.shape:
                value.masked_fill_(~masks[parameter], 0.0)
            if value.is_floating_point() and value.dim():
                value.copy_(value.to(torch.bfloat16))
    round_to_bfloat16(model.state_dict())
    history = [EpochRecord.from_dict(entry) for entry in state["history"]]
    save_checkpoint(path, spec, setup.training, state["epoch"], history, state["train_seconds"])
    packed = pack(path, "resnet18.ckpt.pt.gz")
    resumed = train.run(spec, data, checkpoint_dir=work)
    assert resumed.resumed_from_epoch == state["epoch"], "the pruned checkpoint was not resumed"
    last = resumed.history[-1]
    return {
        "file": packed,
        "spec": spec.to_dict(),
        "data": CHECKPOINT_DATA,
        "epoch": state["epoch"],
        "history": state["history"],
        "resumed": {"epoch": last.epoch, "lr": last.lr, "train_loss": last.train_loss},
    }


def prune(model: nn.Module, keep: float) -> dict[nn.Parameter, torch.Tensor]:
    """Zero all but the `keep` largest-magnitude entries of each weight matrix or kernel (the
    1-D batch-norm and bias tensors stay whole); the masks, by parameter."""
    masks = {}
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() < 2:
                continue
            count = max(1, int(parameter.numel() * keep))
            threshold = parameter.abs().flatten().kthvalue(parameter.numel() - count + 1).values
            masks[parameter] = parameter.abs() >= threshold
            parameter.masked_fill_(~masks[parameter], 0.0)  # +0.0: a product would leave -0.0
    return masks


def fine_tune(
    model: nn.Module,
    masks: dict[nn.Parameter, torch.Tensor],
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    data: Dataset,
    spec: RunSpec,
) -> None:
    """A few epochs on the first train_limit training images, the pruned entries kept at zero."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0)
    images, labels = data.train_images[: spec.train_limit], data.train_labels[: spec.train_limit]
    model.train()
    for _ in range(FINE_TUNE_EPOCHS):
        order = torch.randperm(len(labels))
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            loss = nn.functional.cross_entropy(model(preprocess(images[batch])), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for parameter, mask in masks.items():
                    parameter.masked_fill_(~mask, 0.0)
    model.eval()


def round_to_bfloat16(state: dict[str, torch.Tensor]) -> None:
    """Float tensors rounded to bfloat16's 8-bit mantissa, kept float32: half their bytes are
    then zeros, which gzip packs."""
    with torch.no_grad():
        for tensor in state.values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.bfloat16))


def check_margins(probabilities: np.ndarray, least: float = 1e-3) -> None:
    """Each image's best class ahead of its second by `least`, so that the pinned labels hold
    on any CPU; and not one class for all of them."""
    ranked = np.sort(probabilities, axis=1)
    margin = float((ranked[:, -1] - ranked[:, -2]).min())
    print(f"least margin between an image's two best classes: {margin:.2g}")
    assert margin >= least, f"an image's two best classes are {margin:.2g} apart: pick others"
    assert len(set(probabilities.argmax(axis=1))) > 1, "one class for all images"


def pack(path: Path, name: str) -> str:
    """path gzipped to HERE/name, byte for byte the same on every run (no name, no time)."""
    with (
        path.open("rb") as source,
        (HERE / name).open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as out,
    ):
        shutil.copyfileobj(source, out)
    return name


if __name__ == "__main__":
    main()
