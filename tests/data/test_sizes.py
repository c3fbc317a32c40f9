"""A split's sizes known without loading its data: those that make_split and limit_split make."""

from __future__ import annotations

from mnistbench.data import splits
from mnistbench.data.sizes import split_sizes
from tests.conftest import synthetic_dataset


def test_split_sizes_are_those_the_splits_make() -> None:
    data = synthetic_dataset(n_train=400, n_test=100)
    counts = {"train": 400, "test": 100}
    for split, val_fraction, train_limit, val_limit, test_limit in (
        ("official", 0.0, None, None, None),
        ("official", 0.1, 200, None, 50),
        ("official", 0.1, None, 7, None),
        ("official", 0.25, None, 1_000, 1_000),
        ("assignment", 0.0, None, None, 30),
        ("assignment", 0.0, 100, 20, None),
    ):
        made = splits.limit_split(
            splits.make_split(data, split, val_fraction=val_fraction),
            train_limit, test_limit, seed=0, val_limit=val_limit,
        )  # fmt: skip
        limits = {"train_limit": train_limit, "val_limit": val_limit, "test_limit": test_limit}
        sizes = split_sizes(split, val_fraction, counts, **limits)
        assert made.sizes() == {"train": sizes.train, "val": sizes.val, "test": sizes.test}
