"""Which devices this machine has: the one rule that decides whether a device name can be used.

`device_problem` says why a name ('cpu', 'cuda', 'cuda:3', 'mps', 'auto') cannot be used here;
the engine raises it (`resolve_device`), the study records it as a skip (`skip_reason`), and the
cuML SVM back-end asks it about 'cuda'. A device that is missing is never replaced by another.

'auto' is decided here too, once: `auto_device()` is this machine's device kind for 'auto'
('cuda', else 'mps', else 'cpu'). The engine trains an 'auto' spec there (`resolve_device`), and a
study writes it into the spec before the run's key is computed (`concrete_spec`), so that the run
a CPU machine does for 'auto' and the one a GPU machine does are two runs, each done where it ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mnistbench.errors import UserError

if TYPE_CHECKING:
    from mnistbench.config import RunSpec


class DeviceUnavailableError(UserError, RuntimeError):
    """The spec asks for a device this machine does not have. Never fall back silently."""

    flag = "--device"


def visible_gpus() -> int:
    """How many CUDA GPUs this process can use (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_problem(name: str) -> str | None:
    """Why the device `name` cannot be used here, or None when it can ('auto' always can)."""
    if name in ("auto", "cpu"):
        return None
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
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def concrete_spec(spec: RunSpec) -> RunSpec:
    """The spec with device 'auto' replaced by this machine's device kind (`auto_device`): what
    the run will be here, and so its identity. Other devices, and SVMs (whose device field is not
    part of their identity: `svm_backend` decides where they fit), come back unchanged."""
    if spec.is_svm or spec.device != "auto":
        return spec
    return spec.replace(device=auto_device())


def resolve_device(name: str) -> torch.device:
    """'auto' -> `auto_device()`; any other name must be usable here (device_problem), else
    DeviceUnavailableError with device_problem's message."""
    if name == "auto":
        return torch.device(auto_device())
    problem = device_problem(name)
    if problem is not None:
        raise DeviceUnavailableError(problem)
    return torch.device(name)


def skip_reason(spec: RunSpec) -> str | None:
    """Why this machine cannot run the spec at all (a study records it as 'skipped', not
    'failed'): its device, or for an SVM on svm_backend 'cuml', a CUDA GPU."""
    if not spec.is_svm:
        return device_problem(spec.device)
    if spec.svm_backend == "cuml":
        problem = device_problem("cuda")
        if problem is not None:
            return f"svm_backend 'cuml' needs a CUDA GPU: {problem}"
    return None
