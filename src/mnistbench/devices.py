"""Which devices this machine has: the one rule that decides whether a device name can be used.

`device_problem` says why a name ('cpu', 'cuda', 'cuda:3', 'mps', 'auto') cannot be used here;
the engine raises it (`resolve_device`), the study records it as a skip (`engines.skip_reason`), and the
cuML SVM back-end asks it about 'cuda'. A device that is missing is never replaced by another.

'auto' is decided here too, once: `auto_device()` is this machine's device kind for 'auto'
('cuda', else 'mps', else 'cpu'). The engine trains an 'auto' spec there (`resolve_device`), and a
study writes it into the spec before the run's key is computed (`concrete_spec`), so that the run
a CPU machine does for 'auto' and the one a GPU machine does are two runs, each done where it ran.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.errors import UserError

if TYPE_CHECKING:
    import torch

    from mnistbench.config import RunSpec

# A GPU driver's device files: where none exists on Linux, neither CUDA nor ROCm can be there.
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _surely_no_gpu() -> bool:
    """True when this is a Linux machine without GPU device files and torch is not loaded yet:
    planning a study (`study status`) then needs no torch, whose import alone takes 2 s. Once
    torch is loaded, torch answers (and tests that stand in for a GPU are heard)."""
    return (
        "torch" not in sys.modules
        and sys.platform.startswith("linux")
        and not any(Path(name).exists() for name in _GPU_DEVICE_FILES)
    )


class DeviceUnavailableError(UserError, RuntimeError):
    """The spec asks for a device this machine does not have. Never fall back silently."""

    flag = "--device"


def visible_gpus() -> int:
    """How many CUDA GPUs this process can use (0 without CUDA)."""
    if _surely_no_gpu():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_problem(name: str) -> str | None:
    """Why the device `name` cannot be used here, or None when it can ('auto' always can)."""
    if name in ("auto", "cpu"):
        return None
    import torch

    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"device {name!r} needs CUDA, but CUDA is not available here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}, no GPU visible)"
            )
        gpus = torch.cuda.device_count()
        if (device.index or 0) >= gpus:
            return f"device {name!r} needs GPU {device.index}, but only {gpus} GPU(s) exist here"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"device {name!r} needs Apple MPS, but MPS is not available here"
    return None


def auto_device() -> str:
    """The device kind 'auto' means on this machine: 'cuda', else 'mps', else 'cpu'."""
    if _surely_no_gpu():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def concrete_spec(spec: RunSpec) -> RunSpec:
    """The spec with device 'auto' replaced by this machine's device kind (`auto_device`): what
    the run will be here, and so its identity. Other devices, and SVMs (whose device field is not
    part of their identity: `svm_backend` decides where they fit), come back unchanged."""
    if not spec.reads("device") or spec.device != "auto":
        return spec
    return spec.replace(device=auto_device())


def resolve_device(name: str) -> torch.device:
    """'auto' -> `auto_device()`; any other name must be usable here (device_problem), else
    DeviceUnavailableError with device_problem's message."""
    import torch

    if name == "auto":
        return torch.device(auto_device())
    problem = device_problem(name)
    if problem is not None:
        raise DeviceUnavailableError(problem)
    return torch.device(name)
