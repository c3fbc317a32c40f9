"""SVM back-end selection: what `auto` picks, what a named back-end builds, what fails and how."""

from __future__ import annotations

import importlib.metadata

import pytest
import sklearn
import sklearn.svm

from mnistbench.config import RunSpec
from mnistbench.engines.svm import backends as models
from mnistbench.engines.svm.backends import (
    SVMBackendUnavailableError,
    available_svm_backends,
    build_svm,
    resolve_svm_backend,
    svm_backend_problem,
)


def _only(available: set[str]):
    """A stand-in for svm_backend_problem under which only `available` back-ends can run."""
    return lambda name: None if name in available else f"{name} is not installed (test)"


def test_sklearn_backend_builds_plain_svc_with_the_specs_parameters():
    spec = RunSpec(model="svm", kernel="poly", C=3.0, gamma=0.5, degree=4, svm_backend="sklearn")
    estimator, label = build_svm(spec)
    assert type(estimator) is sklearn.svm.SVC
    params = estimator.get_params()
    assert (params["kernel"], params["C"], params["gamma"], params["degree"]) == (
        "poly",
        3.0,
        0.5,
        4,
    )
    assert label == f"sklearn {sklearn.__version__}"


def test_sklearnex_backend_is_intels_svc_with_the_specs_threads():
    pytest.importorskip("sklearnex")
    spec = RunSpec(model="svm", kernel="rbf", C=10.0, svm_backend="sklearnex", threads=1)
    estimator, label = build_svm(spec)
    assert type(estimator).__module__.startswith("sklearnex.")
    assert estimator.get_params()["n_jobs"] == 1
    assert estimator.get_params()["C"] == 10.0
    assert label == f"sklearnex {importlib.metadata.version('scikit-learn-intelex')}"


def test_auto_picks_sklearnex_here_when_it_is_installed_and_cuml_is_not():
    pytest.importorskip("sklearnex")
    if svm_backend_problem("cuml") is None:
        pytest.skip("cuML runs here, so auto rightly prefers it")
    assert resolve_svm_backend("auto") == "sklearnex"
    _, label = build_svm(RunSpec(model="svm", svm_backend="auto"))
    assert label.startswith("sklearnex ")


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        ({"sklearn", "sklearnex", "cuml"}, "cuml"),
        ({"sklearn", "sklearnex"}, "sklearnex"),
        ({"sklearn", "cuml"}, "cuml"),
        ({"sklearn"}, "sklearn"),
    ],
)
def test_auto_picks_the_fastest_available(monkeypatch, available, expected):
    monkeypatch.setattr(models, "svm_backend_problem", _only(available))
    assert resolve_svm_backend("auto") == expected
    assert available_svm_backends()[-1] == "sklearn"


def test_asking_for_an_unavailable_backend_names_it_the_reason_and_the_alternatives(monkeypatch):
    monkeypatch.setattr(models, "svm_backend_problem", _only({"sklearn"}))
    with pytest.raises(SVMBackendUnavailableError) as caught:
        build_svm(RunSpec(model="svm", svm_backend="sklearnex"))
    message = str(caught.value)
    assert "svm_backend='sklearnex'" in message
    assert "sklearnex is not installed (test)" in message
    assert "Available: sklearn" in message


def test_cuml_without_gpu_or_package_is_a_clear_error():
    problem = svm_backend_problem("cuml")
    if problem is None:
        pytest.skip("cuML runs here")
    with pytest.raises(SVMBackendUnavailableError, match="svm_backend='cuml' is not available"):
        build_svm(RunSpec(model="svm", svm_backend="cuml"))
    assert "CUDA" in problem or "cuml" in problem
