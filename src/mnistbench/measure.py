"""Measurements: device-synchronised timers, FLOPs/MACs counting, peak memory, environment.

Timing is honest: the clock is read only after the device has finished its queued work, and
callers time training and evaluation apart. FLOPs are counted by torch's FlopCounterMode on a
real batch at the real input size, never estimated from a formula. Peak memory is each run's
own: reset at the start of the run (CUDA's peak statistics, or Linux's peak RSS), so that a
small run after a large one in the same process does not report the large one's peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.metadata
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
    """Wait for the work this thread queued on the device (no-op on CPU). On CUDA that is its
    current stream: a run sharing the GPU with others on their own streams (sharedgpu.py)
    waits for its own work only, and a run alone queues all of its work there."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
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


# Whether the host's peak RSS was reset since this process started (reset_host_peak), so that
# VmHWM is the peak of the run that reset it rather than of the whole process.
_host_peak_reset = False


def reset_peak_memory(device: torch.device) -> None:
    """Start a run's peak-memory measure: CUDA's peak allocation on a GPU, the process's peak
    RSS elsewhere. Every engine calls it at the start of each run, so that a run after a
    larger one in the same process reports its own peak (peak_memory)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_host_peak()


def reset_host_peak() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux: "5" to /proc/self/clear_refs
    resets VmHWM), first handing freed heap back to the OS. False where that cannot be done:
    peak_memory then falls back to the whole process's peak and says so."""
    global _host_peak_reset
    gc.collect()
    # What is alive now (modules, datasets, caches) outlives every run: frozen, later full
    # collections skip it, and stay cheap (a full pass over everything torch and scikit-learn
    # made at import takes 0.1-0.2 s, as long as a small SVM's whole run).
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # glibc keeps freed blocks otherwise
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _host_peak_reset = _read_vm_hwm() is not None
    return _host_peak_reset


def _read_vm_hwm() -> int | None:
    """The process's peak RSS in bytes since it started or since reset_host_peak (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, kind) since the run's reset_peak_memory. kind says what was measured:
    'cuda_max_allocated' (a GPU: torch's peak allocation), 'run_peak_rss' (the process's peak
    RSS since the reset, Linux's VmHWM), or 'process_peak_rss' (ru_maxrss, the peak of the
    whole process, where the peak RSS cannot be reset: it may be an earlier run's peak)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    if _host_peak_reset:
        hwm = _read_vm_hwm()
        if hwm is not None:
            return hwm, "run_peak_rss"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return int(peak if sys.platform == "darwin" else peak * 1024), "process_peak_rss"


def machine_key(device: str, threads: int, env: dict[str, Any] | None = None) -> str:
    """What identifies a machine for a measurement: CPU, device, threads, torch. With `env` (a
    stored result's environment), the machine that result ran on."""
    if env is not None:
        cpu, version = env.get("cpu"), env.get("torch")
        name = env.get("device_name") if device != "cpu" else "cpu"
    else:
        cpu, version = this_cpu(), torch.__version__
        name = device_name(torch.device(device)) if device != "cpu" else "cpu"
    return f"{cpu} | {name} | {threads} threads | torch {version}"


@functools.lru_cache(maxsize=1)
def this_cpu() -> str:
    return cpu_model()


def available_memory() -> int | None:
    """Bytes of memory that new work can use without swapping (Linux's MemAvailable); None
    where that is not known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # stated in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


# The widest vector/matrix unit a CPU has, best first: what decides whether bf16 or channels_last
# pays off (benchmarks/README.md).
VECTOR_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 bf16"), ("avx512f", "AVX-512"),
                ("avx2", "AVX2"), ("neon", "NEON"), ("asimd", "NEON"))  # fmt: skip


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name with its family/model and widest vector unit: 'AMD EPYC (25/1, AVX2)'.
    Virtual machines often report a bare 'AMD EPYC' for Zen 3 and Zen 5 alike, whose speeds and
    best settings differ: the suffix keeps their measurements and calibrations apart."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())  # the first processor's entries
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    unit = next((label for flag, label in VECTOR_UNITS if flag in flags), "")
    family = "/".join(fields[k] for k in ("cpu family", "model") if fields.get(k))
    detail = ", ".join(part for part in (family, unit) if part)
    return f"{model} ({detail})" if detail else model


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


def _version(distribution: str) -> str | None:
    """An installed package's version, read from its metadata: importing scikit-learn only to
    ask would add seconds to every torch run."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
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
        "sklearn": _version("scikit-learn"),
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
