import pytest

from mnistbench.data.registry import DATASETS, UnknownDatasetError, get_dataset


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("mnist", "mnist"),
        ("MNIST", "mnist"),
        ("fashion-mnist", "fashion-mnist"),
        ("Fashion", "fashion-mnist"),
        ("FashionMNIST", "fashion-mnist"),
        ("fashion_mnist", "fashion-mnist"),
    ],
)
def test_names_and_aliases(alias, name):
    assert get_dataset(alias).name == name


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset 'cifar10'.*mnist.*fashion"):
        get_dataset("cifar10")


def test_each_dataset_has_ten_classes_and_four_pinned_digests():
    for info in DATASETS.values():
        assert info.num_classes == 10
        assert len(info.sha256) == 4
        assert all(len(digest) == 64 for digest in info.sha256.values())
    assert get_dataset("fashion").classes[9] == "Ankle boot"
