"""Inputs to predict: pictures of any size and mode, IDX and .npy files, folders; bad files are
named with the reason and the others still read."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from mnistbench.data.idx import write_idx
from mnistbench.use.inputs import read_file, read_inputs
from tests.conftest import synthetic_arrays
from tests.saved_models import save_png

IMAGES, LABELS = synthetic_arrays(6, seed=3)


def test_a_28px_png_is_read_as_it_is(tmp_path) -> None:
    names, images = read_file(save_png(tmp_path / "a.png", IMAGES[0]))
    assert names == [str(tmp_path / "a.png")]
    np.testing.assert_array_equal(images[0], IMAGES[0])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_any_mode_and_size_becomes_28px_gray(tmp_path, mode) -> None:
    path = save_png(tmp_path / "big.png", IMAGES[0], scale=10, mode=mode)
    _, images = read_file(path)
    assert images.shape == (1, 28, 28) and images.dtype == np.uint8
    # Upscaled by 10 and resized back: the same picture, to resampling's blur.
    assert np.mean(np.abs(images[0].astype(int) - IMAGES[0])) < 12


def test_a_dark_on_light_photo_is_inverted_by_auto_and_yes_but_not_no(tmp_path) -> None:
    path = tmp_path / "paper.jpg"
    save_png(path, IMAGES[1], scale=4, invert=True, mode="RGB")
    # The whole picture, so that it compares with the image (the digit fit: test_photos.py).
    auto, yes, no = (
        read_file(path, invert, fit="whole")[1][0].astype(int) for invert in ("auto", "yes", "no")
    )
    assert np.mean(np.abs(auto - IMAGES[1])) < 15  # white on black again, as MNIST
    np.testing.assert_array_equal(auto, yes)
    assert np.mean(np.abs(no - (255 - IMAGES[1]))) < 15


def test_a_non_square_picture_keeps_its_shape(tmp_path) -> None:
    wide = np.zeros((28, 84), np.uint8)
    wide[10:18, 38:46] = 255  # a square blob in the middle
    _, images = read_file(save_png(tmp_path / "wide.png", wide))
    blob = np.argwhere(images[0] > 128)
    height, width = np.ptp(blob, axis=0) + 1
    assert abs(int(height) - int(width)) <= 1  # padded, not squashed


def test_idx_files_plain_and_gzip_and_npy_arrays(tmp_path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", IMAGES)
    (tmp_path / "more-images.idx3-ubyte.gz").write_bytes(
        gzip.compress((tmp_path / "t10k-images-idx3-ubyte").read_bytes())
    )
    np.save(tmp_path / "uint8.npy", IMAGES[:2])
    np.save(tmp_path / "floats.npy", IMAGES[:2].reshape(2, 784) / 255.0)  # flat, in [0, 1]
    np.save(tmp_path / "one.npy", IMAGES[3])
    for name, count in [("t10k-images-idx3-ubyte", 6), ("more-images.idx3-ubyte.gz", 6),
                        ("uint8.npy", 2), ("floats.npy", 2), ("one.npy", 1)]:  # fmt: skip
        names, images = read_file(tmp_path / name)
        assert len(names) == count == len(images)
        np.testing.assert_array_equal(images, IMAGES[3:4] if name == "one.npy" else IMAGES[:count])
    assert read_file(tmp_path / "uint8.npy")[0][1] == f"{tmp_path / 'uint8.npy'}[1]"


def test_a_folder_is_read_whole_and_bad_files_are_named_with_the_reason(tmp_path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    save_png(folder / "a.png", IMAGES[0])
    save_png(folder / "sub" / "b.png", IMAGES[1])
    (folder / "broken.png").write_bytes(b"not a picture")
    write_idx(folder / "labels-idx1-ubyte", LABELS)
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object))
    (folder / "notes.txt").write_text("ignored: not an input")
    inputs = read_inputs([folder, tmp_path / "missing.png"])
    assert inputs.names == [str(folder / "a.png"), str(folder / "sub" / "b.png")]
    np.testing.assert_array_equal(inputs.array(), IMAGES[:2])
    problems = dict(inputs.problems)
    assert "not a readable image" in problems[str(folder / "broken.png")]
    assert "label file" in problems[str(folder / "labels-idx1-ubyte")]
    assert "not a readable .npy" in problems[str(folder / "objects.npy")]
    assert problems[str(tmp_path / "missing.png")] == "no such file"
    assert len(problems) == 4


def test_a_file_that_cannot_be_read_is_named_with_the_reason_not_a_traceback(
    tmp_path, monkeypatch
) -> None:
    """An IDX file without read permission (faked: root reads anything) and a picture of more
    pixels than PIL opens (a decompression bomb, or a huge scan): each a problem of its own, and
    the other inputs read."""
    from pathlib import Path

    from PIL import Image

    write_idx(tmp_path / "locked-idx3-ubyte", IMAGES)
    save_png(tmp_path / "huge.png", IMAGES[0], scale=4)  # 112 x 112 pixels
    save_png(tmp_path / "small.png", IMAGES[1])
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "locked-idx3-ubyte":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000)  # PIL refuses twice as many: a bomb
    inputs = read_inputs(sorted(tmp_path.iterdir()))
    assert inputs.names == [str(tmp_path / "small.png")]
    problems = dict(inputs.problems)
    assert problems[str(tmp_path / "locked-idx3-ubyte")] == "not readable: Permission denied"
    assert "not a readable image" in problems[str(tmp_path / "huge.png")]
    assert "decompression bomb" in problems[str(tmp_path / "huge.png")]


def test_the_cli_offers_the_fits_that_reading_knows() -> None:
    """The CLI declares --fit's choices without importing use.inputs (a fast --help)."""
    from mnistbench.cli import models as cli_models
    from mnistbench.use import inputs

    assert cli_models.FITS == inputs.FITS
