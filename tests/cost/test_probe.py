"""Probes: short real runs of an engine at a spec's speed, cached by machine and speed key."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mnistbench.config import RunSpec
from mnistbench.cost import probe as probes_module
from mnistbench.cost.probe import CACHE_VERSION, Probes, cache_path_for, device_kind, machine_of
from mnistbench.cost.rates import Observation, run_sizes, run_work, speed_key
from mnistbench.data.sizes import Sizes
from mnistbench.engines import Work
from mnistbench.engines.svm import ENGINE as SVM
from mnistbench.engines.svm import PROBE_TEST_IMAGES as SVM_TEST_IMAGES
from mnistbench.engines.svm import PROBE_TRAIN_IMAGES as SVM_TRAIN_IMAGES
from mnistbench.engines.torch import ENGINE as TORCH
from mnistbench.engines.torch import PROBE_STEPS, PROBE_TEST_IMAGES
from mnistbench.result import RunResult
from tests.conftest import synthetic_dataset

SPEC = RunSpec(model="resnet18", batch_size=8, epochs=1, device="cpu", threads=1)
SVM_SPEC = RunSpec(model="svm", train_limit=300, test_limit=100, svm_backend="sklearn", threads=1)
SEEN = Observation(Work(train=48, evaluate=256, test=256), 0.48, 0.256, wall_seconds=3.0)


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """The probe replaced by a constant observation; returns the specs it was asked to probe.
    Named by module path: after a move, a stale name fails here instead of probing for real."""
    specs: list[RunSpec] = []

    def fake_probe(spec: RunSpec, data: object) -> Observation:
        specs.append(spec)
        return SEEN

    monkeypatch.setattr("mnistbench.cost.probe.probe", fake_probe)
    return specs


def _probes(path: Path | None) -> Probes:
    return Probes(path, dataset=lambda name: None)


def test_a_second_estimate_reads_the_cache_instead_of_probing_again(tmp_path, probed) -> None:
    path = cache_path_for(tmp_path / "results" / "store.db")
    assert path == tmp_path / "results" / "calibration.json"
    first = _probes(path)
    assert first.observation(SPEC) == SEEN
    assert probed == [SPEC] and first.probed == [speed_key(SPEC, "cpu")] and path.is_file()
    again = _probes(path)  # a later process
    assert again.cached(SPEC) == SEEN
    assert again.observation(SPEC.replace(lr=0.5, epochs=7, seed=3)) == SEEN  # same speed
    assert len(probed) == 1 and again.probed == []
    # Another speed, or the same one with other threads (another machine key), is probed.
    again.observation(SPEC.replace(batch_size=16))
    again.observation(SPEC.replace(threads=2))
    assert len(probed) == 3 and len(again.probed) == 2
    machines = json.loads(path.read_text())["machines"]
    assert len(machines) == 2 and sum(len(speeds) for speeds in machines.values()) == 3


def test_without_a_store_probes_are_kept_in_memory_only(tmp_path, probed) -> None:
    probes = _probes(None)
    probes.observation(SPEC)
    probes.observation(SPEC)
    assert len(probed) == 1 and list(tmp_path.iterdir()) == []


def test_probes_of_two_processes_both_stay_in_the_cache(tmp_path, probed) -> None:
    path = tmp_path / "calibration.json"
    one, other = _probes(path), _probes(path)  # both read the file before either wrote it
    one.observation(SPEC)
    other.observation(SPEC.replace(batch_size=16))
    later = _probes(path)
    assert later.cached(SPEC) == SEEN and later.cached(SPEC.replace(batch_size=16)) == SEEN


@pytest.mark.parametrize(
    "content",
    ["{not json", "another version", "an entry without its timings"],
)
def test_an_unreadable_cache_is_probed_again(tmp_path, probed, content) -> None:
    path = tmp_path / "calibration.json"
    entry = {"work": {"train": 1, "evaluate": 1, "test": 1}, "train_seconds": 9.0}
    if content != "{not json":
        entry |= {"test_seconds": 9.0, "wall_seconds": 99.0} if content == "another version" else {}
        version = CACHE_VERSION - 1 if content == "another version" else CACHE_VERSION
        machines = {machine_of(SPEC): {speed_key(SPEC, "cpu"): entry}}
        content = json.dumps({"version": version, "machines": machines})
    path.write_text(content)
    assert _probes(path).observation(SPEC) == SEEN
    assert len(probed) == 1
    document = json.loads(path.read_text())
    assert document["version"] == CACHE_VERSION
    assert document["machines"][machine_of(SPEC)][speed_key(SPEC, "cpu")]["wall_seconds"] == 3.0


def test_loading_a_dataset_is_timed_once_and_not_when_it_is_not_here(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "calibration.json"
    loads: list[str] = []

    def missing(name: str, root: str | None) -> None:
        loads.append(name)
        raise FileNotFoundError(name)

    # Loads timed earlier in this process (another test's probe of the real data) count as here.
    monkeypatch.setattr("mnistbench.cost.probe._load_seconds", {})
    monkeypatch.setattr("mnistbench.cost.probe.load_dataset", missing)
    assert _probes(path).load_seconds("mnist") == 0.0  # fetching is not estimated
    assert loads == ["mnist"] and not path.exists()
    monkeypatch.setattr("mnistbench.cost.probe.load_dataset", lambda name, root: loads.append(name))
    seconds = _probes(path).load_seconds("mnist")
    assert seconds >= 0.0 and len(loads) == 2
    assert _probes(path).load_seconds("mnist") == seconds and len(loads) == 2  # cached


class _Engine:
    """Runs nothing: a result with the given status; its first run takes 0.3 s (its imports)."""

    def __init__(self, status: str = "ok") -> None:
        self.status = status
        self.runs: list[RunSpec] = []

    def probe(self, spec: RunSpec) -> RunSpec:
        return spec.replace(train_limit=48, test_limit=256, epochs=1)

    def device(self, spec: RunSpec) -> str:
        return "cpu"

    def run(self, spec: RunSpec, data: object, checkpoint_dir: Path | None = None) -> RunResult:
        self.runs.append(spec)
        if len(self.runs) == 1:
            time.sleep(0.3)
        return RunResult(
            spec=spec.to_dict(), status=self.status, train_seconds=0.01, eval_seconds=0.001,
            message="out of memory", protocol={"sizes": {"train": 48, "val": 0, "test": 256}},
        )  # fmt: skip


def test_an_engines_first_probe_in_a_process_runs_once_untimed(monkeypatch) -> None:
    engine = _Engine()
    monkeypatch.setattr("mnistbench.cost.probe.engine_for", lambda spec: engine)
    monkeypatch.setattr("mnistbench.cost.probe._warm_engines", set())
    first = probes_module.probe(SPEC, data=None)
    warm_up = engine.probe(SPEC).replace(
        train_limit=probes_module.WARM_UP_IMAGES, test_limit=probes_module.WARM_UP_IMAGES
    )
    assert engine.runs == [warm_up, engine.probe(SPEC)]
    assert 0 < first.wall_seconds < 0.3  # the warm-up is not the run's
    assert first.work == Work(48, 256, 256)
    assert (first.train_seconds, first.test_seconds) == (0.01, 0.001)
    probes_module.probe(SPEC.replace(batch_size=16), data=None)
    assert len(engine.runs) == 3  # warm now: timed at once


def test_a_probe_run_that_fails_is_the_estimates_failure(monkeypatch) -> None:
    monkeypatch.setattr("mnistbench.cost.probe.engine_for", lambda spec: _Engine("failed"))
    monkeypatch.setattr("mnistbench.cost.probe._warm_engines", {(SPEC.engine(), "cpu")})
    with pytest.raises(RuntimeError, match="its probe run ended failed: out of memory"):
        probes_module.probe(SPEC, data=None)


def test_a_resnet_probe_runs_a_few_real_steps_and_one_test_pass() -> None:
    import torch

    data = synthetic_dataset(n_train=400, n_test=300)  # enough for the probe's test pass
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the spec's 1: the probe must give them back
    try:
        seen = probes_module.probe(SPEC, data)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen.train_seconds > 0 and seen.test_seconds > 0
    assert seen.wall_seconds > seen.train_seconds + seen.test_seconds
    # Its work is that of the short run it made: PROBE_STEPS batches, one test pass.
    assert seen.work == run_work(TORCH.probe(SPEC))
    assert seen.work.train == SPEC.batch_size * PROBE_STEPS
    assert seen.work.evaluate == seen.work.test == PROBE_TEST_IMAGES


def test_an_svm_probe_fits_it() -> None:
    seen = probes_module.probe(SVM_SPEC, synthetic_dataset(n_train=400, n_test=100))
    assert seen.train_seconds > 0 and seen.test_seconds > 0
    assert seen.wall_seconds > seen.train_seconds + seen.test_seconds
    assert seen.work == SVM.work(SVM_SPEC, Sizes(300, 0, 100))


def test_an_svm_probe_fits_the_runs_own_size_up_to_the_reference_fits() -> None:
    assert TORCH.probe(SPEC).train_limit == SPEC.batch_size * PROBE_STEPS
    small = SVM.probe(SVM_SPEC)
    assert (small.train_limit, small.test_limit) == (300, 100)
    full = SVM.probe(RunSpec(model="svm"))
    assert (full.train_limit, full.test_limit) == (SVM_TRAIN_IMAGES, SVM_TEST_IMAGES)
    large = SVM.probe(RunSpec(model="svm", train_limit=50_000, test_limit=5_000))
    assert (large.train_limit, large.test_limit) == (SVM_TRAIN_IMAGES, SVM_TEST_IMAGES)
    wide = SVM.probe(RunSpec(model="svm", features="pca:800"))  # PCA needs more images
    assert wide.train_limit == 801


def test_a_probe_evaluates_a_few_validation_images_never_the_whole_split() -> None:
    """At 224 px on a CPU, the assignment split's 7,000 validation images are minutes."""
    for engine, spec, most in (
        (TORCH, SPEC.replace(split="assignment", image_size=224, channels=3), PROBE_TEST_IMAGES),
        (SVM, SVM_SPEC.replace(split="assignment"), SVM_TEST_IMAGES),
    ):
        assert run_sizes(spec).val == 7_000
        assert run_sizes(engine.probe(spec)).val == most
        assert run_sizes(engine.probe(spec.replace(val_limit=10))).val == 10


def test_speed_keys_ignore_what_does_not_change_speed() -> None:
    def key(spec: RunSpec) -> str:
        return speed_key(spec, device_kind(spec))

    assert key(SPEC) == key(SPEC.replace(lr=0.1, seed=4, epochs=9, threads=4))
    assert key(SPEC) == key(SPEC.replace(dataset="fashion-mnist"))  # a ResNet's images: 28x28
    assert key(SPEC) != key(SPEC.replace(batch_size=16))
    assert key(SPEC) != key(SPEC.replace(model="resnet50"))
    assert key(SPEC) != key(SPEC.replace(image_size=64))
    assert key(SPEC) != key(SPEC.replace(optimizer="sgd"))
    # The device as the kind it is: two GPUs of a kind share a speed, a GPU is not a CPU.
    assert device_kind(SPEC.replace(device="cuda:1")) == "cuda"
    assert key(SPEC.replace(device="cuda:0")) == key(SPEC.replace(device="cuda:1"))
    assert key(SPEC) != key(SPEC.replace(device="cuda:1"))
    assert speed_key(SPEC, "cpu") != speed_key(SPEC, "cuda")
    # An SVM's speed is its kernel, back-end and data (its support vectors), not C or seed.
    assert key(SVM_SPEC) == key(SVM_SPEC.replace(C=0.5, seed=3, threads=4))
    assert key(SVM_SPEC) != key(SVM_SPEC.replace(kernel="poly"))
    assert key(SVM_SPEC) != key(SVM_SPEC.replace(dataset="fashion-mnist"))
    assert key(SVM_SPEC) != key(SVM_SPEC.replace(svm_backend="sklearnex"))
    assert key(SVM_SPEC) != key(SPEC)
