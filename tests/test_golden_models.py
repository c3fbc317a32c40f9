"""Golden model files (issue 23): a ResNet model file, an SVM model file and an epoch checkpoint
written by an earlier mnistbench, kept gzipped in tests/golden/models/ (its README.md says how
they were made). Today's code must still load the model files and predict what they predicted
then, and a run of the checkpoint's spec must resume from it rather than start over.

A failure here means that a change of format (or of loading, preprocessing, spec fields or run
identity) breaks files that users already have: read the old files on purpose (a migration), and
never regenerate these to make the test pass.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.data.load import load_dataset
from mnistbench.data.registry import MNIST
from mnistbench.engines.torch import train
from mnistbench.engines.torch.checkpoint import checkpoint_path
from mnistbench.result import EpochRecord
from mnistbench.use.predict import predict_images
from mnistbench.use.saved import load_model
from tests.conftest import Logs, synthetic_dataset

GOLDEN = Path(__file__).parent / "golden" / "models"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text(encoding="utf-8"))
IMAGES = EXPECTED["images"]  # the first IMAGES MNIST test images
# Other CPUs' convolution kernels (AVX2, AVX-512, AMX) sum in other orders: torch's own kernels
# instead of oneDNN's moved these probabilities by 4e-6, while a normalisation mean off by 1e-4
# moves them by 4e-3. The pinned labels' two best classes are at least 1.3e-3 apart.
PROBABILITY_ATOL = 1e-3
SVM_SCORE_ATOL = 1e-5  # float64 decision values of float32 PCA features: 5e-10 seen


def unpacked(name: str, folder: Path) -> Path:
    """The golden file `name` (gzipped) decompressed into folder, under its name less '.gz'."""
    target = folder / name.removesuffix(".gz")
    with gzip.open(GOLDEN / name) as source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    return target


@pytest.fixture(scope="module")
def pinned_images(real_data_root: Path) -> torch.Tensor:
    return load_dataset("mnist", real_data_root).test_images[:IMAGES]


def assert_spec_as_written(spec: RunSpec, written: dict) -> None:
    """The spec read from the file has every field as it was written (a field added since, with
    its default, may be there too)."""
    read = spec.to_dict()
    assert {name: read.get(name) for name in written} == written


@pytest.mark.network  # real MNIST test images (fetched once)
def test_the_resnet_file_loads_and_predicts_what_it_did_when_written(pinned_images, tmp_path):
    pinned = EXPECTED["torch"]
    model = load_model(unpacked(pinned["file"], tmp_path))
    assert model.engine == "torch" and not model.legacy and model.classes == MNIST.classes
    assert_spec_as_written(model.spec, pinned["spec"])

    names = [f"test[{index}]" for index in range(len(pinned_images))]
    predictions = predict_images(model, names, pinned_images.numpy())
    labels = [prediction.label for prediction in predictions]
    assert len(set(labels)) > 1, f"one class for every image: {labels}"
    assert labels == pinned["labels"]
    softmax = torch.softmax(torch.from_numpy(model.scores(pinned_images)).double(), dim=1)
    expected = np.array(pinned["probabilities"])
    np.testing.assert_allclose(softmax.numpy(), expected, rtol=0, atol=PROBABILITY_ATOL)
    top = [prediction.probability for prediction in predictions]
    np.testing.assert_allclose(top, expected.max(axis=1), rtol=0, atol=PROBABILITY_ATOL)


@pytest.mark.network  # real MNIST test images (fetched once)
def test_the_svm_file_loads_and_predicts_what_it_did_when_written(pinned_images, tmp_path):
    pytest.importorskip(
        "skops.io", reason="skops reads SVM files: pip install 'mnistbench[models]'"
    )
    pinned = EXPECTED["svm"]
    model = load_model(unpacked(pinned["file"], tmp_path))
    assert model.engine == "svm" and model.classes == MNIST.classes
    assert model.transform is not None  # pca:20, fitted on the run's training images
    assert_spec_as_written(model.spec, pinned["spec"])

    labels = model.predict(pinned_images).tolist()
    assert len(set(labels)) > 1, f"one class for every image: {labels}"
    assert labels == pinned["labels"]
    np.testing.assert_allclose(
        model.scores(pinned_images), np.array(pinned["scores"]), rtol=0, atol=SVM_SCORE_ATOL
    )


def test_a_run_of_the_checkpoints_spec_resumes_from_it_and_trains_to_its_last_epoch(tmp_path):
    pinned = EXPECTED["checkpoint"]
    # The spec as a user would give it on this machine: threads left to its default (all
    # cores), which is no part of the run's identity.
    spec = RunSpec.from_dict({name: v for name, v in pinned["spec"].items() if name != "threads"})
    path = checkpoint_path(tmp_path, spec)  # where a run of this spec looks for its checkpoint
    shutil.move(unpacked(pinned["file"], tmp_path), path)
    logs = Logs()

    result = train.run(
        spec, synthetic_dataset(**pinned["data"]), checkpoint_dir=tmp_path, reporter=logs
    )

    assert result.status == "ok", result.message
    assert result.resumed_from_epoch == pinned["epoch"], logs.lines
    assert f"resuming from {path} after epoch {pinned['epoch']}" in logs.lines
    assert [entry.epoch for entry in result.history] == list(range(1, spec.epochs + 1))
    # The epochs before the checkpoint come from it, as they were recorded then (a field added
    # to EpochRecord since, such as loss_trace, holds its default: the file never had it).
    kept = [dataclasses.asdict(entry) for entry in result.history[: pinned["epoch"]]]
    assert kept == [dataclasses.asdict(EpochRecord(0)) | old for old in pinned["history"]]
    # The one-cycle schedule went on from its saved step: started over, it would end this
    # epoch mid-cycle, at a far higher rate.
    last, resumed = result.history[-1], pinned["resumed"]
    assert last.lr == pytest.approx(resumed["lr"], rel=1e-9, abs=1e-12)
    # Training went on from the saved weights and optimizer state: from fresh weights the loss
    # was 0.95 instead of 2.04, from a fresh optimizer 2.08. Other convolution kernels (another
    # CPU's, or torch's own instead of oneDNN's) moved it by 4e-4 of itself.
    assert last.train_loss == pytest.approx(resumed["train_loss"], rel=5e-3)
    assert Path(result.model_path).is_file() and not path.exists()  # the final model supersedes it
