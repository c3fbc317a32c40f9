"""Helpers for the tests of saved models: real IDX files of a synthetic dataset in a folder, and
tiny models trained on them through the real engines, which save them as a study would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset, load_dataset
from mnistbench.data.registry import DatasetInfo
from mnistbench.data.storage import raw_dir
from mnistbench.engines import run_spec
from mnistbench.result import RunResult
from tests.conftest import info_for, synthetic_files, write_files

# Small and fast: two steps of 16 images of a ResNet-18 at 28 px, the layout fixed (no timing of layouts).
RESNET = {"model": "resnet18", "epochs": 1, "train_limit": 32, "test_limit": 100,
          "batch_size": 16, "device": "cpu", "threads": 2, "memory_format": "contiguous",
          "lr_schedule": "none"}  # fmt: skip
SVM = {"model": "svm", "svm_backend": "sklearn", "threads": 2, "train_limit": 300}


def synthetic_root(folder: Path, n_train: int = 400, n_test: int = 100) -> tuple[Path, Dataset]:
    """Real IDX files of the synthetic dataset under folder (torchvision's layout), read back
    through the real loader."""
    files = synthetic_files(n_train, n_test)
    info: DatasetInfo = info_for(files)
    write_files(raw_dir(folder, info), files)
    return folder, load_dataset(info, folder)


def train(data: Dataset, directory: Path, **fields: object) -> tuple[RunSpec, RunResult]:
    """Train (or fit) one run as a study does, its final model kept in `directory`."""
    base = SVM if fields.get("model") == "svm" else RESNET
    spec = RunSpec(**{**base, **fields})
    result = run_spec(spec, data, directory)
    assert result.status == "ok" and result.model_path, result.message
    return spec, result


def save_png(path: Path, image: np.ndarray, *, scale: int = 1, invert: bool = False,
             mode: str = "L") -> Path:  # fmt: skip
    """An image as a picture file: upscaled, dark-on-light or in another mode when asked."""
    pixels = 255 - image if invert else image
    picture = Image.fromarray(pixels.astype(np.uint8)).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST
    )
    picture.convert(mode).save(path)
    return path
