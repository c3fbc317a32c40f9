"""The datasets mnistbench knows: names, aliases, classes, files and their pinned digests."""

from __future__ import annotations

from dataclasses import dataclass

from mnistbench.errors import UserError

# The four files of every MNIST-family dataset, in torchvision's names (uncompressed on disk).
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILENAMES: tuple[str, ...] = tuple(name for pair in SPLIT_FILES.values() for name in pair)


@dataclass(frozen=True)
class DatasetInfo:
    """Everything static about one dataset."""

    name: str
    """Canonical name, as used in specs and results: 'mnist' or 'fashion-mnist'."""
    folder: str
    """torchvision's folder name under the data root: ROOT/<folder>/raw/<files>."""
    classes: tuple[str, ...]
    """Class names, index = label."""
    sha256: dict[str, str]
    """SHA-256 of each file's *decompressed* bytes, keyed by file name."""
    sizes: dict[str, int]
    """Number of examples in each split ('train', 'test')."""
    mirrors: tuple[str, ...]
    """Base URLs that serve '<file>.gz' (torchvision's list; the digest guards integrity)."""
    debian_package: str | None = None
    """Debian package that ships the IDX files, if any."""
    system_dirs: tuple[str, ...] = ()
    """Directories where an OS package installs the files."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


MNIST = DatasetInfo(
    name="mnist",
    folder="MNIST",
    classes=tuple(str(digit) for digit in range(10)),
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    sizes={"train": 60_000, "test": 10_000},
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
)

FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    folder="FashionMNIST",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    sizes={"train": 60_000, "test": 10_000},
    mirrors=(
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    debian_package="dataset-fashion-mnist",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (MNIST, FASHION_MNIST)}
_ALIASES: dict[str, str] = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fashion": "fashion-mnist",
}


class UnknownDatasetError(UserError, ValueError):
    """A dataset name that is neither a known name nor an alias."""


def canonical_name(name: str) -> str:
    """Map a name or alias (any case) to its canonical dataset name."""
    key = name.strip().lower()
    if key not in _ALIASES:
        known = ", ".join(sorted(DATASETS))
        aliases = ", ".join(sorted(a for a in _ALIASES if a not in DATASETS))
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known datasets: {known} (aliases: {aliases})"
        )
    return _ALIASES[key]


def get_dataset(name: str) -> DatasetInfo:
    """The DatasetInfo for a name or alias, case-insensitively."""
    return DATASETS[canonical_name(name)]
