"""Images to predict, from files a user has: PNG/JPEG (any size and mode), IDX files and .npy
arrays, one by one or whole folders, as uint8 (N, 28, 28) white-on-black, the way the IDX files
hold MNIST.

A picture is converted to grayscale, padded to a square with its background (so that a digit
keeps its shape), and resized to 28x28. MNIST is white on black; a photo of a digit on paper
is dark on light, so `invert="auto"` inverts a picture whose border is mostly light ("yes" and
"no" decide for every input). A file that cannot be read is reported with the reason, and the
other files are read all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnistbench.data.idx import IDXError, parse_idx

SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Inputs:
    """Images read so far, one name per image, and the files that could not be read."""

    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    """(file, why) for each file that was not read."""

    def array(self) -> np.ndarray:
        """All images as one uint8 array (N, 28, 28)."""
        if not self.images:
            return np.zeros((0, SIZE, SIZE), np.uint8)
        return np.concatenate([image.reshape(-1, SIZE, SIZE) for image in self.images])


def read_inputs(paths: list[Path], invert: str = "auto") -> Inputs:
    """Read every file, and every image, IDX and .npy file in each folder (sorted, recursive)."""
    inputs = Inputs()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if _wanted(p)) if path.is_dir() else [path]
        if path.is_dir() and not files:
            inputs.problems.append((str(path), "a folder with no image, IDX or .npy file"))
        for file in files:
            try:
                names, images = read_file(file, invert)
            except InputError as exc:
                inputs.problems.append((str(file), str(exc)))
                continue
            inputs.names += names
            inputs.images.append(images)
    return inputs


class InputError(ValueError):
    """A file that cannot be read as images; the message says why."""


def read_file(path: Path, invert: str = "auto") -> tuple[list[str], np.ndarray]:
    """(names, uint8 images (N, 28, 28)) of one file: '.npy', IDX (by its magic number) or a
    picture."""
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file")
    if path.suffix.lower() == ".npy":
        images = _from_array(_load_npy(path))
    elif _is_idx(path):
        images = _from_array(_load_idx(path))
    else:
        picture = _load_picture(path)
        return [str(path)], _invert(
            picture, invert == "yes" or (invert == "auto" and _light(picture))
        )
    images = _invert(images, invert == "yes")
    names = [str(path)] if len(images) == 1 else [f"{path}[{i}]" for i in range(len(images))]
    return names, images


def _wanted(path: Path) -> bool:
    suffix = path.suffix.lower()
    return path.is_file() and (suffix in IMAGE_SUFFIXES or suffix == ".npy" or _is_idx(path))


def _is_idx(path: Path) -> bool:
    """IDX files are named `*-ubyte` (`*.idx3-ubyte`, `.gz` too) or `*.idx`."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith("ubyte") or name.endswith(".idx")


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)  # no pickled objects: no code runs
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a readable .npy array: {exc}") from exc


def _load_idx(path: Path) -> np.ndarray:
    try:
        array = parse_idx(path.read_bytes(), path)
    except IDXError as exc:
        raise InputError(exc.problem) from exc
    if array.ndim != 3:
        raise InputError("an IDX label file (idx1), not images (idx3)")
    return array


def _from_array(array: np.ndarray) -> np.ndarray:
    """An array of one image (H, W) or many (N, H, W) or flat (N, 784) -> uint8 (N, 28, 28).
    Floats are taken as [0, 1] (or [0, 255] when larger values occur)."""
    if array.ndim == 2 and array.shape[1] == SIZE * SIZE and array.shape[0] != SIZE:
        array = array.reshape(-1, SIZE, SIZE)
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise InputError(f"shape {array.shape}: expected (H, W), (N, H, W) or (N, 784) images")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise InputError(f"dtype {array.dtype}: expected uint8 or finite numbers")
        scale = 255.0 if float(array.max(initial=0)) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if array.shape[1:] != (SIZE, SIZE):
        array = np.stack([_resize(image) for image in array])
    return array


def _load_picture(path: Path) -> np.ndarray:
    """A picture file as one grayscale 28x28 uint8 image, padded to a square first."""
    try:
        with Image.open(path) as picture:
            picture.load()
            gray = _flatten_alpha(picture).convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"not a readable image ({exc})") from exc
    return _resize(np.asarray(gray))[None]


def _flatten_alpha(picture: Image.Image) -> Image.Image:
    """A transparent picture over white, as it shows in a viewer."""
    if picture.mode in ("RGBA", "LA") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba)
    return picture


def _resize(image: np.ndarray) -> np.ndarray:
    """A 2-D uint8 image padded to a square with its border's median, then resized to 28x28."""
    height, width = image.shape
    if (height, width) == (SIZE, SIZE):
        return image
    side = max(height, width)
    fill = int(np.median(_border(image)))
    square = np.full((side, side), fill, np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = image
    resized = Image.fromarray(square).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def _border(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _light(images: np.ndarray) -> bool:
    """Whether a picture is dark on light: its border is mostly light."""
    return float(np.mean(_border(images[0]))) > 127


def _invert(images: np.ndarray, invert: bool) -> np.ndarray:
    return (255 - images).astype(np.uint8) if invert else images
