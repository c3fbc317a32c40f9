"""Images to predict, from files a user has: PNG/JPEG (any size and mode), IDX files and .npy
arrays, one by one or whole folders, as uint8 (N, 28, 28) white-on-black, the way the IDX files
hold MNIST.

A picture is converted to grayscale. MNIST is white on black; a photo of a digit on paper is
dark on light, so `invert="auto"` inverts a picture whose border is light ("yes" and "no"
decide for every input). Then, as MNIST itself was made (`fit="digit"`): the paper's light
(a smooth surface, so that a brightness gradient goes) is subtracted, the ink is found above
the paper's noise, its contrast stretched, its bounding box cropped and fitted into a 20x20 box
keeping its aspect ratio (anti-aliased), and placed in 28x28 with its centre of mass at the
centre. `fit="whole"` pads the whole picture to a square with its background and resizes it to
28x28 instead; `fit="auto"` fits the digit of a dark-on-light or non-square picture, and takes
a square white-on-black one (an MNIST image, upscaled say) whole. IDX and .npy arrays are
MNIST-like already: resized only when they are not 28x28. A file that cannot be read is
reported with the reason, and the other files are read all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from mnistbench.data.idx import IDXError, parse_idx

SIZE = 28
BOX = 20  # MNIST's digits were fitted into 20x20, then centred by mass in 28x28
FITS = ("auto", "digit", "whole")
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


def read_inputs(paths: list[Path], invert: str = "auto", fit: str = "auto") -> Inputs:
    """Read every file, and every image, IDX and .npy file in each folder (sorted, recursive)."""
    inputs = Inputs()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if _wanted(p)) if path.is_dir() else [path]
        if path.is_dir() and not files:
            inputs.problems.append((str(path), "a folder with no image, IDX or .npy file"))
        for file in files:
            try:
                names, images = read_file(file, invert, fit)
            except InputError as exc:
                inputs.problems.append((str(file), str(exc)))
                continue
            inputs.names += names
            inputs.images.append(images)
    return inputs


class InputError(ValueError):
    """A file that cannot be read as images; the message says why."""


def read_file(path: Path, invert: str = "auto", fit: str = "auto") -> tuple[list[str], np.ndarray]:
    """(names, uint8 images (N, 28, 28)) of one file: '.npy', IDX (by its magic number) or a
    picture (`fit`: see the module's docstring)."""
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file")
    if path.suffix.lower() == ".npy":
        images = _from_array(_load_npy(path))
    elif _is_idx(path):
        images = _from_array(_load_idx(path))
    else:
        return [str(path)], _picture_to_mnist(_load_picture(path), invert, fit)[None]
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
    except OSError as exc:  # no permission, a file gone since it was listed
        raise InputError(f"not readable: {exc.strerror or exc}") from exc
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
    """A picture file as a grayscale uint8 image (H, W), at most MAX_SIDE on its long side."""
    try:
        with Image.open(path) as picture:
            picture.load()
            gray = _flatten_alpha(picture).convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: a picture of more pixels than PIL opens (a bomb, or a scan)
        raise InputError(f"not a readable image ({exc})") from exc
    if max(gray.size) > MAX_SIDE:  # a phone's photo: smaller, still far more than 20 px
        gray.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.uint8)


MAX_SIDE = 1200


def _picture_to_mnist(picture: np.ndarray, invert: str, fit: str) -> np.ndarray:
    """One grayscale picture (H, W) -> a 28x28 uint8 image, white on black."""
    light = _light(picture[None])
    inverted = invert == "yes" or (invert == "auto" and light)
    square = picture.shape[0] == picture.shape[1]
    if fit == "digit" or (fit == "auto" and (light or not square)):
        digit = fit_digit(_invert(picture, inverted))
        if digit is not None:
            return digit
    return _invert(_resize(picture), inverted)  # the whole picture, as before the digit fit


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
    """Whether a picture is dark on light: its border's median is nearer its lightest pixels than
    its darkest (paper in dim light is light all the same)."""
    low, high = np.percentile(images[0], [0.1, 99.9])
    return float(np.median(_border(images[0]))) > max((low + high) / 2, 0.5)


def _invert(images: np.ndarray, invert: bool) -> np.ndarray:
    return (255 - images).astype(np.uint8) if invert else images


def fit_digit(picture: np.ndarray) -> np.ndarray | None:
    """A white-on-black picture's digit as MNIST made its digits (see the module's docstring),
    as 28x28 uint8; None when no ink stands out of the background."""
    signal, noise = _ink_signal(picture.astype(np.float64))
    mask = _ink_mask(signal, noise)
    if mask is None:
        return None
    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    low = max(3 * noise, 0.1 * float(signal[mask].max()))
    high = float(np.percentile(signal[mask], 90))  # the strokes' core: full white, as in MNIST
    ink = np.clip((signal[box] - low) / max(high - low, 1e-9), 0, 1)
    ink *= ndimage.binary_dilation(mask, iterations=2)[box]  # the paper's specks left out
    return _centre_by_mass(_fit_box(ink))


def _ink_signal(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink above the background, the background's noise level). The background is a smooth
    quadratic surface fitted to the pixels that are not ink (robustly: ink is the bright
    outliers), so that a lighting gradient across the paper is taken away."""
    height, width = image.shape
    step = max(1, int(np.sqrt(height * width / 10_000)))
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    basis = _quadratic_basis(ys.ravel() / height - 0.5, xs.ravel() / width - 0.5)
    values = image[::step, ::step].ravel()
    keep = np.ones(len(values), bool)
    for _ in range(4):
        chosen = basis[keep]  # least squares by the normal equations: 6 unknowns, fast
        coefficients = np.linalg.lstsq(chosen.T @ chosen, chosen.T @ values[keep], rcond=None)[0]
        residual = values - basis @ coefficients
        noise = max(1.4826 * float(np.median(np.abs(residual[keep]))), 1.0)
        keep = residual < 3 * noise
    y = (np.arange(height) / height - 0.5)[:, None]
    x = (np.arange(width) / width - 0.5)[None, :]
    c = coefficients
    background = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y
    return image - background, noise


def _quadratic_basis(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _ink_mask(signal: np.ndarray, noise: float) -> np.ndarray | None:
    """The ink: pixels well above the noise (a 3x3 median first, on a picture large enough,
    quiets speckle and JPEG noise) and above a share of the strongest ink, in connected parts of
    at least 5 % of the largest (specks and dust are left out)."""
    smooth = ndimage.median_filter(signal, size=3) if min(signal.shape) >= 64 else signal
    peak = float(smooth.max())
    threshold = max(5 * noise, 0.3 * peak)
    if peak <= threshold or peak < 20:  # nothing stands out: a blank or noisy picture
        return None
    labels, _ = ndimage.label(smooth > threshold, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.flatnonzero(sizes >= 0.05 * sizes.max()) + 1
    return np.isin(labels, kept)


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] resized (anti-aliased) to fit BOX x BOX, its aspect ratio kept."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(ink.astype(np.float32), mode="F").resize(
        size, Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized, dtype=np.float64), 0, 1)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """The digit placed in SIZE x SIZE with its centre of mass at the centre (whole pixels, as
    MNIST; what would fall outside is cut)."""
    centre = (SIZE - 1) / 2
    mass_y, mass_x = ndimage.center_of_mass(digit)
    top, left = round(centre - mass_y), round(centre - mass_x)
    out = np.zeros((SIZE, SIZE))
    height, width = digit.shape
    rows = slice(max(top, 0), min(top + height, SIZE))
    cols = slice(max(left, 0), min(left + width, SIZE))
    out[rows, cols] = digit[
        rows.start - top : rows.stop - top, cols.start - left : cols.stop - left
    ]
    return np.rint(out * 255).astype(np.uint8)
