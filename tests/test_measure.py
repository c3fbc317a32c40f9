import time

import pytest
import torch

from mnistbench.measure import Stopwatch, environment, forward_flops, peak_memory
from mnistbench.models import build_resnet


def test_resnet18_at_224x224x3_is_1_82_g_macs():
    """The published study's 'FLOPs' column (thop) was MACs: 1.82 G for ResNet-18 at 224."""
    model = build_resnet("resnet18", channels=3)
    flops = forward_flops(model, torch.zeros(1, 3, 224, 224))
    assert flops / 2 / 1e9 == pytest.approx(1.82, abs=0.01)


def test_flops_scale_with_batch_and_input():
    model = build_resnet("resnet18", channels=1)
    one = forward_flops(model, torch.zeros(1, 1, 28, 28))
    assert forward_flops(model, torch.zeros(4, 1, 28, 28)) == 4 * one
    assert forward_flops(model, torch.zeros(1, 1, 56, 56)) > 3 * one


def test_flops_counting_leaves_training_mode_alone():
    model = build_resnet("resnet18").train()
    forward_flops(model, torch.zeros(2, 1, 28, 28))
    assert model.training


def test_stopwatch_accumulates_intervals():
    watch = Stopwatch(torch.device("cpu"))
    for _ in range(2):
        watch.start()
        time.sleep(0.02)
        watch.stop()
    assert 0.04 <= watch.seconds < 0.5
    with pytest.raises(RuntimeError):
        watch.stop()


def test_environment_and_memory_are_recorded():
    env = environment(torch.device("cpu"), threads=2)
    for key in ("python", "torch", "torchvision", "sklearn", "cpu", "threads", "device_name"):
        assert env[key], key
    assert env["threads"] == 2
    used, kind = peak_memory(torch.device("cpu"))
    assert kind == "process_peak_rss" and used > 10 * 2**20
