"""The accuracy levers: random erasing, a moving average of the weights, mirror-image TTA."""

import pytest
import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.data.preprocess import Preprocess
from mnistbench.engines.torch.batches import (
    ERASE_AREA,
    TRANSLATE_PIXELS,
    erase,
    make_augment,
    translate,
)
from mnistbench.engines.torch.checkpoint import final_model_path
from mnistbench.engines.torch.loops import evaluate
from mnistbench.engines.torch.recipe import ema_decay_at, make_ema, make_precision
from mnistbench.engines.torch.train import run
from mnistbench.specfields import SpecError
from tests.conftest import synthetic_dataset

TINY = {"model": "resnet18", "epochs": 2, "batch_size": 32, "threads": 1, "device": "cpu"}


def test_erase_blanks_one_rectangle_in_about_half_of_the_images() -> None:
    images = torch.full((400, 28, 28), 255, dtype=torch.uint8)
    erased = erase(images, torch.Generator().manual_seed(0))
    blank = erased == 0
    touched = blank.flatten(1).any(1)
    assert 150 < int(touched.sum()) < 250
    assert torch.equal(erased[~touched], images[~touched])
    areas = blank.flatten(1).sum(1)[touched].float() / (28 * 28)
    assert areas.min() >= ERASE_AREA[0] / 2 and areas.max() <= ERASE_AREA[1] * 1.2
    for mask in blank[touched][:50]:  # a filled rectangle: its rows and columns span it
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert int(mask.sum()) == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
    assert len(set(areas.tolist())) > 20, "sizes differ per image"
    # In a combination, erasing comes after the shift, from the same generator
    generator = torch.Generator().manual_seed(0)
    expected = erase(translate(images, TRANSLATE_PIXELS, generator), generator)
    combined = make_augment("translate+erase", torch.Generator().manual_seed(0))(images)
    assert torch.equal(combined, expected)


def test_mirror_tta_classifies_by_the_mean_probabilities_of_both_views() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    images = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (300,))
    preprocess = Preprocess(mean=100.0 / 255, std=0.3, image_size=28, channels=1)
    precision, cpu = make_precision(False, torch.device("cpu")), torch.device("cpu")
    plain, _ = evaluate(model, images, labels, preprocess, cpu, precision, batch_size=64)
    mirrored, confusion = evaluate(
        model, images, labels, preprocess, cpu, precision, batch_size=64, tta=True
    )
    with torch.no_grad():
        x = preprocess(images)
        scores = model(x).softmax(1) + model(x.flip(-1)).softmax(1)
    expected = 100.0 * float((scores.argmax(1) == labels).float().mean())
    assert mirrored == pytest.approx(expected) and plain != mirrored
    assert int(confusion.sum()) == 300


def test_the_weight_average_changes_what_is_evaluated_and_saved_not_the_training(tmp_path):
    data = synthetic_dataset(n_train=128, n_test=64)
    spec = RunSpec(**TINY, optimizer="sgd", lr=0.05)
    plain = run(spec, data, checkpoint_dir=tmp_path / "plain")
    averaged_spec = spec.replace(ema_decay=0.9, tta="flip")
    averaged = run(averaged_spec, data, checkpoint_dir=tmp_path / "ema")
    # The same training, step for step: the average only watches it
    assert [e.train_loss for e in averaged.history] == [e.train_loss for e in plain.history]
    levers = averaged.protocol["test_accuracy_by_lever"]
    assert set(levers) == {"raw", "flip", "ema", "ema+flip"}
    assert levers["raw"] == plain.test_accuracy  # the raw weights are the plain run's
    assert averaged.test_accuracy == levers["ema+flip"]  # the result: both levers on
    assert (averaged.protocol["ema_decay"], averaged.protocol["tta"]) == (0.9, "flip")
    assert "ema_decay" not in plain.protocol and "test_accuracy_by_lever" not in plain.protocol
    saved = torch.load(final_model_path(tmp_path / "ema", averaged_spec))["model"]
    raw = torch.load(final_model_path(tmp_path / "plain", spec))["model"]
    assert set(saved) == set(raw)  # a plain ResNet's weights: predict and export load them
    assert not torch.equal(saved["fc.weight"], raw["fc.weight"])


def test_the_levers_are_part_of_a_runs_identity_only_when_used() -> None:
    base = RunSpec(**TINY)
    assert base.replace(ema_decay=0.0, tta="none").key() == base.key()
    assert (
        len({base.key(), base.replace(ema_decay=0.99).key(), base.replace(tta="flip").key()}) == 3
    )
    assert base.replace(augment="flip+erase").key() != base.replace(augment="flip").key()
    for bad in (1.0, -0.1, "0.9"):
        with pytest.raises(SpecError, match="ema_decay"):
            base.replace(ema_decay=bad)
    with pytest.raises(SpecError, match="tta"):
        base.replace(tta="rotate")


def test_the_weight_average_forgets_the_initial_weights_within_a_short_run():
    """After 30 steps at decay 0.99 a plain EMA still holds 74 % of the initial weights; the
    warm-up (min(decay, (1 + n) / (10 + n))) has averaged them away."""
    model = torch.nn.Linear(2, 2)
    ema = make_ema(model, 0.99)
    with torch.no_grad():
        model.weight.fill_(-1.0)
        ema.update_parameters(model)  # the first update copies: the weights after step 1
        model.weight.fill_(1.0)  # trained weights, far from those
        for _ in range(30):
            ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.ones(2, 2), atol=1e-3)


def test_the_weight_average_decays_at_the_asked_rate_once_warmed_up():
    assert float(ema_decay_at(0.99, torch.tensor(5))) == pytest.approx(6 / 15)
    assert float(ema_decay_at(0.99, torch.tensor(10_000))) == pytest.approx(0.99)
    model = torch.nn.Linear(2, 2)
    ema = make_ema(model, 0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
        for _ in range(2_000):
            ema.update_parameters(model)
        model.weight.fill_(2.0)
        ema.update_parameters(model)  # one step at 0.99: 1 + 0.01
    assert torch.allclose(ema.module.weight, torch.full((2, 2), 1.01), atol=1e-5)
