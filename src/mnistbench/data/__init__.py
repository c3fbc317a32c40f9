"""The data layer: IDX files, the dataset registry, acquisition, loading, splits, preprocessing.

Data flows one way: files on disk -> verified uint8 tensors in memory -> splits -> batches
preprocessed on the device. Nothing here knows about models or training.
"""

from mnistbench.data.idx import IDXError, read_idx, write_idx
from mnistbench.data.load import Dataset, DatasetNotFoundError, load_dataset
from mnistbench.data.preprocess import Preprocess, normalization_stats
from mnistbench.data.registry import DATASETS, DatasetInfo, UnknownDatasetError, get_dataset
from mnistbench.data.splits import SplitData, make_split

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
