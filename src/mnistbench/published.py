"""The published study's numbers, the one copy in the package (from its README, every table).

Keys use our names: datasets 'mnist' / 'fashion-mnist', models 'resnet18' / 'resnet50',
optimizers 'sgd' / 'adam', devices 'cpu' / 'cuda'. Accuracies are test accuracy in %, times are
the published train times in seconds (the README gives milliseconds), FLOPs are thop's count,
which is MACs per forward image.
"""

from __future__ import annotations

from dataclasses import dataclass

Q1A_EPOCHS = {"mnist": 5, "fashion-mnist": 10}
Q1A_PIN_MEMORY = {"mnist": True, "fashion-mnist": False}

_Q1A_ROWS = {  # (batch, optimizer, lr): (ResNet-18, ResNet-50), as printed
    "mnist": {
        (16, "sgd", 1e-3): (99.20, 99.11), (16, "sgd", 1e-4): (97.70, 97.27),
        (16, "adam", 1e-3): (98.19, 98.46), (16, "adam", 1e-4): (99.15, 98.24),
        (32, "sgd", 1e-3): (98.95, 98.67), (32, "sgd", 1e-4): (96.59, 94.21),
        (32, "adam", 1e-3): (98.96, 98.75), (32, "adam", 1e-4): (98.71, 98.02),
    },
    "fashion-mnist": {
        (16, "sgd", 1e-3): (92.06, 91.97), (16, "sgd", 1e-4): (90.41, 89.63),
        (16, "adam", 1e-3): (92.11, 89.11), (16, "adam", 1e-4): (92.43, 92.60),
        (32, "sgd", 1e-3): (90.59, 89.71), (32, "sgd", 1e-4): (88.86, 85.04),
        (32, "adam", 1e-3): (91.12, 50.81), (32, "adam", 1e-4): (92.06, 92.43),
    },
}  # fmt: skip
# (dataset, model, batch size, optimizer, lr) -> test accuracy %
Q1A_ACCURACY: dict[tuple[str, str, int, str, float], float] = {
    (dataset, model, batch, optimizer, lr): accuracy
    for dataset, rows in _Q1A_ROWS.items()
    for (batch, optimizer, lr), accuracies in rows.items()
    for model, accuracy in zip(("resnet18", "resnet50"), accuracies, strict=True)
}


@dataclass(frozen=True)
class Timed:
    """A published row with a time: accuracy %, train seconds, and MACs per image if given."""

    accuracy: float
    train_seconds: float
    macs_per_image: float | None = None


# (dataset, kernel) -> SVC with C=10 on pixels
SVM: dict[tuple[str, str], Timed] = {
    ("mnist", "poly"): Timed(97.61, 286.093),
    ("mnist", "rbf"): Timed(96.99, 368.092),
    ("fashion-mnist", "rbf"): Timed(89.89, 479.740),
    ("fashion-mnist", "poly"): Timed(89.84, 367.438),
}
SVM_C = 10.0

# (model, device) -> Q2 on FashionMNIST: 2 epochs, batch 32, Adam, lr 1e-4
Q2: dict[tuple[str, str], Timed] = {
    ("resnet18", "cuda"): Timed(87.24, 62.192, 1.824e9),
    ("resnet18", "cpu"): Timed(87.40, 1149.299, 1.824e9),
    ("resnet50", "cuda"): Timed(85.69, 137.549, 4.132e9),
    ("resnet50", "cpu"): Timed(83.47, 4234.740, 4.132e9),
}
Q2_EPOCHS = 2
# The GPU of the Q2 rows: an RTX A5000 as reported with the study (its README names no GPU).
Q2_GPU = "RTX A5000"
