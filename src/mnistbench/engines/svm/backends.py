"""The SVM back-ends: scikit-learn's SVC, scikit-learn-intelex's and cuML's twins; which can run
here, the fastest of them, and an SVC built for a spec."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.devices import device_problem
from mnistbench.errors import UserError

# Fastest first: `svm_backend = "auto"` takes the first one that can run here.
SVM_BACKEND_PREFERENCE = ("cuml", "sklearnex", "sklearn")
# The distribution that carries each back-end, for the version recorded with a result.
_SVM_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "sklearnex": "scikit-learn-intelex",
    "cuml": "cuml",
}
_SVC_MODULES = {"sklearn": "sklearn.svm", "sklearnex": "sklearnex.svm", "cuml": "cuml.svm"}


class SVMBackendUnavailableError(UserError, RuntimeError):
    """An SVM back-end was asked for by name but cannot run here; the message says why."""

    flag = "--svm-backend"


@functools.cache
def svm_backend_problem(backend: str) -> str | None:
    """Why `backend` cannot run here, or None when it can. Imports it (once) to find out."""
    if backend not in _SVC_MODULES:
        return f"unknown SVM back-end; choose one of {', '.join(SVM_BACKEND_PREFERENCE)}"
    if backend == "cuml" and (problem := device_problem("cuda")) is not None:
        return f"cuML needs a CUDA GPU: {problem}"
    try:
        importlib.import_module(_SVC_MODULES[backend])
    except Exception as exc:  # cuML can fail with CUDA or driver errors, not only ImportError
        hint = {
            "sklearnex": " (pip install 'mnistbench[fast]', x86-64 only)",
            "cuml": " (install RAPIDS cuML for your CUDA version)",
        }.get(backend, "")
        return f"cannot import {_SVC_MODULES[backend]}: {exc}{hint}"
    return None


def available_svm_backends() -> list[str]:
    """The back-ends that can run here, fastest first."""
    return [name for name in SVM_BACKEND_PREFERENCE if svm_backend_problem(name) is None]


def resolve_svm_backend(requested: str) -> str:
    """The back-end to use: the fastest available for 'auto', else the one named, if it runs."""
    if requested == "auto":
        return available_svm_backends()[0]  # sklearn is a hard dependency: never empty
    problem = svm_backend_problem(requested)
    if problem is not None:
        raise SVMBackendUnavailableError(
            f"svm_backend={requested!r} is not available here: {problem}. "
            f"Available: {', '.join(available_svm_backends())} "
            "(svm_backend='auto' picks the fastest of them)."
        )
    return requested


def svm_backend_version(backend: str) -> str:
    """The installed version of the back-end's distribution, e.g. '2025.4.0'.

    From the distribution, not the module: sklearnex.__version__ is a build placeholder
    ('2199.9.9') in some wheels.
    """
    try:
        return importlib.metadata.version(_SVM_DISTRIBUTIONS[backend])
    except importlib.metadata.PackageNotFoundError:
        # cuML ships as cuml-cu12 etc. on PyPI; the module still knows its version.
        module = importlib.import_module(_SVC_MODULES[backend].split(".")[0])
        return str(getattr(module, "__version__", "unknown"))


def build_svm(spec: RunSpec) -> tuple[Any, str]:
    """An unfitted SVC for the spec's kernel, C, gamma and degree on the back-end it resolves to.

    Returns (estimator, label), the label naming the back-end and its version ('sklearnex
    2025.4.0'). The estimator is the back-end's own SVC, used as it is; its full parameters are
    on `estimator.get_params()`. Raises SVMBackendUnavailableError for a named back-end that
    cannot run here.
    """
    backend = resolve_svm_backend(spec.svm_backend)
    svc_class = importlib.import_module(_SVC_MODULES[backend]).SVC
    params: dict[str, Any] = {
        "kernel": spec.kernel,
        "C": spec.C,
        "gamma": spec.gamma,
        "degree": spec.degree,  # read only by the poly kernel
    }
    if backend == "sklearnex":
        # oneDAL runs threaded; libsvm (sklearn) is single-threaded and has no such knob.
        params["n_jobs"] = spec.threads
    return svc_class(**params), f"{backend} {svm_backend_version(backend)}"
