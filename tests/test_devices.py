"""One device rule (devices.py): what the engine refuses, the study skips, for the same reason."""

from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.devices import (
    DeviceUnavailableError,
    auto_device,
    concrete_spec,
    device_problem,
    resolve_device,
    visible_gpus,
)
from mnistbench.engines import skip_reason
from mnistbench.engines.svm import backends
from mnistbench.result import RunResult
from mnistbench.study.cleanup import checkpoint_dir_for
from mnistbench.study.executors import local
from mnistbench.study.file import load_study
from mnistbench.study.run import plan, run_study
from mnistbench.study.store import Store
from tests.conftest import Logs

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def one_gpu(monkeypatch):
    """This process sees exactly one CUDA GPU (nothing may actually use it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.fixture
def fresh_svm_backend_problem():
    """svm_backend_problem caches its answers; these tests change what the machine has."""
    backends.svm_backend_problem.cache_clear()
    yield
    backends.svm_backend_problem.cache_clear()


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
    assert no_cuda in backends.svm_backend_problem("cuml")
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


@pytest.fixture
def no_gpu(monkeypatch):
    """This process sees no CUDA GPU (and no MPS)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_is_this_machines_device_kind(monkeypatch, no_gpu):
    assert auto_device() == "cpu" and concrete_spec(RunSpec()).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device() == "cuda" and concrete_spec(RunSpec()).device == "cuda"
    assert concrete_spec(RunSpec(device="cpu")).device == "cpu"  # only 'auto' is resolved
    svm = RunSpec(model="svm")  # no device in an SVM's identity: left as it is
    assert concrete_spec(svm) is svm


MOVING = """
[study]
name = "moving"

[defaults]
dataset = "mnist"
model = "resnet18"
epochs = 1

[experiments.auto]
grid = { optimizer = ["sgd", "adam"] }

[experiments.gpu]
base = { device = "cuda" }
"""


class Stub:
    """Stands in for the engines: records which specs ran and returns a result on their device."""

    def __init__(self, monkeypatch) -> None:
        self.ran: list[RunSpec] = []
        monkeypatch.setattr(local, "cached_dataset", lambda name, root: None)
        monkeypatch.setattr(local, "run_spec", self.run)

    def run(self, spec, data, checkpoints, reporter) -> RunResult:
        self.ran.append(spec)
        return RunResult(spec=spec.to_dict(), test_accuracy=90.0, device=spec.device)


def _by_device(store_path) -> dict[str, list[str]]:
    with Store(store_path) as store:
        runs = store.runs("moving")
    devices: dict[str, list[str]] = {}
    for record in runs:
        devices.setdefault(record.spec.device, []).append(record.status)
    return devices


def test_a_copied_store_finishes_each_half_where_it_belongs(tmp_path, monkeypatch, no_gpu):
    """CPU machine, then (the store copied) a GPU machine, then the CPU machine again."""
    path = tmp_path / "moving.toml"
    path.write_text(MOVING)
    study, store_path, stub = load_study(path), tmp_path / "store.db", Stub(monkeypatch)

    on_cpu = run_study(study, store_path)
    assert (on_cpu.done, on_cpu.skipped) == (2, 1)
    assert [spec.device for spec in stub.ran] == ["cpu", "cpu"]
    assert _by_device(store_path) == {"cpu": ["done", "done"], "cuda": ["skipped"]}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    stub.ran.clear()
    logs = Logs()
    on_gpu = run_study(study, store_path, reporter=logs)
    assert (on_gpu.done, on_gpu.skipped, on_gpu.already_done) == (3, 0, 0)
    assert [spec.device for spec in stub.ran] == ["cuda"] * 3
    assert any("skipped before" in line and "CUDA" in line for line in logs.lines)
    assert _by_device(store_path) == {"cpu": ["done", "done"], "cuda": ["done"] * 3}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # back on the CPU machine
    stub.ran.clear()
    again = run_study(study, store_path)
    assert (again.done, again.skipped, again.already_done, stub.ran) == (0, 0, 3, [])


def test_a_skipped_run_stays_skipped_while_its_reason_holds(tmp_path, monkeypatch, no_gpu):
    path = tmp_path / "moving.toml"
    path.write_text(MOVING)
    study, store_path, stub = load_study(path), tmp_path / "store.db", Stub(monkeypatch)
    run_study(study, store_path, only=["gpu"])
    with Store(store_path) as store:
        planned = plan(study, store, only=["gpu"])
    assert [run.status for run in planned] == ["skipped"] and stub.ran == []


def test_an_old_stores_auto_runs_move_to_the_key_of_the_device_they_ran_on(tmp_path, no_gpu):
    """Stores from before 'auto' was resolved: a run done on a CPU moves to the 'cpu' key here;
    one done on a GPU stays for the GPU machine; a pending one is this machine's to run."""
    path = tmp_path / "moving.toml"
    path.write_text(MOVING)
    study, store_path = load_study(path), tmp_path / "store.db"
    sgd, adam = (RunSpec(epochs=1, optimizer=name) for name in ("sgd", "adam"))
    with Store(store_path) as store:
        store.register("moving", "auto", [sgd, adam])  # keyed with device 'auto', as before
        directory = checkpoint_dir_for(store_path)
        directory.mkdir(parents=True)
        old_model = directory / f"{sgd.key()}.model.pt"
        old_model.write_bytes(b"weights")
        for spec, ran_on in ((sgd, "cpu"), (adam, "cuda:0")):
            assert store.claim(spec.key())
            model = str(old_model) if spec is sgd else None
            store.finish(
                spec.key(), RunResult(spec=spec.to_dict(), device=ran_on, model_path=model)
            )
        planned = {run.spec.optimizer: run for run in plan(study, store, only=["auto"])}
        moved, gone = store.get(planned["sgd"].key), store.get(sgd.key())
        left = store.get(adam.key())
        members = {record.key for record in store.runs("moving", "auto")}
    assert planned["sgd"].spec.device == "cpu" and planned["sgd"].status == "done"
    assert moved.result.device == "cpu" and moved.spec.device == "cpu" and gone is None
    # Its model moved along, under the new key, and the result points to it.
    assert Path(moved.result.model_path).read_bytes() == b"weights" and not old_model.exists()
    assert Path(moved.result.model_path).name == f"{planned['sgd'].key}.model.pt"
    assert members == {planned["sgd"].key, planned["adam"].key, adam.key()}
    assert planned["adam"].status == "pending"  # its done run is the GPU machine's
    assert left.status == "done" and left.result.device == "cuda:0"
