"""A study's forecast: statuses, runs skipped here and why, estimates refined by the store, disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from mnistbench import calibrate
from mnistbench.calibrate import Calibration
from mnistbench.config import RunSpec
from mnistbench.estimate import SvmRates, TorchRates
from mnistbench.forecast import Estimator, forecast_study, live_estimates, model_file_bytes
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

# 2 epochs of 1000 images at 100/s, 2 test passes of 500 at 1000/s (the 2nd is the final one),
# 3 s + 2 x 0.5 s: 25 s
CALIBRATED = TorchRates(100.0, 1000.0, 3.0, 0.5)


@pytest.fixture
def calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Calibration:
    """A calibration whose timings are constants (the real ones: tests/test_calibrate.py)."""
    monkeypatch.setattr(calibrate, "time_torch_shape", lambda spec, data, seconds: CALIBRATED)
    monkeypatch.setattr(
        calibrate, "time_svm_shape", lambda spec, data: SvmRates(2000, 4.0, 2.0, 500, 1.0, 1.0, 1.0)
    )
    monkeypatch.setattr(calibrate, "time_startup", lambda with_svm: 5.0)
    monkeypatch.setattr(calibrate, "load_dataset", lambda name, root: None)
    monkeypatch.setattr(calibrate, "_random_images", lambda name: None)
    return Calibration(tmp_path / "calibration.json", dataset=lambda name: None)


def _study(tmp_path: Path, keep: str = "all"):
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(keep=keep))
    return load_study(path)


def test_a_study_without_a_store_is_all_pending_with_estimates(tmp_path, calibration) -> None:
    forecast = forecast_study(expand(_study(tmp_path)), None, calibration, "all")
    assert [run.status for run in forecast.runs] == ["pending"] * 6
    grid = forecast.summary("grid")
    assert grid.counts["pending"] == 4 and grid.unknown == 0
    assert grid.seconds == pytest.approx(4 * 25.0)
    assert forecast.summary("svm").seconds == pytest.approx(4.0 + 1.0 + 1.0)
    study = forecast.summary()
    assert study.seconds == pytest.approx(grid.seconds + 6.0 + 5.0, abs=0.01)  # + start-up


def test_runs_skipped_here_say_why_and_cost_nothing(tmp_path, calibration) -> None:
    forecast = forecast_study(expand(_study(tmp_path)), None, calibration, "all")
    (gpu,) = [run for run in forecast.runs if run.experiment == "gpu"]
    assert gpu.status == "pending" and gpu.skip is not None and "cuda:99" in gpu.skip
    assert gpu.seconds is None and not gpu.runs_here
    summary = forecast.summary("gpu")
    assert summary.counts["skip here"] == 1 and summary.seconds == 0
    assert summary.skips == {gpu.skip: 1} and forecast.summary().skips == {gpu.skip: 1}


@pytest.mark.parametrize("keep", ["all", "best", "none"])
def test_disk_is_that_of_the_models_the_policy_keeps(tmp_path, calibration, keep) -> None:
    study = _study(tmp_path, keep)
    forecast = forecast_study(expand(study), None, calibration, study.keep_models)
    r18, r50 = model_file_bytes(RunSpec()), model_file_bytes(RunSpec(model="resnet50"))
    expected = {"all": 2 * r18 + 2 * r50, "best": r50, "none": 0}[keep]
    assert forecast.summary("grid").disk_bytes == expected
    assert forecast.summary("svm").disk_bytes == 0  # an SVM keeps no model file
    assert forecast.summary("gpu").disk_bytes == 0  # skipped here: never trained here
    assert forecast.summary().disk_bytes == expected


def _finish(store_path: Path, spec: RunSpec, wall: float, train_seconds: float) -> None:
    """A done run of `spec` on this machine, as `study run` records it (its times forged)."""
    result = RunResult(
        spec=spec.to_dict(),
        train_seconds=train_seconds,
        eval_seconds=1.0,
        device="cpu",
        history=[EpochRecord(e, images=1000) for e in (1, 2)],
        environment={"cpu": this_cpu(), "threads": 1, "torch": torch.__version__},
        protocol={"sizes": {"train": 1000, "val": 0, "test": 500}},
    )
    with Store(store_path) as store:
        store.register("s", "grid", [spec])
        assert store.claim(spec.key())
        assert store.finish(spec.key(), result)
    with sqlite3.connect(store_path) as conn:
        conn.execute(
            "UPDATE runs SET started_at = 1000, finished_at = ? WHERE key = ?",
            (1000 + wall, spec.key()),
        )


def test_finished_runs_of_a_shape_pull_its_estimate_to_them(tmp_path, calibration) -> None:
    study = _study(tmp_path)
    runs = expand(study, ["grid"])
    store_path = tmp_path / "store.db"
    calibrated = forecast_study(runs, None, calibration, "all").runs[0].seconds
    assert calibrated == pytest.approx(25.0)
    # The same shape (another lr) took 4x as long to train here, 100 s in all.
    _finish(store_path, runs[0].spec.replace(lr=0.5), wall=100.0, train_seconds=80.0)
    with Store(store_path) as store:
        refined = forecast_study(runs, store, calibration, "all")
    first = refined.runs[0]
    assert first.seconds == pytest.approx(100.0, rel=0.05)
    assert "finished run" in first.basis
    # Other shapes have no finished run: their calibrated estimate is scaled by the pace.
    other = refined.runs[1]
    assert "calibrated x3.00" in other.basis  # 100 / 25, clamped at 3
    assert other.seconds == pytest.approx(25.0 * 3)


def test_a_done_run_shows_its_actual_time_and_no_estimate(tmp_path, calibration) -> None:
    study = _study(tmp_path)
    runs = expand(study, ["grid"])
    store_path = tmp_path / "store.db"
    _finish(store_path, runs[0].spec, wall=40.0, train_seconds=30.0)
    with Store(store_path) as store:
        forecast = forecast_study(runs, store, calibration, "all")
    done = forecast.runs[0]
    assert (done.status, done.actual, done.seconds) == ("done", 40.0, None)
    assert forecast.summary("grid").counts["done"] == 1


def test_estimates_for_the_live_eta_only_for_a_reporter_that_shows_one(tmp_path, calibration):
    runs = expand(_study(tmp_path))
    with Store(tmp_path / "store.db") as store:
        assert live_estimates(runs, store, Reporter()) is None
        estimator = Estimator(calibration, store)
        assert estimator.seconds(runs[0].spec)[0] == pytest.approx(25.0)
        lines: list[str] = []
        # Uses the cache next to the store, which the calibration fixture filled.
        estimates = live_estimates(runs, store, PlainReporter(lines.append))
    assert estimates is not None and len(estimates) == len(runs)
    assert estimates[0] == (runs[0].spec.label(), pytest.approx(25.0))
    assert estimates[-1] == (runs[-1].spec.label(), 0.0)  # the skipped GPU run


def test_a_run_counts_as_alone_by_its_executors_record_of_runs_at_once():
    from mnistbench.forecast import ran_alone

    assert ran_alone(None) and ran_alone(1)  # in this process; an old store's plain count
    assert ran_alone({"runs_at_once": 1, "life_seconds": 3.0})  # a worker process, alone
    assert not ran_alone({"runs_at_once": 2, "runs_on_same_gpu": 2})
    assert not ran_alone(3)
