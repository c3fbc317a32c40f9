"""Load a fetched dataset into memory as tensors: uint8 images (N, 28, 28), int64 labels (N,)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistbench.data.idx import check_images_labels, parse_idx
from mnistbench.data.registry import SPLIT_FILES, DatasetInfo, get_dataset
from mnistbench.data.storage import (
    check_digest,
    raw_dir,
    record_verified,
    resolve_root,
    stamp_says_verified,
)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the root; the message says how to fetch them."""


@dataclass(frozen=True)
class Dataset:
    """One dataset in memory, as the official train/test files hold it."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def name(self) -> str:
        return self.info.name


def _load_file(directory: Path, filename: str, info: DatasetInfo, verify: bool) -> np.ndarray:
    path = directory / filename
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing; run `mnistbench data fetch {info.name} --root {directory.parents[1]}`"
        )
    raw = path.read_bytes()
    # The stamp (size + mtime + digest) spares re-hashing 47 MB on every load.
    if verify and not stamp_says_verified(directory, filename, info):
        check_digest(info, filename, raw, str(path))
        record_verified(directory, [filename], info)
    return parse_idx(raw, path).copy()  # copy: frombuffer views of bytes are read-only


def load_dataset(
    name: str | DatasetInfo, root: str | os.PathLike[str] | None = None, *, verify: bool = True
) -> Dataset:
    """Read a dataset's four files from ROOT/<folder>/raw into memory, verified once per file."""
    info = name if isinstance(name, DatasetInfo) else get_dataset(name)
    directory = raw_dir(resolve_root(root), info)
    arrays: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, (images_name, labels_name) in SPLIT_FILES.items():
        images = _load_file(directory, images_name, info, verify)
        labels = _load_file(directory, labels_name, info, verify)
        check_images_labels(images, labels, str(directory / labels_name), info.num_classes)
        arrays[split] = (torch.from_numpy(images), torch.from_numpy(labels).long())
    return Dataset(info, *arrays["train"], *arrays["test"])
