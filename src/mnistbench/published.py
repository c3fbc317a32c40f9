"""The published study's numbers: the one copy in the package, read by the report and benchmarks.

Every row below is the line of the study's README as printed (its tables: Q1(a) MNIST and
FashionMNIST, Q1(b) SVM, Q2 CPU vs GPU), and each value is parsed from that line, so a number
cannot drift from its source. tests/test_published.py checks every line against the README
itself, where a copy of it is beside the repository.

Keys use our names: datasets 'mnist' / 'fashion-mnist', models 'resnet18' / 'resnet50',
optimizers 'sgd' / 'adam', devices 'cpu' / 'cuda', learning rates as floats (0.001 == 1e-3).
Accuracies are test accuracy in %; times are the README's train time in milliseconds
(`train_seconds` converts); Q2's "FLOPs" column is thop's count, which is MACs per forward image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

REPOSITORY = "NisargUpadhyayIITJ/MLOps-NisargUpadhyay-B23CS1075"
SOURCE = f"the published study's README (github.com/{REPOSITORY})"


class GridKey(NamedTuple):
    """A Q1(a) cell. A plain tuple in this order looks it up too."""

    dataset: str
    model: str
    batch_size: int
    optimizer: str
    lr: float


class SvmKey(NamedTuple):
    dataset: str
    kernel: str


class Q2Key(NamedTuple):
    model: str
    device: str


@dataclass(frozen=True)
class Published:
    """One published result and where it was read."""

    accuracy: float
    """Test accuracy, %."""
    train_ms: int | None
    """Train time as printed, in ms; None where the table gives none (Q1(a))."""
    table: str
    """The README table's title."""
    source: str
    """The README's row, verbatim."""
    macs_per_image: float | None = None
    """Q2 only: the "FLOPs" column (thop's count, i.e. MACs per forward image)."""

    @property
    def train_seconds(self) -> float | None:
        return None if self.train_ms is None else self.train_ms / 1000


_DATASETS = {"MNIST": "mnist", "FashionMNIST": "fashion-mnist"}
_MODELS = {"ResNet-18": "resnet18", "ResNet-50": "resnet50"}
_OPTIMIZERS = {"SGD": "sgd", "Adam": "adam"}
_DEVICES = {"CPU": "cpu", "GPU": "cuda"}

# --- the README's tables, as printed ----------------------------------------------------------

# Columns: Batch Size, Optimizer, Learning Rate, ResNet-18 (%), ResNet-50 (%); then the footnote.
_Q1A = {
    "mnist": (
        "Q1(a) Deep Learning Results - MNIST",
        """\
16 SGD 0.001 99.20 99.11
16 SGD 0.0001 97.70 97.27
16 Adam 0.001 98.19 98.46
16 Adam 0.0001 99.15 98.24
32 SGD 0.001 98.95 98.67
32 SGD 0.0001 96.59 94.21
32 Adam 0.001 98.96 98.75
32 Adam 0.0001 98.71 98.02""",
        "* Results with pin_memory=True, Epochs=5",
    ),
    "fashion-mnist": (
        "Q1(a) Deep Learning Results - FashionMNIST",
        """\
16 SGD 0.001 92.06 91.97
16 SGD 0.0001 90.41 89.63
16 Adam 0.001 92.11 89.11
16 Adam 0.0001 92.43 92.60
32 SGD 0.001 90.59 89.71
32 SGD 0.0001 88.86 85.04
32 Adam 0.001 91.12 50.81
32 Adam 0.0001 92.06 92.43""",
        "* Results with pin_memory=False, Epochs=10",
    ),
}
# Columns: Dataset, Kernel, C, Accuracy (%), Train Time (ms).
_SVM_TABLE = "Q1(b) SVM Classification Results"
_SVM_ROWS = """\
MNIST poly 10.0 97.61 286,093
MNIST rbf 10.0 96.99 368,092
FashionMNIST rbf 10.0 89.89 479,740
FashionMNIST poly 10.0 89.84 367,438"""
# Columns: Compute, Model, Accuracy (%), Train Time (ms), FLOPs.
_Q2_TABLE = "Q2 CPU vs GPU Performance (FashionMNIST)"
_Q2_ROWS = """\
GPU ResNet-18 87.24 62,192 1.824G
CPU ResNet-18 87.40 1,149,299 1.824G
GPU ResNet-50 85.69 137,549 4.132G
CPU ResNet-50 83.47 4,234,740 4.132G"""


def _ms(text: str) -> int:
    return int(text.replace(",", ""))


def _grid() -> dict[GridKey, Published]:
    cells = {}
    for dataset, (table, rows, _) in _Q1A.items():
        for line in rows.splitlines():
            batch, optimizer, lr, *accuracies = line.split()
            for model, accuracy in zip(_MODELS.values(), accuracies, strict=True):
                key = GridKey(dataset, model, int(batch), _OPTIMIZERS[optimizer], float(lr))
                cells[key] = Published(float(accuracy), None, table, line)
    return cells


def _svm() -> dict[SvmKey, Published]:
    rows = {}
    for line in _SVM_ROWS.splitlines():
        dataset, kernel, _, accuracy, ms = line.split()
        rows[SvmKey(_DATASETS[dataset], kernel)] = Published(
            float(accuracy), _ms(ms), _SVM_TABLE, line
        )
    return rows


def _q2() -> dict[Q2Key, Published]:
    rows = {}
    for line in _Q2_ROWS.splitlines():
        device, model, accuracy, ms, flops = line.split()
        macs = float(round(float(flops.removesuffix("G")) * 1e9))  # 1.824G -> 1.824e9 exactly
        rows[Q2Key(_MODELS[model], _DEVICES[device])] = Published(
            float(accuracy), _ms(ms), _Q2_TABLE, line, macs
        )
    return rows


def _footnote(dataset: str) -> re.Match[str]:
    note = _Q1A[dataset][2]
    match = re.fullmatch(r"\* Results with pin_memory=(True|False), Epochs=(\d+)", note)
    if match is None:
        raise ValueError(f"unexpected Q1(a) footnote: {note!r}")
    return match


# --- the API ------------------------------------------------------------------------------------

GRID: dict[GridKey, Published] = _grid()
"""Q1(a): every cell of both grids (32), keyed (dataset, model, batch_size, optimizer, lr)."""
SVM: dict[SvmKey, Published] = _svm()
"""Q1(b): the four SVC rows, keyed (dataset, kernel); all at C = SVM_C."""
(SVM_C,) = {float(line.split()[2]) for line in _SVM_ROWS.splitlines()}
Q2: dict[Q2Key, Published] = _q2()
"""Q2 on FashionMNIST, keyed (model, device)."""

# The Q1(a) footnotes' epochs per dataset. Their pin_memory is matched (_footnote), not kept:
# it changes how fast batches reach the GPU, not what a model learns, and nothing reads it.
Q1A_EPOCHS = {dataset: int(_footnote(dataset).group(2)) for dataset in _Q1A}
NAMES: dict[str, str] = {
    ours: theirs
    for names in (_DATASETS, _MODELS, _OPTIMIZERS, _DEVICES)
    for theirs, ours in names.items()
}
"""Our names -> the README's ('resnet18' -> 'ResNet-18'): how the report writes them too."""
# The README's "Key Insights", verbatim: the claims the report tests against our data.
CLAIMS = {
    "optimizer": "SGD with LR=0.001 provides best results for quick convergence. Adam with lower "
    "LR (0.0001) offers more stable training.",
    "batch size": "Smaller batch size (16) consistently yields better accuracy. Larger batches "
    "train faster but may require LR tuning.",
    "GPU acceleration": "GPU provides 18-30x speedup. Larger models benefit more from GPU "
    "parallelization.",
}
# Not in the README's tables: the study's Q2 protocol (DESIGN.md) and its GPU as reported with it.
Q2_EPOCHS = 2
Q2_GPU = "RTX A5000"


def best(dataset: str, model: str | None = None) -> tuple[GridKey, Published]:
    """The published best Q1(a) cell of a dataset (of one model if given): the README's
    "Key Results" (MNIST: ResNet-18 99.20 %, FashionMNIST: ResNet-50 92.60 %)."""
    cells = [
        (key, row)
        for key, row in GRID.items()
        if key.dataset == dataset and (model is None or key.model == model)
    ]
    if not cells:
        raise KeyError(f"no published Q1(a) cell for {dataset!r}, {model!r}")
    return max(cells, key=lambda cell: cell[1].accuracy)


def records() -> list[dict[str, Any]]:
    """Every published row as a flat record (part, key fields, accuracy, train_ms, MACs, table,
    source): one table of them, e.g. for a pandas DataFrame beside measured runs."""
    parts: list[tuple[str, dict[Any, Published]]] = [("q1a", GRID), ("q1b_svm", SVM), ("q2", Q2)]
    return [
        {
            "part": part,
            **key._asdict(),
            "accuracy": row.accuracy,
            "train_ms": row.train_ms,
            "macs_per_image": row.macs_per_image,
            "table": row.table,
            "source": row.source,
        }
        for part, rows in parts
        for key, row in rows.items()
    ]
