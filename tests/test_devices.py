"""One device rule (devices.py): what the engine refuses, the study skips, for the same reason."""

import pytest
import torch

from mnistbench import models
from mnistbench.config import RunSpec
from mnistbench.devices import (
    DeviceUnavailableError,
    device_problem,
    resolve_device,
    skip_reason,
    visible_gpus,
)
from mnistbench.store import Store
from mnistbench.study import run_study
from mnistbench.studyfile import load_study

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def one_gpu(monkeypatch):
    """This process sees exactly one CUDA GPU (nothing may actually use it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def fresh_svm_backend_problem():
    """svm_backend_problem caches its answers; these tests change what the machine has."""
    models.svm_backend_problem.cache_clear()
    yield
    models.svm_backend_problem.cache_clear()


@no_cuda_here
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1", "cuda:3"])
def test_without_cuda_every_cuda_device_is_skipped_and_refused_for_the_same_reason(name):
    reason = skip_reason(RunSpec(device=name))
    assert reason is not None and "CUDA is not available" in reason and repr(name) in reason
    assert reason == device_problem(name)
    with pytest.raises(DeviceUnavailableError) as raised:
        resolve_device(name)
    assert str(raised.value) == reason
    assert visible_gpus() == 0


@pytest.mark.parametrize("name", ["cuda:1", "cuda:3"])
def test_a_gpu_index_past_the_last_gpu_is_skipped_and_refused_for_the_same_reason(one_gpu, name):
    reason = skip_reason(RunSpec(device=name))
    assert reason is not None and "only 1 GPU(s)" in reason and repr(name) in reason
    with pytest.raises(DeviceUnavailableError) as raised:
        resolve_device(name)
    assert str(raised.value) == reason
    assert visible_gpus() == 1


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "auto", "cpu"])
def test_the_gpu_that_exists_and_cpu_and_auto_can_run(one_gpu, name):
    assert device_problem(name) is None and skip_reason(RunSpec(device=name)) is None
    assert resolve_device(name).type == ("cpu" if name == "cpu" else "cuda")


def test_cpu_and_auto_always_run():
    assert skip_reason(RunSpec(device="cpu")) is None and skip_reason(RunSpec()) is None
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_mps_needs_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert "MPS is not available" in skip_reason(RunSpec(device="mps"))
    with pytest.raises(DeviceUnavailableError, match="MPS is not available"):
        resolve_device("mps")


@no_cuda_here
def test_cuml_svms_need_the_same_cuda_as_the_engine(fresh_svm_backend_problem):
    no_cuda = device_problem("cuda")
    svm = RunSpec(model="svm", svm_backend="cuml")
    assert no_cuda is not None and no_cuda in skip_reason(svm)
    assert no_cuda in models.svm_backend_problem("cuml")
    # An SVM's own device field is not what decides; sklearn runs anywhere.
    assert skip_reason(RunSpec(model="svm", svm_backend="sklearn", device="cuda:3")) is None


def test_cuml_svms_are_not_skipped_where_a_gpu_is(one_gpu, fresh_svm_backend_problem):
    assert skip_reason(RunSpec(model="svm", svm_backend="cuml")) is None


STUDY = """
[study]
name = "far"

[defaults]
dataset = "mnist"
model = "resnet18"
epochs = 1

[experiments.far]
grid = { device = ["cuda:1", "cuda:3"] }
"""


def test_a_study_records_a_gpu_this_machine_lacks_as_skipped_not_failed(tmp_path, one_gpu):
    """The runs are skipped before any data is loaded or any CUDA call is made."""
    path = tmp_path / "far.toml"
    path.write_text(STUDY)
    store_path = tmp_path / "store.db"
    outcome = run_study(load_study(path), store_path, root=str(tmp_path / "no-data"))
    assert (outcome.done, outcome.failed, outcome.skipped) == (0, 0, 2)
    with Store(store_path) as store:
        records = {record.spec.device: record for record in store.runs("far")}
    assert {device: record.status for device, record in records.items()} == {
        "cuda:1": "skipped",
        "cuda:3": "skipped",
    }
    assert records["cuda:3"].error == device_problem("cuda:3")
    assert "only 1 GPU(s)" in records["cuda:3"].error
