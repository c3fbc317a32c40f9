"""Which train times the report may compare: an axis that changes the work per image (a
ResNet's model, image size, channels, stem, batch size; an SVM's kernel, C, gamma, train size),
on a machine whose throughput held steady for runs of identical shape.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from mnistbench.config import RunSpec
from mnistbench.report.frame import finished

STEADY = 1.5
"""Runs of identical shape whose throughput differs more than this many times ran on a shared
machine: their train times are not comparable, and the report draws no time conclusion."""
SPEED = {f.name for f in dataclasses.fields(RunSpec) if f.metadata["role"].speed}
SHAPE = [*sorted(SPEED - {"device", "dataset", "kernel", "degree", "svm_backend", "features"}),
         "device_kind", "device_name", "precision"]  # fmt: skip
"""What makes runs of a ResNet alike in work per image and hardware (their throughput should match)."""
SVM_WORK = ("C", "gamma", "train_limit")
"""SVM fields beside its speed fields (RunSpec) that change its solver's work: the time of an SVM
grows with its support vectors, which these decide."""


def throughput_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per shape (SHAPE) with two or more finished torch runs: the min and max images/s."""
    torch = finished(runs[runs["engine"].eq("torch") & runs["images_per_second"].gt(0)])
    alike = torch.groupby(SHAPE, dropna=False, sort=False)["images_per_second"]
    spread = alike.agg(["min", "max", "size"])
    return spread[spread["size"] > 1]


def changes_work(engines: set[str], factor: str) -> bool:
    """Whether values of `factor` do different work per image (or use other hardware): the
    RunSpec fields that decide speed for these engines, the device, SVM_WORK."""
    field = {f.name: f for f in dataclasses.fields(RunSpec)}.get(factor)
    decides = field is not None and any(field.metadata["role"].decides_speed(e) for e in engines)
    return decides or factor == "device_kind" or ("svm" in engines and factor in SVM_WORK)
