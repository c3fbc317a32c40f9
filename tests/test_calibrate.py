"""Calibration: real timed steps and fits on tiny shapes, the cache keyed by machine and shape."""

from __future__ import annotations

import json

import pytest
import torch
from mnistbench.calibrate import (
    Calibration,
    cache_path_for,
    time_svm_shape,
    time_torch_shape,
)
from mnistbench.estimate import SvmRates, TorchRates
from mnistbench.forecast import model_file_bytes

from mnistbench import calibrate
from mnistbench.config import RunSpec
from mnistbench.engines.torch.models import build_resnet
from tests.conftest import synthetic_dataset

SPEC = RunSpec(model="resnet18", batch_size=8, epochs=1, device="cpu", threads=1)


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the timing itself by constants; returns the shapes it was asked to time."""
    timed: list[str] = []

    def fake_torch(spec: RunSpec, data: object, seconds: float) -> TorchRates:
        timed.append(calibrate.torch_shape_key(spec))
        return TorchRates(100.0, 400.0, 2.0, 0.1)

    monkeypatch.setattr(calibrate, "time_torch_shape", fake_torch)
    return timed


def test_a_second_estimate_reads_the_cache_instead_of_timing_again(tmp_path, timings) -> None:
    path = cache_path_for(tmp_path / "results" / "store.db")
    assert path == tmp_path / "results" / "calibration.json"
    first = Calibration(path, dataset=lambda name: None)
    rates = first.torch_rates(SPEC)
    assert len(timings) == 1 and first.measured == timings and path.is_file()
    again = Calibration(path, dataset=lambda name: None)  # a later process
    assert again.torch_rates(SPEC.replace(lr=0.5, epochs=7, seed=3)) == rates  # same shape
    assert len(timings) == 1 and again.measured == []
    # Another shape, or the same one with other threads (another machine key), is timed.
    again.torch_rates(SPEC.replace(batch_size=16))
    again.torch_rates(SPEC.replace(threads=2))
    assert len(timings) == 3
    machines = json.loads(path.read_text())["machines"]
    assert sum(len(shapes) for shapes in machines.values()) == 3


def test_an_unreadable_cache_is_measured_again(tmp_path, timings) -> None:
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    Calibration(path, dataset=lambda name: None).torch_rates(SPEC)
    assert len(timings) == 1 and json.loads(path.read_text())["version"] == calibrate.CACHE_VERSION


def test_timing_a_resnet_shape_runs_its_real_steps() -> None:
    data = synthetic_dataset(n_train=400, n_test=100)
    rates = time_torch_shape(SPEC, data, seconds=0.01)
    assert rates.train_images_per_second > 0 and rates.eval_images_per_second > 0
    assert rates.run_overhead_seconds > 0 and rates.epoch_overhead_seconds > 0
    # Real steps: the same network on images of 4x the side (16x the pixels, the model's work
    # grows about as much) trains and evaluates several times slower, whatever the machine.
    large = time_torch_shape(SPEC.replace(image_size=112), data, seconds=0.01)
    assert rates.train_images_per_second > 3 * large.train_images_per_second
    assert rates.eval_images_per_second > 3 * large.eval_images_per_second


def test_timing_an_svm_fits_it_and_scales_it_by_its_back_ends_growth() -> None:
    data = synthetic_dataset(n_train=400, n_test=100)
    spec = RunSpec(model="svm", train_limit=300, test_limit=100, svm_backend="sklearn", threads=1)
    rates = time_svm_shape(spec, data)
    assert isinstance(rates, SvmRates) and rates.n_train == 300 and rates.n_predicted == 100
    assert rates.fit_seconds > 0 and rates.overhead_seconds > 0
    assert (rates.fit_exponent, rates.predict_exponent) == calibrate.SVM_GROWTH["sklearn"]


def test_model_file_bytes_are_the_parameters_and_buffers() -> None:
    for model, channels in (("resnet18", 1), ("resnet50", 3)):
        spec = RunSpec(model=model, channels=channels)
        state = build_resnet(model, channels=channels).state_dict()
        expected = sum(t.numel() * t.element_size() for t in state.values())
        assert model_file_bytes(spec) == expected
    assert model_file_bytes(RunSpec(model="svm")) == 0
    assert model_file_bytes(RunSpec(model="resnet50")) > 2 * model_file_bytes(RunSpec())


def test_shape_keys_ignore_what_does_not_change_speed() -> None:
    key = calibrate.torch_shape_key
    assert key(SPEC) == key(SPEC.replace(lr=0.1, seed=4, epochs=9, dataset="fashion-mnist"))
    assert key(SPEC) == key(SPEC.replace(optimizer="adam")) != key(SPEC.replace(optimizer="sgd"))
    assert key(SPEC) != key(SPEC.replace(model="resnet50"))
    assert key(SPEC) != key(SPEC.replace(image_size=64))
    assert "fp32" in key(SPEC.replace(amp="cuda")) or torch.cuda.is_available()
