"""Re-evaluating a saved model gives back what its run measured, exactly; another dataset works
and is split the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mnistbench.data.registry import FASHION_MNIST
from mnistbench.errors import UserError
from mnistbench.use.evaluate import evaluate_model
from mnistbench.use.saved import load_model
from tests.saved_models import synthetic_root, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_root(tmp_path_factory.mktemp("evaluate"))[1]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"image_size": 32, "channels": 3, "val_fraction": 0.2},
        {"model": "svm"},
        {"model": "svm", "features": "standardized", "kernel": "poly"},
    ],
    ids=["resnet", "resnet-32px-3ch-val", "svm", "svm-standardized-poly"],
)
def test_its_own_test_split_gives_the_stored_accuracy_exactly(data, tmp_path, fields) -> None:
    _, result = train(data, tmp_path, test_limit=60, **fields)  # a subset, as a study's
    evaluation = evaluate_model(load_model(Path(result.model_path)), data)
    assert evaluation.accuracy == result.test_accuracy  # exactly: the same computation
    assert evaluation.confusion_matrix == result.confusion_matrix
    assert evaluation.per_class_accuracy == result.per_class_accuracy
    assert evaluation.images == sum(map(sum, result.confusion_matrix)) == 60


def test_another_dataset_and_part(data, tmp_path) -> None:
    _, result = train(data, tmp_path, val_fraction=0.25)
    model = load_model(Path(result.model_path))
    val = evaluate_model(model, data, "val")
    assert val.images == 100 and val.part == "val"  # 25 % of the 400 train images
    assert val.accuracy == result.val_accuracy
    fashion = dataclasses.replace(data, info=FASHION_MNIST)
    other = evaluate_model(model, fashion, "train")
    assert other.dataset == "fashion-mnist" and other.classes == FASHION_MNIST.classes
    assert other.images == 32  # the run's train_limit, applied the same way


def test_an_empty_part_is_a_clear_error(data, tmp_path) -> None:
    _, result = train(data, tmp_path, model="svm")
    with pytest.raises(UserError, match="val part of mnist is empty"):
        evaluate_model(load_model(Path(result.model_path)), data, "val")
