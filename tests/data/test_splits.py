import pytest
import torch
from torch.utils.data import ConcatDataset, TensorDataset, random_split

from mnistbench.data.load import Dataset
from mnistbench.data.registry import MNIST
from mnistbench.data.splits import SplitData, limit_split, make_split, stratified_holdout


def _dataset(n_train: int = 600, n_test: int = 100) -> Dataset:
    # Image i holds the value i % 256 so that we can trace which example went where.
    ids = torch.arange(n_train + n_test)
    images = (ids % 256).to(torch.uint8).view(-1, 1, 1).expand(-1, 2, 2).contiguous()
    labels = ids % 10
    return Dataset(MNIST, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def test_official_split_keeps_files_as_they_are():
    data = _dataset()
    split = make_split(data, "official")
    assert split.sizes() == {"train": 600, "val": 0, "test": 100}
    assert torch.equal(split.test_images, data.test_images)


def test_official_validation_is_stratified_seeded_and_disjoint():
    data = _dataset()
    split = make_split(data, "official", val_fraction=0.1, seed=3)
    assert split.sizes() == {"train": 540, "val": 60, "test": 100}
    assert torch.bincount(split.val_labels).tolist() == [6] * 10
    again = make_split(data, "official", val_fraction=0.1, seed=3)
    assert torch.equal(split.val_images, again.val_images)
    other = stratified_holdout(data.train_labels, 0.1, seed=4)
    assert not torch.equal(other, stratified_holdout(data.train_labels, 0.1, seed=3))


def test_assignment_split_is_49k_7k_14k_and_matches_random_split():
    n_train, n_test = 60_000, 10_000
    data = Dataset(
        MNIST,
        torch.zeros(n_train, 1, 1, dtype=torch.uint8),
        torch.arange(n_train),
        torch.zeros(n_test, 1, 1, dtype=torch.uint8),
        torch.arange(n_train, n_train + n_test),
    )
    split = make_split(data, "assignment")
    assert split.sizes() == {"train": 49_000, "val": 7_000, "test": 14_000}
    # The notebook's way: random_split of the pooled set with a seeded generator.
    pooled = ConcatDataset([TensorDataset(data.train_labels), TensorDataset(data.test_labels)])
    parts = random_split(pooled, [0.7, 0.1, 0.2], generator=torch.Generator().manual_seed(42))
    assert split.train_labels.tolist() == list(parts[0].indices)
    assert split.test_labels.tolist() == list(parts[2].indices)
    # Deterministic, and every example lands in exactly one part.
    assert torch.equal(make_split(data, "assignment").val_labels, split.val_labels)
    everything = torch.cat([split.train_labels, split.val_labels, split.test_labels])
    assert torch.equal(everything.sort().values, torch.arange(70_000))


def test_unknown_split_and_bad_fraction():
    with pytest.raises(ValueError, match="unknown split 'random'"):
        make_split(_dataset(), "random")
    with pytest.raises(ValueError, match="val_fraction"):
        make_split(_dataset(), "official", val_fraction=1.5)


def test_limits_take_a_seeded_subset_the_same_rows_for_the_same_seed():
    # Each image carries its row number, so the rows a limit keeps can be read back.
    rows = torch.arange(300)
    empty = torch.zeros(0, 1, 1)
    split = SplitData("official", rows.view(-1, 1, 1), rows % 10, empty, empty[:, 0, 0],
                      rows[:200].view(-1, 1, 1), rows[:200] % 10)  # fmt: skip

    def kept(seed: int) -> tuple[list[int], list[int]]:
        limited = limit_split(split, 50, 20, seed)
        return limited.train_images.flatten().tolist(), limited.test_images.flatten().tolist()

    train_0, test_0 = kept(0)
    assert (train_0, test_0) == kept(0)
    assert len(set(train_0)) == 50 and len(set(test_0)) == 20
    assert train_0 != list(range(50)), "a random subset, not the first rows"
    train_1, test_1 = kept(1)
    assert train_1 != train_0 and test_1 != test_0
    assert limit_split(split, None, None, 0).train_images.flatten().tolist() == rows.tolist()


def test_val_limit_takes_a_seeded_subset_of_val_and_leaves_train_and_test_as_they_were():
    rows = torch.arange(300)
    split = SplitData("assignment", *(part for idx in (rows[:200], rows[200:260], rows[260:])
                                      for part in (idx.view(-1, 1, 1), idx % 10)))  # fmt: skip
    before = limit_split(split, 50, 20, seed=0)
    limited = limit_split(split, 50, 20, seed=0, val_limit=16)

    val = limited.val_images.flatten().tolist()
    assert len(set(val)) == 16 and set(val) <= set(range(200, 260))
    assert val != list(range(200, 216)), "a random subset, not the first rows"
    assert val == limit_split(split, None, None, 0, val_limit=16).val_images.flatten().tolist()
    assert val != limit_split(split, None, None, 1, val_limit=16).val_images.flatten().tolist()
    assert torch.equal(limited.val_labels, limited.val_images.flatten() % 10)
    for part in ("train_images", "test_images"):  # earlier runs' subsets, unchanged
        assert torch.equal(getattr(limited, part), getattr(before, part))
    assert torch.equal(before.val_images, split.val_images), "val stays whole without val_limit"
