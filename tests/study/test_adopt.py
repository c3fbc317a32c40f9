"""A store written before 'auto' devices were resolved: what a dry run (and `study status FILE`)
says of it is what `study run` then does. Its runs stored under their 'auto' key are adopted,
not trained: counted done, no estimate, no probe of their shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.cost.estimate import forecast_study
from mnistbench.cost.probe import Probes
from mnistbench.devices import auto_device
from mnistbench.measure import this_cpu
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.executors import Executor, ExecutorContext, RunToDo
from mnistbench.study.file import StudySpec, load_study
from mnistbench.study.run import expand, run_study
from mnistbench.study.store import Store
from tests.stub_probes import RESNET_PROBE

# 'old': two runs an earlier mnistbench stored under their 'auto' key, done here; 'new': one run
# of another shape (batch 32) to do; 'gpu': one this machine skips (no cuda:99).
STUDY = """
[study]
name = "s"

[defaults]
model = "resnet18"
epochs = 1
train_limit = 64
test_limit = 64
threads = 1

[experiments.old]
base = { batch_size = 16 }
grid = { optimizer = ["sgd", "adam"] }

[experiments.new]
base = { batch_size = 32 }

[experiments.gpu]
base = { batch_size = 64, device = "cuda:99" }
"""


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """The probe replaced by a constant; returns the specs it was asked to time."""
    specs: list[RunSpec] = []

    def fake_probe(spec: RunSpec, data: object) -> object:
        specs.append(spec)
        return RESNET_PROBE

    monkeypatch.setattr("mnistbench.cost.probe.probe", fake_probe)
    monkeypatch.setattr("mnistbench.cost.estimate.process_age", lambda: 0.0)
    return specs


def _old_store(path: Path, study: StudySpec) -> list[str]:
    """The 'old' runs done as an earlier mnistbench stored them: spec and key with device
    'auto', the result saying where it ran (this machine's kind). Returns their old keys."""
    old_keys = []
    with Store(path) as store:
        for run in expand(study, ["old"]):
            spec = run.spec.replace(device="auto")
            store.register(study.name, "old", [spec])
            assert store.claim(spec.key())
            result = RunResult(
                spec=spec.to_dict(), train_seconds=3.0, eval_seconds=1.0, device=auto_device(),
                test_accuracy=90.0, history=[EpochRecord(1, images=64)],
                environment={"cpu": this_cpu(), "threads": 1, "torch": torch.__version__},
                protocol={"sizes": {"train": 64, "val": 0, "test": 64}},
            )  # fmt: skip
            assert store.finish(spec.key(), result)
            old_keys.append(spec.key())
    return old_keys


class Recording(Executor):
    """Claims each run to do as the real executors do (a run skipped here is recorded so by
    the claim), notes it and gives it back unstarted: what `study run` would train."""

    name, help = "recording", "test only"

    def __init__(self) -> None:
        self.trained: list[str] = []

    def run(self, todo: list[RunToDo], context: ExecutorContext, study: StudySpec) -> None:
        for run in todo:
            if context.claim(run):
                self.trained.append(run.key)
                context.release(run)


def test_a_dry_run_counts_adopted_runs_done_and_the_run_trains_only_what_it_said(
    tmp_path: Path, probed: list[RunSpec]
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(STUDY)
    study, store_path = load_study(path), tmp_path / "store.db"
    old_keys = _old_store(store_path, study)
    runs = expand(study)
    assert not {run.key for run in runs} & set(old_keys), "the keys here are the resolved ones"

    probes = Probes(None, root=str(tmp_path / "no-data"), dataset=lambda name: None)
    with Store(store_path) as store:  # the dry run's and `study status FILE`'s forecast
        forecast = forecast_study(runs, store, probes, "all")
    old = forecast.summary("old")
    assert old.counts["done"] == 2 and old.counts["pending"] == 0
    assert old.seconds == 0 and old.unknown == 0
    assert all(r.seconds is None and r.actual for r in forecast.runs if r.experiment == "old")
    to_train = [run.key for run in forecast.runs if run.runs_here]
    assert [r.experiment for r in forecast.runs if r.runs_here] == ["new"]
    # Only the shape that will run was timed: not the adopted runs', not the skipped one's.
    assert [(spec.batch_size, spec.device) for spec in probed] == [(32, auto_device())]
    with Store(store_path) as store:
        assert {store.get(key).status for key in old_keys} == {"done"}  # the dry run wrote nothing

    executor = Recording()
    outcome = run_study(study, store_path, executor=executor)
    assert executor.trained == to_train
    assert outcome.already_done == 2 and outcome.skipped == 1
    with Store(store_path) as store:
        adopted = [run for run in runs if run.experiment == "old"]
        assert all(store.get(key) is None for key in old_keys)
        assert {store.get(run.key).status for run in adopted} == {"done"}
