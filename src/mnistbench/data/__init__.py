"""The data layer: IDX files, the dataset registry, acquisition, loading, splits, preprocessing.

Data flows one way: files on disk -> verified uint8 tensors in memory -> splits -> batches
preprocessed on the device. Nothing here knows about models or training.

The names below are imported on first use (PEP 562), not with the package: `mnistbench.config`
imports `mnistbench.data.registry`, which runs this file, and the CLI must start without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "IDXError": "idx",
    "read_idx": "idx",
    "write_idx": "idx",
    "Dataset": "load",
    "DatasetNotFoundError": "load",
    "load_dataset": "load",
    "Preprocess": "preprocess",
    "normalization_stats": "preprocess",
    "DATASETS": "registry",
    "DatasetInfo": "registry",
    "UnknownDatasetError": "registry",
    "get_dataset": "registry",
    "SplitData": "splits",
    "make_split": "splits",
}

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IDXError",
    "Preprocess",
    "SplitData",
    "UnknownDatasetError",
    "get_dataset",
    "load_dataset",
    "make_split",
    "normalization_stats",
    "read_idx",
    "write_idx",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next time, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from mnistbench.data.idx import IDXError, read_idx, write_idx
    from mnistbench.data.load import Dataset, DatasetNotFoundError, load_dataset
    from mnistbench.data.preprocess import Preprocess, normalization_stats
    from mnistbench.data.registry import DATASETS, DatasetInfo, UnknownDatasetError, get_dataset
    from mnistbench.data.splits import SplitData, make_split
