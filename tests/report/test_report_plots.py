"""The report's figures, read from the matplotlib objects they were drawn from (Plot.figure):
which are drawn and which are left out, each dataset's colour scale, the points, bars and
numbers written on them, and the loss within an epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnistbench.config import RunSpec
from mnistbench.report import build_report
from mnistbench.report.plots import Plot
from mnistbench.study.store import Store
from tests.report.test_report import (
    GPU,
    SKIP_REASON,
    STUDY,
    _finish,
    build_synthetic_store,
    torch_result,
)
from tests.report.test_report_insights import BASE, store_of

SVM = RunSpec(dataset="mnist", model="svm", kernel="rbf", svm_backend="sklearn", threads=1)


def plots_of(path: Path, study: str = "s") -> dict[str, Plot]:
    with Store(path) as store:
        return {plot.slug: plot for plot in build_report(store, study).plots}


def panels(plot: Plot) -> list:
    """The figure's plotting axes (not its colour bars), in the order drawn."""
    return [axes for axes in plot.figure.axes if axes.get_title()]


def texts(plot: Plot) -> list[str]:
    return [t.get_text() for axes in plot.figure.axes for t in axes.texts]


def svm_runs(seconds: dict[tuple[str, str, float], float]) -> list[tuple[RunSpec, float, float]]:
    """SVMs per (dataset, kernel, C): accuracy 90 + C (+5 on MNIST), train time as given."""
    return [
        (SVM.replace(dataset=d, kernel=k, C=c), 90.0 + c + 5 * (d == "mnist"), secs)
        for (d, k, c), secs in seconds.items()
    ]


# --- accuracy against train time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds",
    [[0.62, 0.65, 0.70, 0.72], [0.05, 0.06, 0.08, 0.1]],
    ids=["within 1.5x", "1.5x or more, but 0.05 s apart"],
)
def test_no_svm_time_scatter_where_train_times_span_noise(
    tmp_path: Path, seconds: list[float]
) -> None:
    keys = [("mnist", k, c) for k in ("poly", "rbf") for c in (1.0, 3.0)]
    plots = plots_of(
        store_of(tmp_path / "s.db", "svm", svm_runs(dict(zip(keys, seconds, strict=True))))
    )
    assert "svm-heatmap" in plots and "svm-time" not in plots


def test_the_svm_time_scatter_has_a_point_per_config_and_a_panel_per_dataset(
    tmp_path: Path,
) -> None:
    seconds = {(d, k, c): s * (2 if d == "mnist" else 1) for d in ("mnist", "fashion-mnist")
               for (k, c), s in {("poly", 1.0): 1.0, ("poly", 3.0): 4.0, ("rbf", 1.0): 2.0, ("rbf", 3.0): 9.0}.items()}  # fmt: skip
    plot = plots_of(store_of(tmp_path / "s.db", "svm", svm_runs(seconds)))["svm-time"]
    mnist, fashion = panels(plot)
    assert (mnist.get_title(), fashion.get_title()) == (
        "MNIST: SVM accuracy vs train time",
        "FashionMNIST: SVM accuracy vs train time",
    )
    points = {tuple(xy) for c in fashion.collections for xy in c.get_offsets()}
    assert points == {(1.0, 91.0), (4.0, 93.0), (2.0, 91.0), (9.0, 93.0)}
    assert [c.get_label() for c in mnist.collections] == ["poly", "rbf"]  # colour: the kernel


def test_resnet_accuracy_against_train_time_per_config(tmp_path: Path) -> None:
    runs = [(BASE.replace(model=m, lr=lr), acc, secs)
            for m, lr, acc, secs in (("resnet18", 1e-3, 95.0, 10.0), ("resnet18", 1e-2, 96.0, 11.0),
                                     ("resnet50", 1e-3, 97.0, 30.0), ("resnet50", 1e-2, 94.0, 31.0))]  # fmt: skip
    plot = plots_of(store_of(tmp_path / "g.db", "grid", runs))["grid-time"]
    (axes,) = panels(plot)
    assert axes.get_title() == "MNIST: accuracy vs train time"
    by_model = {c.get_label(): {tuple(xy) for xy in c.get_offsets()} for c in axes.collections}
    assert by_model == {
        "ResNet-18": {(10.0, 95.0), (11.0, 96.0)},
        "ResNet-50": {(30.0, 97.0), (31.0, 94.0)},
    }
    assert sorted(texts(plot)) == ["lr 0.001", "lr 0.001", "lr 0.01", "lr 0.01"]


# --- one colour scale per dataset ---------------------------------------------------------------


def test_each_dataset_has_its_own_colour_scale_and_its_panels_name_it(tmp_path: Path) -> None:
    seconds = {(d, k, c): 1.0 for d in ("mnist", "fashion-mnist") for k in ("poly", "rbf")
               for c in (1.0, 3.0)}  # fmt: skip
    plot = plots_of(store_of(tmp_path / "s.db", "svm", svm_runs(seconds)))["svm-heatmap"]
    mnist, fashion = panels(plot)
    assert (mnist.get_title(), fashion.get_title()) == ("MNIST: SVM", "FashionMNIST: SVM")
    # C is the y axis, the kernel x: MNIST spans 96-98 %, FashionMNIST 91-93 %.
    assert mnist.images[0].get_clim() == (96.0, 98.0)
    assert fashion.images[0].get_clim() == (91.0, 93.0)
    assert len(plot.figure.subfigs) == 2 and all(len(s.axes) == 2 for s in plot.figure.subfigs)
    assert "one colour scale per dataset" in plot.caption


def test_one_setting_beside_the_dataset_gives_a_row_of_cells_per_dataset(tmp_path: Path) -> None:
    seconds = {(d, k, 1.0): 1.0 for d in ("mnist", "fashion-mnist") for k in ("poly", "rbf")}
    plot = plots_of(store_of(tmp_path / "s.db", "svm", svm_runs(seconds)))["svm-heatmap"]
    for axes, accuracy in zip(panels(plot), (96.0, 91.0), strict=True):
        cells = axes.images[0].get_array()
        assert cells.shape == (1, 2) and cells.tolist() == [[accuracy, accuracy]]
        assert [t.get_text() for t in axes.texts] == [f"{accuracy:.1f}"] * 2


# --- CPU against GPU ----------------------------------------------------------------------------


def test_the_devices_chart_writes_the_speedup_over_each_pair(tmp_path: Path) -> None:
    plot = plots_of(build_synthetic_store(tmp_path / "gpu.db", gpu=True), STUDY)["devices-devices"]
    (axes,) = panels(plot)
    assert [p.get_height() for p in axes.patches] == [1149.0, 62.0, 2500.0, 100.0]
    assert "18.53× faster on GPU" in texts(plot) and "25.00× faster on GPU" in texts(plot)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["ResNet-18", "ResNet-50"]
    assert axes.get_yscale() == "linear"  # bars 18× apart look 18× apart
    assert "not run" not in plot.caption


def test_without_gpu_runs_the_devices_chart_says_so_and_states_no_speedup(tmp_path: Path) -> None:
    plot = plots_of(build_synthetic_store(tmp_path / "cpu.db"), STUDY)["devices-devices"]
    (axes,) = panels(plot)
    assert [p.get_height() for p in axes.patches] == [1149.0, 2500.0]  # the CPU bars only
    assert texts(plot).count("GPU:\nnot run") == 2
    assert not [t for t in texts(plot) if "faster" in t or "×" in t]
    assert f"GPU not run here (skipped: {SKIP_REASON}): no bar and no speedup." in plot.caption
    assert GPU not in plot.caption and axes.get_title().endswith(", GPU not run here")


# --- ResNet-18 against ResNet-50 ----------------------------------------------------------------


def test_paired_bars_per_config_and_an_undertrained_pair_hatched(tmp_path: Path) -> None:
    # 2 epochs × ceil(1,000 / 32) = 64 steps: at lr 1e-4 ResNet-50 is 40 points behind.
    runs = [(BASE.replace(model=m, lr=lr), acc, 10.0)
            for m, lr, acc in (("resnet18", 1e-2, 95.0), ("resnet50", 1e-2, 96.0),
                               ("resnet18", 1e-4, 80.0), ("resnet50", 1e-4, 40.0))]  # fmt: skip
    plot = plots_of(store_of(tmp_path / "g.db", "grid", runs))["grid-models"]
    (axes,) = panels(plot)
    assert [t.get_text() for t in axes.get_xticklabels()] == ["lr 0.01", "lr 0.0001"]
    bars = [(p.get_height(), p.get_hatch()) for p in axes.patches]
    assert bars == [(95.0, None), (96.0, None), (80.0, None), (40.0, "//")]  # pair by pair
    assert [t.get_text() for t in axes.texts] == ["95.00", "96.00", "80.00", "40.00\nundertrained"]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["ResNet-18", "ResNet-50", "undertrained"]
    assert "Hatched: undertrained: 64 optimizer steps at lr 0.0001" in plot.caption


def test_no_model_bars_without_both_models(tmp_path: Path) -> None:
    runs = [(BASE.replace(lr=lr), acc, 10.0) for lr, acc in ((1e-3, 90.0), (1e-2, 91.0))]
    assert "grid-models" not in plots_of(store_of(tmp_path / "g.db", "grid", runs))


# --- training curves ----------------------------------------------------------------------------


def test_one_epoch_runs_with_a_loss_trace_draw_the_loss_within_the_epoch(tmp_path: Path) -> None:
    spec = BASE.replace(epochs=1)
    traces = {0: [2.0, 1.5, 1.0, 0.5], 1: [2.2, 1.3, 1.2, 0.3]}
    with Store(tmp_path / "t.db") as store:
        store.register("s", "one", [spec.replace(seed=s) for s in traces])
        for seed, trace in traces.items():
            result = torch_result(spec.replace(seed=seed), 90.0, 10.0)
            result.history = result.history[:1]
            result.history[0].loss_trace = trace
            _finish(store, spec.replace(seed=seed), result)
    plot = plots_of(tmp_path / "t.db")["one-curves"]
    (axes,) = panels(plot)  # one epoch: no accuracy curve beside it
    (line,) = axes.get_lines()
    assert line.get_xdata().tolist() == [0.125, 0.375, 0.625, 0.875]
    assert line.get_ydata() == pytest.approx(np.mean(list(traces.values()), axis=0))
    assert "equal chunks of an epoch's steps" in plot.caption
