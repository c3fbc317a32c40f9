"""Train / validation / test splits, seeded and reproducible.

- official: the files' own 60k/10k; an optional validation set is carved out of train,
  stratified by class and seeded.
- assignment: the published study's protocol: pool all 70k and split 70/10/20 at random with
  seed 42 (49k/7k/14k). The permutation is exactly that of
  `torch.utils.data.random_split(ConcatDataset([train, test]), [0.7, 0.1, 0.2],
  generator=torch.Generator().manual_seed(42))`, so results match the notebook's split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from mnistbench.data.load import Dataset
from mnistbench.data.sizes import ASSIGNMENT_FRACTIONS, fraction_lengths

SPLITS = ("official", "assignment")
ASSIGNMENT_SEED = 42


@dataclass(frozen=True)
class SplitData:
    """Tensors of one split of one dataset (images uint8 (N, H, W), labels int64 (N,))."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {
            "train": len(self.train_labels),
            "val": len(self.val_labels),
            "test": len(self.test_labels),
        }


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A boolean mask selecting `fraction` of each class at random (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        count = round(fraction * len(members))
        chosen = members[torch.randperm(len(members), generator=generator)[:count]]
        mask[chosen] = True
    return mask


def make_split(
    dataset: Dataset, split: str = "official", *, val_fraction: float = 0.0, seed: int = 0
) -> SplitData:
    """Split a dataset by protocol. `seed` drives the official split's validation hold-out;
    the assignment split always uses the published seed 42."""
    if split == "official":
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction == 0.0:  # nothing held out: no mask, and no copy of 60k images
            empty = dataset.train_labels[:0]
            return SplitData(
                split, dataset.train_images, dataset.train_labels,
                dataset.train_images[:0], empty, dataset.test_images, dataset.test_labels,
            )  # fmt: skip
        is_val = stratified_holdout(dataset.train_labels, val_fraction, seed)
        return SplitData(
            split,
            dataset.train_images[~is_val],
            dataset.train_labels[~is_val],
            dataset.train_images[is_val],
            dataset.train_labels[is_val],
            dataset.test_images,
            dataset.test_labels,
        )
    if split == "assignment":
        images = torch.cat([dataset.train_images, dataset.test_images])
        labels = torch.cat([dataset.train_labels, dataset.test_labels])
        generator = torch.Generator().manual_seed(ASSIGNMENT_SEED)
        order = torch.randperm(len(labels), generator=generator)
        n_train, n_val, _ = fraction_lengths(len(labels), ASSIGNMENT_FRACTIONS)
        parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
        return SplitData(split, *(t for idx in parts for t in (images[idx], labels[idx])))
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _first_of_permutation(
    images: torch.Tensor, labels: torch.Tensor, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or limit >= len(labels):
        return images, labels
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:limit]
    return images[chosen], labels[chosen]


def limit_split(
    split: SplitData,
    train_limit: int | None,
    test_limit: int | None,
    seed: int,
    *,
    val_limit: int | None = None,
) -> SplitData:
    """Keep the first N of each split's seeded permutation (for quick runs).

    A random subset rather than the first N rows, so class balance holds for any N. Each part
    has its own seed (train `seed`, test `seed + 1`, val `seed + 2`: val_limit came last, and
    the train and test subsets of earlier runs stay the same).
    """
    return SplitData(
        split.name,
        *_first_of_permutation(split.train_images, split.train_labels, train_limit, seed),
        *_first_of_permutation(split.val_images, split.val_labels, val_limit, seed + 2),
        *_first_of_permutation(split.test_images, split.test_labels, test_limit, seed + 1),
    )


class SplitSettings(Protocol):
    """The fields of a run that decide its split (RunSpec has them; this layer does not know
    RunSpec)."""

    split: str
    val_fraction: float
    seed: int
    train_limit: int | None
    val_limit: int | None
    test_limit: int | None


def split_for_run(data: Dataset, run: SplitSettings) -> SplitData:
    """The split a run trains and evaluates on: its protocol, then its subsets. The one place
    the engines, their saved models and `evaluate` make it, so that they always agree."""
    split = make_split(data, run.split, val_fraction=run.val_fraction, seed=run.seed)
    return limit_split(split, run.train_limit, run.test_limit, run.seed, val_limit=run.val_limit)
