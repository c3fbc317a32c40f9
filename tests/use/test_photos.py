"""Photos of digits on paper (issue 24): real MNIST test digits printed small, dark on light, at
an off-centre place of a 400x300 photo with paper noise and a lighting gradient, saved as JPEG
and PNG. Read MNIST-style (the default) they become MNIST-like digits that a model trained on
MNIST recognises; read whole (--fit whole, the old way) the digit is a few pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistbench.cli import main
from mnistbench.data.load import load_dataset
from mnistbench.use.inputs import read_file
from mnistbench.use.predict import predict_images
from mnistbench.use.saved import load_model
from tests.saved_models import train

PHOTOS = 30
CENTRE = 13.5  # of a 28x28 image's pixel grid


def make_photo(digit: np.ndarray, rng: np.random.Generator, path: Path) -> Path:
    """A white-on-black 28x28 digit as a photo of dark ink on paper: 60x60 at a random
    off-centre place of a 400x300 picture, light from 150 on the left to 240 on the right (and
    a little from the top), paper texture noise."""
    ink = np.asarray(Image.fromarray(digit).resize((60, 60), Image.Resampling.BICUBIC)) / 255
    height, width = 300, 400
    ys, xs = np.mgrid[0:height, 0:width]
    paper = 150 + 90 * xs / width + 15 * ys / height + rng.normal(0, 8, (height, width))
    top, left = rng.integers(20, height - 80), rng.choice([rng.integers(20, 120), 260])
    window = paper[top : top + 60, left : left + 60]
    window *= 1 - 0.8 * np.clip(ink, 0, 1)  # the ink darkens the paper where it lies
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB").save(path)
    return path


@pytest.fixture(scope="module")
def mnist(real_data_root):
    return load_dataset("mnist", real_data_root)


@pytest.fixture(scope="module")
def photos(mnist, tmp_path_factory) -> tuple[list[Path], list[Path], np.ndarray]:
    """(JPEG photos, PNG photos, their labels) of the first PHOTOS test digits."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(24)
    images, labels = mnist.test_images.numpy()[:PHOTOS], mnist.test_labels.numpy()[:PHOTOS]
    jpegs = [make_photo(image, rng, folder / f"{i:02d}.jpg") for i, image in enumerate(images)]
    pngs = [make_photo(image, rng, folder / f"{i:02d}.png") for i, image in enumerate(images)]
    return jpegs, pngs, labels


@pytest.fixture(scope="module")
def model_path(mnist, tmp_path_factory) -> Path:
    """An SVM fitted on 2,000 real MNIST training images, saved as a run saves it."""
    _, result = train(mnist, tmp_path_factory.mktemp("svm"), model="svm", train_limit=2000,
                      test_limit=200)  # fmt: skip
    return Path(result.model_path)


def _read(paths: list[Path], fit: str) -> np.ndarray:
    return np.concatenate([read_file(path, fit=fit)[1] for path in paths])


def test_a_photo_becomes_an_mnist_digit_20px_and_centred_by_mass(photos) -> None:
    jpegs, pngs, _ = photos
    for path, image in zip(jpegs + pngs, _read(jpegs + pngs, "auto"), strict=True):
        assert image.shape == (28, 28) and image.dtype == np.uint8
        ink = np.argwhere(image > 40)
        long_side = int((np.ptp(ink, axis=0) + 1).max())
        assert 18 <= long_side <= 21, (path.name, long_side)
        mass = (np.indices(image.shape) * image).reshape(2, -1).sum(1) / image.sum()
        assert np.all(np.abs(mass - CENTRE) <= 1), (path.name, mass)
        assert image.max() == 255 and np.median(image) == 0  # contrast-stretched, black paper


def test_a_model_trained_on_mnist_reads_the_photos_and_not_the_whole_pictures(
    photos, model_path
) -> None:
    jpegs, pngs, labels = photos
    model = load_model(model_path)
    right = {}
    for kind, paths in (("jpeg", jpegs), ("png", pngs)):
        for fit in ("auto", "whole"):
            predicted = predict_images(model, [str(p) for p in paths], _read(paths, fit))
            right[kind, fit] = sum(p.label == y for p, y in zip(predicted, labels, strict=True))
    print(f"correct of {PHOTOS}: {right}")
    for kind in ("jpeg", "png"):
        assert right[kind, "auto"] >= 0.8 * PHOTOS, right
        assert right[kind, "auto"] - right[kind, "whole"] >= 0.4 * PHOTOS, right


def test_fit_whole_is_the_old_way_and_the_cli_flag_chooses(photos, model_path, capsys) -> None:
    jpegs, _, _ = photos
    path = jpegs[0]
    # The old way: gray, padded to a square with the border's median, resized, inverted.
    gray = np.asarray(Image.open(path).convert("L"))
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    square = np.full((400, 400), int(np.median(border)), np.uint8)
    square[50:350] = gray
    old = 255 - np.asarray(Image.fromarray(square).resize((28, 28), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(read_file(path, fit="whole")[1][0], old)
    np.testing.assert_array_equal(read_file(path, fit="digit")[1], read_file(path)[1])
    assert not np.array_equal(read_file(path, fit="digit")[1][0], old)

    labels = {}
    for flags in ([], ["--fit", "whole"], ["--fit", "digit"]):
        code = main(["predict", *map(str, jpegs), "--model", str(model_path), *flags,
                     "--json", "-"])  # fmt: skip
        assert code == 0
        labels[tuple(flags)] = [
            p["label"] for p in json.loads(capsys.readouterr().out)["predictions"]
        ]
    model = load_model(model_path)
    for flags, fit in (((), "auto"), (("--fit", "whole"), "whole"), (("--fit", "digit"), "digit")):
        expected = [
            p.label for p in predict_images(model, list(map(str, jpegs)), _read(jpegs, fit))
        ]
        assert labels[flags] == expected, flags
    assert labels[()] != labels["--fit", "whole"]


def test_auto_takes_square_white_on_black_pictures_whole_and_fits_the_others(mnist, tmp_path):
    digit = mnist.test_images.numpy()[0]
    big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.NEAREST))
    Image.fromarray(big).save(tmp_path / "mnist.png")  # an MNIST image, upscaled: as it is
    for fit in ("auto", "whole"):
        whole = read_file(tmp_path / "mnist.png", fit=fit)[1][0].astype(int)
        assert np.mean(np.abs(whole - digit)) < 12
    canvas = np.zeros((200, 300), np.uint8)  # white on black, small in a wide picture
    canvas[20:104, 180:264] = big
    Image.fromarray(canvas).save(tmp_path / "wide.png")
    fitted = read_file(tmp_path / "wide.png")[1][0]
    np.testing.assert_array_equal(fitted, read_file(tmp_path / "wide.png", fit="digit")[1][0])
    assert int((np.ptp(np.argwhere(fitted > 40), axis=0) + 1).max()) >= 18


def test_a_blank_picture_is_taken_whole(tmp_path) -> None:
    Image.fromarray(np.full((50, 80), 200, np.uint8)).save(tmp_path / "blank.png")
    _, images = read_file(tmp_path / "blank.png", fit="digit")
    assert images.shape == (1, 28, 28) and len(np.unique(images)) == 1
