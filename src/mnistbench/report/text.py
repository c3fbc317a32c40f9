"""How the report writes things: display names, one format per quantity, labels of configs.

One unit per quantity everywhere (tables, sentences, plots): accuracy in % with 2 decimals,
time in seconds with 2 decimals, ratios as 1.23×, FLOPs in G with 3 decimals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pandas as pd

from mnistbench import published

NAMES = published.NAMES | {"svm": "SVM", "adamw": "AdamW", "mps": "GPU (MPS)"}
"""Display names: the published study's where it has one (ResNet-18, FashionMNIST, GPU). A name
not here (a future engine's model, a dataset added later) is written as it is: 'logreg'."""
LABELS = {"device_kind": "device"}
"""Headers that are not the field's name with spaces (batch_size -> 'batch size')."""
SHORT = {"batch_size": "B{}", "optimizer": "{}", "kernel": "{}", "device_kind": "{}"}
"""How a label names these axes: 'B16, SGD', not 'batch size 16, optimizer SGD'."""
# The formats of the quantities, each the one way the report writes it.
percent = "{:.2f}".format
seconds = "{:,.2f}".format
ratio = "{:.2f}×".format
count = "{:,.0f}".format


def giga(value: float) -> str:
    return f"{value / 1e9:.3f}"


def name(value: object) -> str:
    """How a value is written: its display name, else as it is."""
    return NAMES.get(value, str(value)) if isinstance(value, str) else str(value)


def field_label(field: str) -> str:
    return LABELS.get(field, field.replace("_", " "))


def show(field: str, value: Any) -> str:
    """A spec value as a reader expects it: SGD, 0.001, 16 (not 16.0), 2,000 images, on/off."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        value = int(value)  # a whole number read back as a float from a column with gaps
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}" if field.endswith("_limit") else str(value)
    return name(value)


def settings(row: Mapping[str, Any], axes: Iterable[str]) -> str:
    """'B16, SGD, lr 0.001': the values of `axes` in a row, the model and dataset left out."""
    return ", ".join(
        SHORT.get(axis, f"{field_label(axis)} {{}}").format(show(axis, row[axis]))
        for axis in axes
        if axis not in ("model", "dataset") and pd.notna(row.get(axis))
    )


def label(row: Mapping[str, Any], axes: Iterable[str] = (), dataset: bool = True) -> str:
    """'ResNet-18, MNIST, B16, SGD, lr 0.001': the model, the dataset and every axis in `axes`
    (pass the axes that vary, so that no two configs of an experiment read the same)."""
    parts = [name(row["model"]), *([name(row["dataset"])] if dataset else []), settings(row, axes)]
    return ", ".join(part for part in parts if part)


def formatted(values: pd.Series, fmt: Callable[[Any], str], missing: str = "") -> pd.Series:
    """Each value through `fmt`, `missing` where there is none: always a column of text."""
    text = [fmt(v) if pd.notna(v) else missing for v in values]
    return pd.Series(text, index=values.index, dtype=object)


def plural(number: int, word: str) -> str:
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def counts(values: Iterable[str]) -> str:
    """'2 ok, 1 skipped', in order of first appearance."""
    return ", ".join(f"{n} {value}" for value, n in Counter(values).items())
