"""A study's forecast: statuses, runs skipped here and why, estimates refined by the store, disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.cost.estimate import Estimator, forecast_study, live_estimates, ran_alone
from mnistbench.cost.probe import Probes
from mnistbench.cost.rates import Observation
from mnistbench.data.sizes import Sizes
from mnistbench.engines import Work
from mnistbench.engines.svm import ENGINE as SVM
from mnistbench.engines.svm import GROWTH
from mnistbench.engines.torch import ENGINE as TORCH
from mnistbench.measure import this_cpu
from mnistbench.progress import PlainReporter, Reporter
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.file import load_study
from mnistbench.study.run import expand
from mnistbench.study.store import Store

STUDY = """
[study]
name = "s"
keep_models = "{keep}"

[defaults]
dataset = "mnist"
epochs = 2
train_limit = 1000
test_limit = 500
threads = 1
device = "cpu"

[experiments.grid]
grid = {{ model = ["resnet18", "resnet50"], batch_size = [16, 32] }}

[experiments.svm]
base = {{ model = "svm", svm_backend = "sklearn", train_limit = 2000 }}

[experiments.gpu]
base = {{ device = "cuda:99" }}
"""

# A ResNet probe: 48 images trained at 100/s, 256 tested at 1000/s, and 3 s besides. A run of
# the study (2 epochs of 1000 images, 2 test passes of 500, the 2nd the final one): 20 + 1 + 3 s.
RESNET_PROBE = Observation(Work(48, 256, 256), 0.48, 0.256, wall_seconds=3.0 + 0.48 + 0.256)
RESNET_SECONDS = 24.0
# An SVM probe: the reference fit of 1000 images in 4 s, 500 predicted in 1 s, 6 s in all. The
# study's SVM fits 2000 images: its fit and predictions grow by its back-end's power laws.
SVM_PROBE = Observation(
    SVM.work(RunSpec(model="svm", svm_backend="sklearn"), Sizes(1_000, 0, 500)), 4.0, 1.0, 6.0
)
FIT, PREDICT = GROWTH["sklearn"]
SVM_SECONDS = 1.0 + 4.0 * 2**FIT + 1.0 * 2**PREDICT
STARTUP = 5.0


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[RunSpec]:
    """Probes replaced by constant observations (the real ones: test_probe.py), and this
    process's age by a constant start-up; returns the specs probed. Named by module path: after
    a move, a stale name fails here instead of probing for real."""
    specs: list[RunSpec] = []

    def fake_probe(spec: RunSpec, data: object) -> Observation:
        specs.append(spec)
        return SVM_PROBE if spec.model == "svm" else RESNET_PROBE

    monkeypatch.setattr("mnistbench.cost.probe.probe", fake_probe)
    monkeypatch.setattr("mnistbench.cost.estimate.process_age", lambda: STARTUP)
    return specs


@pytest.fixture
def probes(tmp_path: Path, probed: list[RunSpec]) -> Probes:
    """Probes cached next to tmp_path/store.db, with no dataset here (none to load)."""
    return Probes(
        tmp_path / "calibration.json", root=str(tmp_path / "no-data"), dataset=lambda name: None
    )


def _study(tmp_path: Path, keep: str = "all"):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(keep=keep))
    return load_study(path)


def test_a_study_without_a_store_is_all_pending_with_estimates(tmp_path, probes) -> None:
    forecast = forecast_study(expand(_study(tmp_path)), None, probes, "all")
    assert [run.status for run in forecast.runs] == ["pending"] * 6
    assert forecast.runs[0].seconds == pytest.approx(RESNET_SECONDS)
    assert forecast.runs[0].basis == "a probe"
    grid = forecast.summary("grid")
    assert grid.counts["pending"] == 4 and grid.unknown == 0
    assert grid.seconds == pytest.approx(4 * RESNET_SECONDS)
    assert forecast.summary("svm").seconds == pytest.approx(SVM_SECONDS)
    assert forecast.overhead_seconds == STARTUP  # no dataset here to load
    study = forecast.summary()
    assert study.seconds == pytest.approx(grid.seconds + SVM_SECONDS + STARTUP)


def test_runs_skipped_here_say_why_and_cost_nothing(tmp_path, probes, probed) -> None:
    forecast = forecast_study(expand(_study(tmp_path)), None, probes, "all")
    (gpu,) = [run for run in forecast.runs if run.experiment == "gpu"]
    assert gpu.status == "pending" and gpu.skip is not None and "cuda:99" in gpu.skip
    assert gpu.seconds is None and gpu.basis == "" and not gpu.runs_here  # not even tried
    assert [spec.device for spec in probed] == ["cpu"] * 5  # 4 ResNet speeds, 1 SVM: not it
    summary = forecast.summary("gpu")
    assert summary.counts["skip here"] == 1 and summary.seconds == 0
    assert summary.skips == {gpu.skip: 1} and forecast.summary().skips == {gpu.skip: 1}


def test_a_run_that_cannot_be_probed_has_no_estimate_and_says_why(
    tmp_path, probes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(spec: RunSpec, data: object) -> Observation:
        if spec.model == "resnet50":
            raise RuntimeError("its probe run ended failed: out of memory")
        return RESNET_PROBE

    monkeypatch.setattr("mnistbench.cost.probe.probe", failing)
    forecast = forecast_study(expand(_study(tmp_path), ["grid"]), None, probes, "all")
    unknown = [run for run in forecast.runs if run.seconds is None]
    assert [run.label.split()[0] for run in unknown] == ["resnet50", "resnet50"]
    assert (
        unknown[0].basis
        == "cannot estimate: RuntimeError: its probe run ended failed: out of memory"
    )
    grid = forecast.summary("grid")
    assert grid.unknown == 2 and grid.seconds == pytest.approx(2 * RESNET_SECONDS)


def test_model_file_bytes_are_the_parameters_and_buffers() -> None:
    from mnistbench.engines.torch.models import build_resnet

    for model, channels in (("resnet18", 1), ("resnet50", 3)):
        spec = RunSpec(model=model, channels=channels)
        state = build_resnet(model, channels=channels).state_dict()
        expected = sum(t.numel() * t.element_size() for t in state.values())
        assert TORCH.model_file_bytes(spec) == expected
    assert SVM.model_file_bytes(RunSpec(model="svm")) == 0
    assert TORCH.model_file_bytes(RunSpec(model="resnet50")) > 2 * TORCH.model_file_bytes(RunSpec())


@pytest.mark.parametrize("keep", ["all", "best", "none"])
def test_disk_is_that_of_the_models_the_policy_keeps(tmp_path, probes, keep) -> None:
    study = _study(tmp_path, keep)
    forecast = forecast_study(expand(study), None, probes, study.keep_models)
    r18 = TORCH.model_file_bytes(RunSpec())
    r50 = TORCH.model_file_bytes(RunSpec(model="resnet50"))
    expected = {"all": 2 * r18 + 2 * r50, "best": r50, "none": 0}[keep]
    assert forecast.summary("grid").disk_bytes == expected
    assert forecast.summary("svm").disk_bytes == 0  # an SVM's is small and unknown: 0
    assert forecast.summary("gpu").disk_bytes == 0  # skipped here: never trained here
    assert forecast.summary().disk_bytes == expected


def _finish(store_path: Path, spec: RunSpec, wall: float, train_seconds: float, **result) -> None:
    """A done run of `spec` on this machine, as `study run` records it (its times forged)."""
    fields = {
        "spec": spec.to_dict(),
        "train_seconds": train_seconds,
        "eval_seconds": 1.0,
        "device": "cpu",
        "history": [EpochRecord(e, images=1000) for e in (1, 2)],
        "environment": {"cpu": this_cpu(), "threads": 1, "torch": torch.__version__},
        "protocol": {"sizes": {"train": 1000, "val": 0, "test": 500}},
    }
    with Store(store_path) as store:
        store.register("s", "grid", [spec])
        assert store.claim(spec.key())
        assert store.finish(spec.key(), RunResult(**(fields | result)))
    with sqlite3.connect(store_path) as conn:
        conn.execute(
            "UPDATE runs SET started_at = 1000, finished_at = ? WHERE key = ?",
            (1000 + wall, spec.key()),
        )


def test_a_done_runs_disk_is_its_model_files_until_it_is_gone(tmp_path, probes) -> None:
    runs = expand(_study(tmp_path), ["grid"])
    model = tmp_path / "r18.model.pt"
    model.write_bytes(b"x" * 1234)
    store_path = tmp_path / "store.db"
    _finish(store_path, runs[0].spec, wall=40.0, train_seconds=30.0, model_path=str(model))
    to_do = TORCH.model_file_bytes(RunSpec()) + 2 * TORCH.model_file_bytes(
        RunSpec(model="resnet50")
    )
    with Store(store_path) as store:
        assert forecast_study(runs, store, probes, "all").summary().disk_bytes == 1234 + to_do
        model.unlink()
        assert forecast_study(runs, store, probes, "all").summary().disk_bytes == to_do


def test_finished_runs_of_a_speed_pull_its_estimate_to_them(tmp_path, probes) -> None:
    runs = expand(_study(tmp_path), ["grid"])
    store_path = tmp_path / "store.db"
    probed = forecast_study(runs, None, probes, "all").runs[0].seconds
    assert probed == pytest.approx(RESNET_SECONDS)
    # The same speed (another lr) took 4x as long to train here, and 100 s in all: 80 s
    # training, 1 s a test pass, 18 s besides.
    _finish(store_path, runs[0].spec.replace(lr=0.5), wall=100.0, train_seconds=80.0)
    with Store(store_path) as store:
        refined = forecast_study(runs, store, probes, "all")
    first = refined.runs[0]
    assert first.seconds == pytest.approx(100.0)
    assert first.basis == "1 finished run(s) of its speed"
    # Other speeds have no finished run: their probe's estimate is scaled by the pace.
    other = refined.runs[1]
    assert other.basis == "a probe x3.00 (finished runs' pace)"  # 100 / 24, clamped at 3
    assert other.seconds == pytest.approx(RESNET_SECONDS * 3)


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"environment": {"cpu": "another CPU", "threads": 1, "torch": torch.__version__}},
        {
            "environment": {
                "cpu": this_cpu(),
                "threads": 1,
                "torch": torch.__version__,
                "concurrency": {"runs_at_once": 2},
            }
        },
        {"resumed_from_epoch": 1},
    ],
    ids=["another-cpu", "not-alone", "resumed"],
)
def test_finished_runs_that_are_not_comparable_leave_the_estimate_alone(
    tmp_path, probes, elsewhere
) -> None:
    runs = expand(_study(tmp_path), ["grid"])
    store_path = tmp_path / "store.db"
    _finish(store_path, runs[0].spec.replace(lr=0.5), wall=100.0, train_seconds=80.0, **elsewhere)
    with Store(store_path) as store:
        forecast = forecast_study(runs, store, probes, "all")
    assert [(run.seconds, run.basis) for run in forecast.runs[:2]] == [
        (pytest.approx(RESNET_SECONDS), "a probe")
    ] * 2


def test_a_done_run_shows_its_actual_time_and_no_estimate(tmp_path, probes) -> None:
    runs = expand(_study(tmp_path), ["grid"])
    store_path = tmp_path / "store.db"
    _finish(store_path, runs[0].spec, wall=40.0, train_seconds=30.0)
    with Store(store_path) as store:
        forecast = forecast_study(runs, store, probes, "all")
    done = forecast.runs[0]
    assert (done.status, done.actual, done.seconds) == ("done", 40.0, None)
    assert forecast.summary("grid").counts["done"] == 1
    assert forecast.summary("grid").seconds == pytest.approx(3 * RESNET_SECONDS)


def test_estimates_for_the_live_eta_only_for_a_reporter_that_shows_one(
    tmp_path, probes, probed
) -> None:
    runs = expand(_study(tmp_path))
    with Store(tmp_path / "store.db") as store:
        assert live_estimates(runs, store, Reporter()) is None
        estimator = Estimator(probes, store)  # probes each speed, into the cache by the store
        assert estimator.seconds(runs[0].spec)[0] == pytest.approx(RESNET_SECONDS)
        assert [estimator.seconds(run.spec) for run in runs][-2][0] == pytest.approx(SVM_SECONDS)
        lines: list[str] = []
        estimates = live_estimates(runs, store, PlainReporter(lines.append))
    assert len(probed) == 5  # the live estimates read the cache: no probe of their own
    assert estimates is not None and len(estimates) == len(runs)
    assert estimates[0] == (runs[0].spec.label(), pytest.approx(RESNET_SECONDS))
    assert estimates[-1] == (runs[-1].spec.label(), 0.0)  # the skipped GPU run


def test_a_run_counts_as_alone_by_its_executors_record_of_runs_at_once() -> None:
    assert ran_alone(None) and ran_alone(1)  # in this process; an old store's plain count
    assert ran_alone({"runs_at_once": 1, "life_seconds": 3.0})  # a worker process, alone
    assert ran_alone({"life_seconds": 3.0})  # a worker's record without a count: alone
    assert not ran_alone({"runs_at_once": 2, "runs_on_same_gpu": 2})
    assert not ran_alone(3)
