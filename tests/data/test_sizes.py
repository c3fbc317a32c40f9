"""A split's sizes known without loading its data: those that make_split and limit_split make."""

from __future__ import annotations

from mnistbench.data import splits
from mnistbench.data.sizes import split_sizes
from tests.conftest import synthetic_dataset


def test_split_sizes_are_those_the_splits_make() -> None:
    data = synthetic_dataset(n_train=400, n_test=100)
    counts = {"train": 400, "test": 100}
    for split, val_fraction, train_limit, test_limit in (
        ("official", 0.0, None, None),
        ("official", 0.1, 200, 50),
        ("official", 0.25, None, 1_000),
        ("assignment", 0.0, None, 30),
        ("assignment", 0.0, 100, None),
    ):
        made = splits.limit_split(
            splits.make_split(data, split, val_fraction=val_fraction),
            train_limit, test_limit, seed=0,
        )  # fmt: skip
        sizes = split_sizes(split, val_fraction, train_limit, test_limit, counts)
        assert made.sizes() == {"train": sizes.train, "val": sizes.val, "test": sizes.test}
