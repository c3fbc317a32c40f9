import json
from pathlib import Path

import pytest
import torch

from mnistbench.config import RunSpec
from mnistbench.engines.torch import memory_format as layout
from mnistbench.engines.torch.memory_format import choose_layout, time_layouts
from mnistbench.engines.torch.prepare import prepare
from tests.conftest import synthetic_dataset

CPU = torch.device("cpu")
SPEC = RunSpec(model="resnet18", batch_size=8, threads=1, device="cpu")


class FakeTimer:
    """Stands in for the step timing: returns the given rates and counts its calls."""

    def __init__(self, contiguous: float, channels_last: float) -> None:
        self.rates = {"contiguous": contiguous, "channels_last": channels_last}
        self.calls = 0

    def __call__(self, spec: RunSpec, device: torch.device) -> dict[str, float]:
        self.calls += 1
        return dict(self.rates)


def test_a_layout_set_in_the_spec_is_used_without_measuring(tmp_path: Path) -> None:
    never = FakeTimer(1, 1)
    for setting, channels_last in (("channels_last", True), ("contiguous", False)):
        for convs in ("matmul", "conv"):
            spec = SPEC.replace(memory_format=setting, small_map_convs=convs)
            choice = choose_layout(spec, CPU, cache=tmp_path / "l.json", timer=never)
            assert choice.channels_last is channels_last and choice.images_per_second is None
            assert choice.protocol()["small_map_convs"] == convs
    assert never.calls == 0 and not (tmp_path / "l.json").exists()


# Rates like a Zen 3 EPYC's at 28 px, batch 32: matmul on the 2x2 and 1x1 maps doubles NCHW.
SMALL_MAP_RATES = {
    "contiguous": 100.0,
    "channels_last": 150.0,
    "contiguous matmul": 250.0,
    "channels_last matmul": 160.0,
}


@pytest.mark.parametrize(
    ("memory_format", "convs", "expected"),
    [
        ("auto", "auto", ("contiguous", "matmul")),  # the fastest pair, not the best layout alone
        ("auto", "conv", ("channels_last", "conv")),
        ("channels_last", "auto", ("channels_last", "matmul")),  # 160 > 1.03 x 150
        ("contiguous", "auto", ("contiguous", "matmul")),
        ("auto", "matmul", ("contiguous", "matmul")),
    ],
)
def test_matmul_on_small_maps_is_chosen_with_the_layout_where_it_trains_faster(
    tmp_path: Path, memory_format: str, convs: str, expected: tuple[str, str]
) -> None:
    spec = SPEC.replace(memory_format=memory_format, small_map_convs=convs)
    choice = choose_layout(spec, CPU, cache=tmp_path / "l.json", timer=lambda s, d: SMALL_MAP_RATES)
    protocol = choice.protocol()
    assert (protocol["memory_format"], protocol["small_map_convs"]) == expected
    assert choice.matmul_small_maps is (expected[1] == "matmul")
    assert protocol["memory_format_choice"]["contiguous matmul"] == 250.0


def test_matmul_within_the_margin_is_left_to_the_backends_convolution(tmp_path: Path) -> None:
    rates = {**SMALL_MAP_RATES, "contiguous matmul": 102.0, "channels_last matmul": 151.0}
    choice = choose_layout(SPEC, CPU, cache=tmp_path / "l.json", timer=lambda s, d: rates)
    assert choice.protocol()["small_map_convs"] == "conv" and choice.channels_last


@pytest.mark.parametrize(
    ("contiguous", "channels_last", "chosen"),
    [(100.0, 120.0, True), (120.0, 100.0, False), (100.0, 102.0, False)],  # last: a wash
)
def test_auto_picks_the_layout_measured_faster(
    tmp_path: Path, contiguous: float, channels_last: float, chosen: bool
) -> None:
    choice = choose_layout(
        SPEC, CPU, cache=tmp_path / "l.json", timer=FakeTimer(contiguous, channels_last)
    )
    assert choice.channels_last is chosen
    assert choice.protocol()["memory_format"] == ("channels_last" if chosen else "contiguous")
    assert choice.protocol()["memory_format_choice"]["channels_last"] == channels_last


def test_auto_measures_a_shape_once_per_machine_and_keeps_it(tmp_path: Path) -> None:
    cache, timer = tmp_path / "l.json", FakeTimer(100, 150)
    first = choose_layout(SPEC, CPU, cache=cache, timer=timer)
    again = choose_layout(SPEC, CPU, cache=cache, timer=FakeTimer(150, 100))  # not asked
    assert (first.channels_last, again.channels_last) == (True, True)
    assert (first.reason, again.reason) == ("measured now", "measured earlier (cached)")
    assert timer.calls == 1
    other_batch = RunSpec(**{**SPEC.to_dict(), "batch_size": 16})
    assert not choose_layout(other_batch, CPU, cache=cache, timer=FakeTimer(150, 100)).channels_last
    two_threads = RunSpec(**{**SPEC.to_dict(), "threads": 2})  # another machine shape
    other = FakeTimer(150, 100)
    assert not choose_layout(two_threads, CPU, cache=cache, timer=other).channels_last
    assert other.calls == 1
    assert len(json.loads(cache.read_text())["entries"]) == 3


def test_an_unreadable_or_older_cache_is_measured_again(tmp_path: Path) -> None:
    cache = tmp_path / "l.json"
    for content in ("{not json", json.dumps({"version": 0, "entries": {}})):
        cache.write_text(content)
        timer = FakeTimer(100, 150)
        assert choose_layout(SPEC, CPU, cache=cache, timer=timer).channels_last
        assert timer.calls == 1


def test_the_measurement_times_both_layouts_and_leaves_the_rng_as_it_was(monkeypatch) -> None:
    monkeypatch.setattr(layout, "TIMED_SECONDS", 0.0)  # the minimum of steps
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    rates = time_layouts(SPEC, CPU)
    layouts = {"contiguous", "channels_last", "eval contiguous", "eval channels_last"}
    # ResNet-18 at 28 px has 2x2 and 1x1 maps: matmul on them is timed in both layouts
    assert set(rates) == layouts | {"contiguous matmul", "channels_last matmul"}
    assert min(rates.values()) > 0
    assert torch.equal(torch.rand(3), expected)
    # At 32 px with the cifar stem the smallest map is 4x4: nothing for matmul to change
    assert (
        set(time_layouts(SPEC.replace(image_size=32, stem="cifar", batch_size=2), CPU)) == layouts
    )


def test_a_run_states_the_layout_it_trains_in_and_why(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MNISTBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(layout, "time_layouts", FakeTimer(100, 150))
    setup = prepare(SPEC, synthetic_dataset(n_train=32, n_test=16))
    assert setup.preprocess.channels_last
    conv = setup.training.model.layer1[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert setup.backends["memory_format"] == "channels_last"
    assert setup.backends["memory_format_choice"] == {
        "reason": "measured now",
        "contiguous": 100,
        "channels_last": 150,
    }


def test_a_burst_of_other_work_during_one_layouts_steps_does_not_decide(monkeypatch) -> None:
    # Steps alternate NCHW, NHWC. Other work slows most NCHW steps 5x: one undisturbed step
    # shows NCHW is the faster layout (1.0 s against 1.2 s), and that step decides.
    nchw = iter([1.0] + [5.0] * 100)
    nhwc = iter([1.2] * 100)
    turn = iter(range(1000))
    monkeypatch.setattr(layout, "count_small_map_convs", lambda model, channels, size: 0)
    monkeypatch.setattr(layout, "_make_step", lambda spec, device, last, matmul: lambda: None)
    monkeypatch.setattr(layout, "_make_eval", lambda spec, device, last, batch: lambda: None)
    monkeypatch.setattr(
        layout, "_timed", lambda step, device: next(nchw if next(turn) % 2 == 0 else nhwc)
    )
    rates = time_layouts(SPEC, CPU)
    assert {name: rates[name] for name in layout.LAYOUTS} == {
        "contiguous": 8.0,
        "channels_last": round(8 / 1.2, 1),
    }


@pytest.mark.parametrize(("work", "chosen"), [((5_000, 0), False), ((5_000, 10_000), True)])
def test_the_layout_that_does_the_runs_training_and_evaluation_faster_is_chosen(
    tmp_path: Path, work: tuple[int, int], chosen: bool
) -> None:
    # NCHW trains 2 % faster, NHWC evaluates 2.4x faster (28 px on a Zen 3 EPYC): a run that
    # evaluates 10,000 images saves more in evaluation than it loses in training.
    rates = {"contiguous": 100.0, "channels_last": 98.0}
    rates |= {"eval contiguous": 100.0, "eval channels_last": 240.0}
    choice = choose_layout(
        SPEC, CPU, work=work, cache=tmp_path / "l.json", timer=lambda s, d: rates
    )
    assert choice.channels_last is chosen
    assert choice.protocol()["memory_format_choice"]["eval channels_last"] == 240.0


def test_a_calibration_probe_trains_in_the_layout_of_the_run_it_stands_for(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MNISTBENCH_CACHE_DIR", str(tmp_path))
    rates = {"contiguous": 100.0, "channels_last": 90.0}
    rates |= {"eval contiguous": 100.0, "eval channels_last": 240.0}
    monkeypatch.setattr(layout, "time_layouts", lambda spec, device: rates)
    data, spec = synthetic_dataset(n_train=32, n_test=16), SPEC.replace(eval_each_epoch=False)
    assert not prepare(
        spec, data
    ).preprocess.channels_last  # its own work: 160 trained, 16 evaluated
    assert prepare(spec, data, work=(5_000, 10_000)).preprocess.channels_last
