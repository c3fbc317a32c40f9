"""The sizes of a run's split, known without loading the data (splits.py makes the split)."""

from __future__ import annotations

from dataclasses import dataclass

ASSIGNMENT_FRACTIONS = (0.7, 0.1, 0.2)


def fraction_lengths(total: int, fractions: tuple[float, ...]) -> list[int]:
    # random_split's rule: floor each, then hand out the remainder one by one from the first.
    lengths = [int(total * fraction) for fraction in fractions]
    for index in range(total - sum(lengths)):
        lengths[index % len(lengths)] += 1
    return lengths


@dataclass(frozen=True)
class Sizes:
    """The images in each part of a run's split."""

    train: int
    val: int
    test: int


def split_sizes(
    split: str,
    val_fraction: float,
    dataset: dict[str, int],
    *,
    train_limit: int | None = None,
    val_limit: int | None = None,
    test_limit: int | None = None,
) -> Sizes:
    """The train/val/test sizes `make_split` and `limit_split` make from a dataset of `dataset`
    sizes, without loading it (the stratified hold-out rounds per class, so val may differ by a
    few images)."""
    if split == "assignment":
        total = dataset["train"] + dataset["test"]
        train, val, test = fraction_lengths(total, ASSIGNMENT_FRACTIONS)
    else:
        val = round(dataset["train"] * val_fraction)
        train, test = dataset["train"] - val, dataset["test"]
    return Sizes(*(
        size if limit is None else min(size, limit)
        for size, limit in ((train, train_limit), (val, val_limit), (test, test_limit))
    ))  # fmt: skip
