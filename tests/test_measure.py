import time
from pathlib import Path

import pytest
import torch

from mnistbench import measure
from mnistbench.engines.torch.models import build_resnet
from mnistbench.measure import (
    Stopwatch,
    environment,
    forward_flops,
    peak_memory,
    reset_peak_memory,
)


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
    assert kind in ("run_peak_rss", "process_peak_rss") and used > 10 * 2**20


MIB = 2**20
resettable_peak = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="the peak RSS resets on Linux only"
)


def _touch(mib: int) -> None:
    """Make the process's RSS grow by about `mib` MiB, then free it."""
    block = torch.ones(mib * MIB // 4)
    del block


@resettable_peak
def test_a_small_run_after_a_large_one_reports_its_own_peak():
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    _touch(256)
    large, kind = peak_memory(cpu)
    reset_peak_memory(cpu)  # the next run starts
    _touch(4)
    small, kind = peak_memory(cpu)
    assert kind == "run_peak_rss"
    assert small < large - 200 * MIB


def test_without_a_resettable_peak_the_kind_says_it_is_the_whole_processs(monkeypatch):
    monkeypatch.setattr(measure, "_read_vm_hwm", lambda: None)
    monkeypatch.setattr(measure, "_host_peak_reset", False)
    reset_peak_memory(torch.device("cpu"))
    used, kind = peak_memory(torch.device("cpu"))
    assert kind == "process_peak_rss" and used > 10 * MIB


ZEN3 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
    "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
    "processor\t: 1\nmodel name\t: other\n"
)
ZEN5 = ZEN3.replace(": 25", ": 26").replace("avx2 fma", "avx2 avx512f avx512_bf16 fma")


def test_cpus_that_share_a_bare_name_are_told_apart_by_family_and_vector_unit():
    assert measure.cpu_model(ZEN3) == "AMD EPYC (25/1, AVX2)"  # the first processor's entries
    assert measure.cpu_model(ZEN5) == "AMD EPYC (26/1, AVX-512 bf16)"
    xeon = "model name\t: Intel Xeon\ncpu family\t: 6\nmodel\t\t: 143\nflags\t\t: avx2 avx512f amx_bf16\n"
    assert measure.cpu_model(xeon) == "Intel Xeon (6/143, AMX)"
    assert measure.cpu_model("") == measure.cpu_model("garbage without fields")  # the platform's
