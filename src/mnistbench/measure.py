"""Measurements: device-synchronised timers, FLOPs/MACs counting, peak memory, environment.

Timing is honest: the clock is read only after the device has finished its queued work, and
callers time training and evaluation apart. FLOPs are counted by torch's FlopCounterMode on a
real batch at the real input size, never estimated from a formula.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on the device (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Stopwatch:
    """Accumulates device-synchronised wall-clock time over start/stop intervals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._started: float | None = None

    def start(self) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()

    def stop(self) -> float:
        if self._started is None:
            raise RuntimeError("Stopwatch.stop() without start()")
        synchronize(self.device)
        elapsed = time.perf_counter() - self._started
        self.seconds += elapsed
        self._started = None
        return elapsed


def forward_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass over `example` (a batch), counted by FlopCounterMode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, kind): CUDA max allocated on GPUs; the process's peak RSS elsewhere."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return int(peak if sys.platform == "darwin" else peak * 1024), "process_peak_rss"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


def git_commit() -> str | None:
    """mnistbench's git commit when running from a checkout (None when installed elsewhere)."""
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(device: torch.device | None = None, threads: int | None = None) -> dict[str, Any]:
    """What produced a result: versions, hardware, threads, commit."""
    from mnistbench import __version__

    env: dict[str, Any] = {
        "mnistbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "sklearn": _version("sklearn"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "hostname": platform.node(),
    }
    if device is not None:
        env["device"] = str(device)
        env["device_name"] = device_name(device)
        if device.type == "cuda":
            env |= gpu_environment(device)
    return env


def gpu_driver_version() -> str | None:
    """The NVIDIA driver's version as nvidia-smi prints it (None where nvidia-smi is absent)."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0].strip() if result.returncode == 0 and lines else None


def gpu_environment(device: torch.device) -> dict[str, Any]:
    """What identifies a GPU result: CUDA/cuDNN, driver, memory, compute capability."""
    properties = torch.cuda.get_device_properties(device)
    return {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu_driver": gpu_driver_version(),
        "gpu_memory_bytes": int(properties.total_memory),
        "gpu_compute_capability": f"{properties.major}.{properties.minor}",
        "gpu_multiprocessors": int(properties.multi_processor_count),
    }
