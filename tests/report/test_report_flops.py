"""Issue 24: Q2's MACs at the published input (224×224×3), ours beside the published count."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch
from torch import nn

from mnistbench import published
from mnistbench.engines.torch.models import build_resnet
from mnistbench.report import flops
from mnistbench.report.tables import PUBLISHED_INPUT_MACS, published_input_macs

MODELS = ("resnet18", "resnet50")


def thop_batchnorm_ops(model: str) -> int:
    """What thop counts beyond conv/linear MACs: 4 operations per BatchNorm output element
    (count_normalization: 2 per element, doubled for the affine); ReLU and max-pool count 0."""
    elements = 0

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal elements
        elements += output.numel()

    with torch.device("meta"):
        net = build_resnet(model, channels=3, stem="imagenet").eval()
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.register_forward_hook(hook)
        net(torch.empty(1, 3, 224, 224))
    return 4 * elements


@pytest.mark.parametrize("model", MODELS)
def test_macs_at_224x224x3_agree_with_the_published_count(model: str) -> None:
    ours, theirs = flops.macs_at_published_input(model), published.Q2[(model, "cpu")].macs_per_image
    # thop's convention (ours + its BatchNorm ops) reproduces the published figure as printed,
    # 3 decimals in G: a broken count (input, stem, head, halving) cannot pass this.
    assert round((ours + thop_batchnorm_ops(model)) / 1e9, 3) == pytest.approx(theirs / 1e9)
    # Ours alone: conv + linear MACs, 0.54 % (ResNet-18) and 1.09 % (ResNet-50) under thop's.
    assert ours == pytest.approx(theirs, rel=0.012)
    assert ours < theirs


def test_the_count_is_cached_quick_and_none_for_a_model_that_is_no_resnet() -> None:
    flops.macs_at_published_input.cache_clear()
    start = time.perf_counter()
    counts = [flops.macs_at_published_input(m) for m in MODELS]
    assert time.perf_counter() - start < 5  # meta device: no arithmetic
    assert counts == [flops.macs_at_published_input(m) for m in MODELS]
    assert flops.macs_at_published_input.cache_info().hits == len(MODELS)
    assert flops.macs_at_published_input("svm") is None


def test_the_column_shows_ours_beside_the_published_for_each_model_row() -> None:
    assert PUBLISHED_INPUT_MACS == "GMACs/img at 224×224×3 (ours | published)"
    models = pd.Series(["resnet18", "resnet18", "resnet50", "resnet50", "svm"])
    text, ours = published_input_macs(models)
    assert text.tolist() == [*["1.814 | 1.824"] * 2, *["4.087 | 4.132"] * 2, "— | —"]
    assert ours.iloc[:4].tolist() == [flops.macs_at_published_input(m) for m in models[:4]]
    assert pd.isna(ours.iloc[4])
