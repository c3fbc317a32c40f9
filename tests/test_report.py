"""Reports from a synthetic store: the tables' cells, the headline and insight sentences, the
plots and the exports, each checked against numbers worked out by hand in this file.

The store is built with Store + RunSpec + RunResult directly (no training). It holds:
- grid_mnist: ResNet-18/50 × batch {16, 32} × {SGD, Adam}, seeds 0 and 1, with one config not
  run, one failed on both seeds, one diverged on one seed, and one far below its neighbours;
- svm: poly and rbf on both datasets, one seed;
- devices: ResNet-18/50 on CPU and CUDA, the CUDA runs skipped (or, with gpu=True, finished).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from mnistbench.config import RunSpec
from mnistbench.report import build_report, write_report
from mnistbench.report.plots import device_bars
from mnistbench.report.runs import load_runs
from mnistbench.result import EpochRecord, RunResult
from mnistbench.store import Store

STUDY = "syn"
CPU = "Test CPU 9000"
GPU = "Test GPU X1"
SKIP_REASON = "device 'cuda' needs CUDA; this machine has no CUDA GPU"

# (model, batch, optimizer) -> per seed: (test accuracy %, train seconds), or a state name.
GRID: dict[tuple[str, int, str], list[tuple[float, float] | str]] = {
    ("resnet18", 16, "sgd"): [(98.0, 100.0), (98.4, 110.0)],
    ("resnet18", 16, "adam"): [(97.0, 120.0), (97.2, 120.0)],
    ("resnet18", 32, "sgd"): [(60.0, 50.0), (61.0, 52.0)],  # far below its neighbours
    ("resnet18", 32, "adam"): [(96.4, 60.0), (96.6, 60.0)],
    ("resnet50", 16, "sgd"): [(98.8, 300.0), (99.0, 310.0)],
    ("resnet50", 16, "adam"): ["pending", "pending"],
    ("resnet50", 32, "sgd"): ["failed", "failed"],
    ("resnet50", 32, "adam"): [(95.0, 150.0), "diverged"],
}
# (dataset, kernel) -> (accuracy %, train seconds, support vectors)
SVMS = {
    ("mnist", "poly"): (97.61, 286.0, 9000),
    ("mnist", "rbf"): (96.99, 368.0, 11000),
    ("fashion-mnist", "poly"): (87.00, 400.0, 20000),
    ("fashion-mnist", "rbf"): (89.89, 480.0, 21000),
}
# model -> (accuracy %, CPU seconds, GPU seconds, forward FLOPs per image)
DEVICES = {
    "resnet18": (90.0, 1149.0, 62.0, 3.64e9),
    "resnet50": (91.0, 2500.0, 100.0, 8.2e9),
}


def _environment(device_name: str) -> dict[str, Any]:
    return {
        "python": "3.11.9",
        "torch": "2.5.1",
        "sklearn": "1.5.0",
        "cpu": CPU,
        "threads": 2,
        "device_name": device_name,
        "git_commit": "abc1234",
        "hostname": "testhost",
    }


def _history(accuracy: float, seconds: float, diverged: bool = False) -> list[EpochRecord]:
    first = EpochRecord(
        epoch=1,
        train_loss=0.9,
        train_accuracy=70.0,
        lr=1e-3,
        train_seconds=seconds / 2,
        images=1000,
        eval_split="test",
        eval_accuracy=accuracy - 5,
    )
    if diverged:
        return [first, EpochRecord(epoch=2, status="diverged", diverged_step=345)]
    second = dataclasses.replace(first, epoch=2, train_loss=0.3, eval_accuracy=accuracy)
    return [first, second]


def _confusion(accuracy: float) -> list[list[int]]:
    right = round(accuracy)
    return [
        [right if c == r else (100 - right if c == (r + 1) % 10 else 0) for c in range(10)]
        for r in range(10)
    ]


def torch_result(spec: RunSpec, accuracy: float, seconds: float, **extra: Any) -> RunResult:
    on_gpu = spec.device.startswith("cuda")
    flops = extra.pop("flops", 3.64e9)
    return RunResult(
        spec=spec.to_dict(),
        test_accuracy=accuracy,
        train_seconds=seconds,
        eval_seconds=1.0,
        images_per_second=extra.pop("images_per_second", 500.0 if on_gpu else 20.0),
        flops_per_image=flops,
        macs_per_image=flops / 2,
        device="cuda:0" if on_gpu else "cpu",
        precision="fp16" if on_gpu else "fp32",
        history=_history(accuracy, seconds),
        confusion_matrix=_confusion(accuracy),
        environment=_environment(GPU if on_gpu else CPU),
        protocol={
            "split": "official",
            "sizes": {"train": 1000, "val": 0, "test": 100},
            "precision": "fp16" if on_gpu else "fp32",
            "pin_memory": False,
        },
        **extra,
    )


def _finish(store: Store, spec: RunSpec, result: RunResult) -> None:
    assert store.claim(spec.key())
    store.finish(spec.key(), result)


def build_synthetic_store(path: Path, gpu: bool = False) -> Path:
    common = {"split": "official", "train_limit": 1000, "test_limit": 100, "threads": 2}
    with Store(path) as store:
        grid_specs = []
        for (model, batch, optimizer), seeds in GRID.items():
            for seed, outcome in enumerate(seeds):
                spec = RunSpec(
                    dataset="mnist",
                    model=model,
                    batch_size=batch,
                    optimizer=optimizer,
                    lr=1e-3,
                    epochs=2,
                    seed=seed,
                    device="cpu",
                    **common,
                )
                grid_specs.append((spec, outcome))
        store.register(STUDY, "grid_mnist", [spec for spec, _ in grid_specs])
        for spec, outcome in grid_specs:
            if outcome == "failed":
                assert store.claim(spec.key())
                store.fail(spec.key(), "RuntimeError: out of memory", "Traceback ...")
            elif outcome == "diverged":
                result = torch_result(
                    spec, 0.0, 40.0, status="diverged", message="loss is nan at step 345"
                )
                result.test_accuracy, result.confusion_matrix = None, None
                result.history = _history(0.0, 40.0, diverged=True)
                _finish(store, spec, result)
            elif outcome != "pending":
                _finish(store, spec, torch_result(spec, *outcome))

        svm_specs = {
            key: RunSpec(
                model="svm", dataset=key[0], kernel=key[1], C=10.0, svm_backend="sklearn", **common
            )
            for key in SVMS
        }
        store.register(STUDY, "svm", list(svm_specs.values()))
        for key, spec in svm_specs.items():
            accuracy, seconds, support = SVMS[key]
            _finish(
                store,
                spec,
                RunResult(
                    spec=spec.to_dict(),
                    test_accuracy=accuracy,
                    train_seconds=seconds,
                    eval_seconds=5.0,
                    device=CPU,
                    backend="sklearn 1.5.0",
                    n_support=support,
                    confusion_matrix=_confusion(accuracy),
                    environment=_environment(CPU),
                    protocol={"split": "official", "sizes": {"train": 1000, "val": 0, "test": 100}},
                ),
            )

        device_specs = []
        for model in DEVICES:
            for device in ("cpu", "cuda"):
                device_specs.append(
                    RunSpec(
                        dataset="fashion-mnist",
                        model=model,
                        batch_size=32,
                        optimizer="adam",
                        lr=1e-4,
                        epochs=2,
                        device=device,
                        **common,
                    )
                )
        store.register(STUDY, "devices", device_specs)
        for spec in device_specs:
            accuracy, cpu_s, gpu_s, flops = DEVICES[spec.model]
            if spec.device == "cuda" and not gpu:
                assert store.claim(spec.key())
                store.skip(spec.key(), SKIP_REASON)
                continue
            seconds = gpu_s if spec.device == "cuda" else cpu_s
            _finish(store, spec, torch_result(spec, accuracy, seconds, flops=flops))
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("report") / "results.db")


@pytest.fixture(scope="module")
def report(store_path: Path):
    with Store(store_path) as store:
        return build_report(store, STUDY)


def section(report, name: str):
    return next(s for s in report.sections if s.experiment == name)


def texts(row) -> list[str]:
    return [cell.text for cell in row]


# --- tables -------------------------------------------------------------------------------------


def test_grid_table_has_the_published_shape_and_mean_std_cells(report) -> None:
    table = section(report, "grid_mnist").table
    assert table.kind == "grid"
    assert table.header == [
        "batch size",
        "optimizer",
        "lr",
        "ResNet-18 %",
        "ResNet-50 %",
        "ResNet-18 train (s)",
        "ResNet-50 train (s)",
    ]
    r18_b16_sgd = statistics.mean([98.0, 98.4]), statistics.stdev([98.0, 98.4])
    r50_b16_sgd = statistics.mean([98.8, 99.0]), statistics.stdev([98.8, 99.0])
    assert texts(table.rows[0]) == [
        "16",
        "SGD",
        "0.001",
        f"{r18_b16_sgd[0]:.2f} ± {r18_b16_sgd[1]:.2f}",
        f"{r50_b16_sgd[0]:.2f} ± {r50_b16_sgd[1]:.2f}",
        "105.0 ± 7.1",
        "305.0 ± 7.1",
    ]
    assert texts(table.rows[0])[3:5] == ["98.20 ± 0.28", "98.90 ± 0.14"]
    assert table.rows[0][3].value == pytest.approx(98.2)
    assert [texts(row)[:3] for row in table.rows] == [
        ["16", "SGD", "0.001"],
        ["16", "Adam", "0.001"],
        ["32", "SGD", "0.001"],
        ["32", "Adam", "0.001"],
    ]


def test_missing_grid_cells_say_why(report) -> None:
    table = section(report, "grid_mnist").table
    b16_adam, b32_sgd, b32_adam = table.rows[1], table.rows[2], table.rows[3]
    assert b16_adam[4].text == "not run" and b16_adam[6].text == "not run"
    assert b32_sgd[4].text == "failed" and b32_sgd[4].note == "RuntimeError: out of memory"
    assert b32_adam[4].text == "95.00 (1/2 seeds; 1 diverged)"
    assert b32_adam[4].state == "partial"
    assert b32_adam[6].text == "150.0 (1/2 seeds; 1 diverged)"
    for row in table.rows:
        for cell in row:
            assert cell.text.strip() and cell.text not in ("0", "0.00", "nan")
    assert table.notes == [
        "not run: pending in the store — ResNet-50, MNIST, B16, Adam, lr 0.001 (seeds 0, 1)",
        "failed: RuntimeError: out of memory — ResNet-50, MNIST, B32, SGD, lr 0.001 (seeds 0, 1)",
        "diverged: loss is nan at step 345 — ResNet-50, MNIST, B32, Adam, lr 0.001 (seed 1)",
    ]


def test_grid_footnote_states_the_protocol(report) -> None:
    footnote = section(report, "grid_mnist").table.footnote
    for part in (
        "split: official (1,000 train / 0 val / 100 test images)",
        "train_limit 1,000, test_limit 100",
        "image size: 28×28×1",
        "epochs: 2",
        "pin_memory: off",
        "precision: fp32",
        f"devices: {CPU} (cpu, 2 threads)",
        "seeds: 0, 1 (cells are mean ± sample std over seeds)",
    ):
        assert part in footnote


def test_svm_table(report) -> None:
    table = section(report, "svm").table
    assert table.kind == "svm"
    assert table.header == [
        "dataset",
        "kernel",
        "C",
        "accuracy %",
        "train time (ms)",
        "support vectors",
        "back-end",
    ]
    assert [texts(row) for row in table.rows] == [
        ["MNIST", "poly", "10", "97.61", "286,000", "9,000", "sklearn 1.5.0"],
        ["MNIST", "rbf", "10", "96.99", "368,000", "11,000", "sklearn 1.5.0"],
        ["FashionMNIST", "poly", "10", "87.00", "400,000", "20,000", "sklearn 1.5.0"],
        ["FashionMNIST", "rbf", "10", "89.89", "480,000", "21,000", "sklearn 1.5.0"],
    ]
    assert "epochs, pin_memory, precision: n/a (SVM)" in table.footnote


def test_devices_table_without_gpu(report) -> None:
    table = section(report, "devices").table
    assert table.kind == "devices"
    assert table.header == [
        "compute",
        "model",
        "accuracy %",
        "train time (ms)",
        "GFLOPs/img (fwd)",
        "GMACs/img",
        "images/s",
        "speedup vs CPU",
    ]
    assert texts(table.rows[0]) == [
        f"CPU: {CPU}",
        "ResNet-18",
        "90.00",
        "1,149,000",
        "3.640",
        "1.820",
        "20",
        "1.00× (baseline)",
    ]
    gpu_row = texts(table.rows[1])
    assert gpu_row[:6] == [
        "GPU (cuda, skipped)",
        "ResNet-18",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
    ]
    assert gpu_row[-1] == "n/a (skipped)"
    assert table.notes == [
        f"skipped: {SKIP_REASON} — ResNet-18, FashionMNIST, B32, Adam, lr 0.0001, device cuda "
        "(seed 0); ResNet-50, FashionMNIST, B32, Adam, lr 0.0001, device cuda (seed 0)"
    ]
    assert "cuda (skipped)" in table.footnote
    assert section(report, "devices").plots[0].slug == "devices-curves"
    assert "No CPU-vs-GPU bar chart" in section(report, "devices").notes[0]


# --- headline and insights ----------------------------------------------------------------------


def sentences(report, topic: str) -> list[str]:
    return [i.text for i in report.headline + report.insights if i.topic == topic]


def test_best_config_per_dataset_and_model(report) -> None:
    from scipy import stats

    best = sentences(report, "best")
    p = stats.ttest_ind([98.0, 98.4], [97.0, 97.2], equal_var=False).pvalue
    assert best[0] == (
        "Best ResNet-18 on MNIST: 98.20 ± 0.28% (2 seeds) test accuracy with B16, SGD, lr 0.001 "
        "(grid_mnist; best of 4 finished configs; train 105.0 s). Runner-up: B16, Adam, lr 0.001 "
        f"at 97.10 ± 0.14% (2 seeds), 1.10 points lower; Welch's t-test p = {p:.3f}: "
        f"{'significant' if p < 0.05 else 'not significant'} at the 5% level."
    )
    assert best[1] == (
        "Best ResNet-50 on MNIST: 98.90 ± 0.14% (2 seeds) test accuracy with B16, SGD, lr 0.001 "
        "(grid_mnist; best of 2 finished configs out of 4; train 305.0 s). Runner-up: B32, Adam, "
        "lr 0.001 at 95.00%, 3.90 points lower; with one seed per config the gap is not tested "
        "for significance."
    )
    # Devices: ResNet-50 on FashionMNIST at 91.00% on CPU beats nothing else (GPU skipped).
    assert best[3].startswith("Best ResNet-50 on FashionMNIST: 91.00% test accuracy with B32, Adam")


def test_best_svm_and_resnet_vs_svm(report) -> None:
    svm = sentences(report, "svm")
    assert svm[0] == (
        "Best SVM on MNIST: poly kernel, C=10, 97.61% in 286,000 ms train time (sklearn 1.5.0; "
        "best of 2 finished SVM configs). Others: rbf kernel, C=10 96.99% in 368,000 ms."
    )
    assert svm[1].startswith("Best SVM on FashionMNIST: rbf kernel, C=10, 89.89% in 480,000 ms")
    versus = sentences(report, "versus")
    assert versus[0] == (
        "On MNIST the best ResNet is 1.29 points more accurate than the best SVM: ResNet-50 "
        "98.90% (train 305.0 s) vs SVM poly 97.61% (train 286.0 s)."
    )
    # FashionMNIST: ResNet-50 on CPU 91.00 vs rbf 89.89.
    assert versus[1].startswith("On FashionMNIST the best ResNet is 1.11 points more accurate")


def test_no_gpu_rows_says_speedup_cannot_be_computed(report) -> None:
    assert sentences(report, "speedup") == [
        f"The GPU speedup for {model} on FashionMNIST (B32, Adam, lr 0.0001) cannot be computed: "
        f"the GPU run was skipped ({SKIP_REASON})."
        for model in ("ResNet-18", "ResNet-50")
    ]


def test_effects_of_optimizer_and_batch_size(report) -> None:
    sgd = [98.0, 98.4, 60.0, 61.0, 98.8, 99.0]
    adam = [97.0, 97.2, 96.4, 96.6, 95.0]
    sgd_s = [100, 110, 50, 52, 300, 310]
    adam_s = [120, 120, 60, 60, 150]
    effect = sentences(report, "effect")
    assert effect[0] == (
        "grid_mnist (MNIST), optimizer × lr (mean over batch size and model): best Adam, lr 0.001 → "
        f"{statistics.mean(adam):.2f}% in {statistics.mean(adam_s):.1f} s (n=5), worst SGD, lr 0.001 → "
        f"{statistics.mean(sgd):.2f}% in {statistics.mean(sgd_s):.1f} s (n=6); a spread of "
        f"{statistics.mean(adam) - statistics.mean(sgd):.2f} points."
    )
    b16 = [98.0, 98.4, 97.0, 97.2, 98.8, 99.0]
    b32 = [60.0, 61.0, 96.4, 96.6, 95.0]
    b16_s, b32_s = [100, 110, 120, 120, 300, 310], [50, 52, 60, 60, 150]
    speed = statistics.mean(b16_s) / statistics.mean(b32_s)
    assert effect[1] == (
        "grid_mnist (MNIST), batch size (mean over optimizer and model): batch size 16 → "
        f"{statistics.mean(b16):.2f}% in {statistics.mean(b16_s):.1f} s (n=6); batch size 32 → "
        f"{statistics.mean(b32):.2f}% in {statistics.mean(b32_s):.1f} s (n=5). Batch 32 trains "
        f"{speed:.2f}× faster than batch 16 and is "
        f"{statistics.mean(b16) - statistics.mean(b32):.2f} points less accurate."
    )
    assert "2.37× faster" in effect[1] and "16.27 points less accurate" in effect[1]
    table = report.effect_tables[1]
    assert texts(table.rows[0]) == [
        "16",
        "6",
        f"{statistics.mean(b16):.2f}",
        f"{statistics.mean(b16_s):.1f}",
        "2",
    ]
    assert table.rows[1][4].text == "3"  # B32: 2 failed + 1 diverged


def test_outliers_name_diverged_failed_and_far_below_runs(report) -> None:
    outliers = sentences(report, "outlier")
    assert (
        "Diverged: ResNet-50, MNIST, B32, Adam, lr 0.001, seed 1 (grid_mnist) in epoch 2 at step "
        "345: loss is nan at step 345." in outliers
    )
    assert (
        "Failed: ResNet-50, MNIST, B32, SGD, lr 0.001, seed 0 (grid_mnist): RuntimeError: out of memory."
        in outliers
    )
    median = statistics.median([98.2, 96.5])  # B16 SGD and B32 Adam: one setting away
    far = [s for s in outliers if s.startswith("Outlier:")]
    assert far == [
        f"Outlier: ResNet-18, MNIST, B32, SGD, lr 0.001 (grid_mnist) reached 60.50 ± 0.71% (2 seeds), "
        f"{median - 60.5:.2f} points below the median ({median:.2f}%) of its 2 neighbours (configs "
        "that differ in one setting; threshold 10 points)."
    ]


def test_caveats_say_what_the_data_cannot_support(report) -> None:
    caveats = sentences(report, "caveat")
    # Finished configs: grid 6 (one of them with one finished seed), SVM 4, devices 2.
    assert caveats[0] == (
        "7 of 12 finished configs have one finished seed: their differences are not tested for "
        "significance."
    )
    assert caveats[1].startswith(
        "Runs use subsets (1,000 train / 100 test images for ResNet-18, ResNet-50, SVM)"
    )
    assert caveats[2].startswith("2 of 24 runs have no result yet (2 not run)")
    assert caveats[3].startswith("2 runs were skipped on this machine:")


def test_throughput_spread_warns_that_train_times_are_not_comparable(tmp_path: Path) -> None:
    spec = RunSpec(dataset="mnist", model="resnet18", epochs=2, threads=1, device="cpu")
    other = spec.replace(lr=1e-4)
    with Store(tmp_path / "busy.db") as store:
        store.register("busy", "e", [spec, other])
        _finish(store, spec, torch_result(spec, 97.0, 10.0, images_per_second=400.0))
        _finish(store, other, torch_result(other, 96.0, 200.0, images_per_second=10.0))
        report = build_report(store, "busy", plots=False)
    assert sentences(report, "caveat")[0] == (
        "Training throughput of ResNet-18 at 28×28×1 on CPU ranges from 10.0 to 400.0 images/s "
        "(40.0×) over 2 runs with the same model, input, device and precision: a spread this wide "
        "usually means other work shared the machine, so compare their train times with care."
    )


def test_one_seed_only_is_said(tmp_path: Path) -> None:
    with Store(tmp_path / "one.db") as store:
        spec = RunSpec(dataset="mnist", model="resnet18", epochs=2, threads=1, device="cpu")
        store.register("one", "e", [spec, spec.replace(lr=1e-4)])
        _finish(store, spec, torch_result(spec, 97.0, 10.0))
        _finish(store, spec.replace(lr=1e-4), torch_result(spec.replace(lr=1e-4), 96.0, 10.0))
        report = build_report(store, "one", plots=False)
    caveat = sentences(report, "caveat")[0]
    assert caveat.startswith(
        "Every finished config has one seed (seed 0): differences between "
        "configs are not tested for significance"
    )
    assert "with one seed per config the gap is not tested" in sentences(report, "best")[0]
    assert sentences(report, "speedup") == [
        "The GPU speedup cannot be computed: the study has no GPU runs (every ResNet run used the CPU)."
    ]


def test_gpu_rows_give_a_speedup(tmp_path: Path) -> None:
    with Store(build_synthetic_store(tmp_path / "gpu.db", gpu=True)) as store:
        report = build_report(store, STUDY, plots=False)
    speedup = 1149.0 / 62.0
    assert sentences(report, "speedup")[0] == (
        f"GPU speedup for ResNet-18 on FashionMNIST (B32, Adam, lr 0.0001, 2 epochs): {speedup:.2f}× — "
        f"{GPU} trains in 62.0 s, the CPU ({CPU}) in 1,149.0 s; accuracy 90.00% (GPU) vs 90.00% (CPU). "
        "Precision differs: fp16 on the GPU, fp32 on the CPU."
    )
    table = section(report, "devices").table
    assert texts(table.rows[1])[:2] == [f"GPU: {GPU}", "ResNet-18"]
    assert table.rows[1][-1].text == f"{speedup:.2f}×" == "18.53×"
    assert table.rows[3][-1].text == f"{2500 / 100:.2f}×"
    bars = device_bars("devices", section(report, "devices").runs)
    assert bars is not None and bars.png.startswith(b"\x89PNG")
    assert not section(report, "devices").notes
    assert ("GPU", GPU) in report.environment


# --- plots and files ----------------------------------------------------------------------------


def test_plots_are_pngs(report) -> None:
    slugs = [plot.slug for plot in report.plots]
    assert slugs == [
        "grid_mnist-heatmap",
        "grid_mnist-curves",
        "svm-svm",
        "devices-curves",
        "confusion-mnist",
        "confusion-fashion-mnist",
    ]
    for plot in report.plots:
        assert plot.png.startswith(b"\x89PNG\r\n\x1a\n") and len(plot.png) > 5000


def test_written_files(report, tmp_path: Path) -> None:
    written = write_report(report, tmp_path / "out")
    names = sorted(path.name for path in written)
    assert {"report.md", "report.html", "runs.csv", "runs.json", "grid_mnist-heatmap.png"} <= set(
        names
    )
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| 16 | SGD | 0.001 | 98.20 ± 0.28 | 98.90 ± 0.14 | 105.0 ± 7.1 | 305.0 ± 7.1 |" in markdown
    )
    assert "![grid_mnist: accuracy heatmap](grid_mnist-heatmap.png)" in markdown
    for plot in report.plots:
        assert (tmp_path / "out" / f"{plot.slug}.png").read_bytes() == plot.png
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report.plots)
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def test_csv_and_json_exports_are_flat_one_row_per_run(
    report, tmp_path: Path, store_path: Path
) -> None:
    write_report(report, tmp_path, ["csv", "json"])
    with open(tmp_path / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = json.loads((tmp_path / "runs.json").read_text())
    with Store(store_path) as store:
        keys = [run.key for runs in load_runs(store, STUDY).values() for run in runs]
    assert len(rows) == len(records) == len(set(keys)) == 24
    assert all(not isinstance(v, (dict, list)) for record in records for v in record.values())
    first = records[0]
    assert first["experiment"] == "grid_mnist" and first["status"] == "ok"
    assert (
        first["model"] == "resnet18"
        and first["batch_size"] == 16
        and first["test_accuracy"] == 98.0
    )
    assert first["train_ms"] == 100000.0 and first["kernel"] is None  # SVM fields left empty
    assert rows[0]["test_accuracy"] == "98.0" and rows[0]["kernel"] == ""
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 2 and failed[0]["error"] == "RuntimeError: out of memory"
    skipped = [r for r in records if r["status"] == "skipped"]
    assert [r["error"] for r in skipped] == [SKIP_REASON] * 2
    svm = next(r for r in records if r["model"] == "svm")
    assert svm["lr"] is None and svm["kernel"] == "poly" and svm["backend"] == "sklearn 1.5.0"


def test_csv_reads_in_pandas(report, tmp_path: Path) -> None:
    import pandas  # a dev dependency: never skipped

    write_report(report, tmp_path, ["csv", "json"])
    frame = pandas.read_csv(tmp_path / "runs.csv")
    assert frame.shape[0] == 24 and frame["test_accuracy"].max() == 99.0
    assert pandas.read_json(tmp_path / "runs.json").shape[0] == 24


def test_published_numbers_are_quoted_only_under_the_published_protocol(tmp_path: Path) -> None:
    published = {"split": "assignment", "image_size": 224, "channels": 3, "threads": 1}
    net = RunSpec(
        dataset="mnist",
        model="resnet18",
        batch_size=16,
        optimizer="sgd",
        lr=1e-3,
        epochs=5,
        device="cpu",
        **published,
    )
    svm = RunSpec(
        dataset="mnist", model="svm", kernel="poly", C=10.0, split="assignment", threads=1
    )
    fashion_svm = svm.replace(dataset="fashion-mnist")  # the row one copy of them lacked
    native = net.replace(split="official", image_size=28, channels=1)
    with Store(tmp_path / "pub.db") as store:
        store.register("pub", "e", [net, svm, fashion_svm])
        store.register("native", "e", [native])
        _finish(store, net, torch_result(net, 99.35, 600.0))
        for spec, accuracy in ((svm, 97.50), (fashion_svm, 90.00)):
            _finish(
                store,
                spec,
                RunResult(
                    spec=spec.to_dict(),
                    test_accuracy=accuracy,
                    train_seconds=250.0,
                    backend="sklearn 1.5.0",
                    environment=_environment(CPU),
                ),
            )
        _finish(store, native, torch_result(native, 99.00, 60.0))
        report = build_report(store, "pub", plots=False)
        other = build_report(store, "native", plots=False)
    assert sentences(report, "best")[0].endswith(
        "The published study reports 99.20% (B16, SGD, lr 0.001) under this protocol: +0.15 points here."
    )
    assert sentences(report, "svm")[0].endswith(
        "The published study reports 97.61% in 286,093 ms for the poly kernel under this protocol: "
        "-0.11 points here (train times depend on the hardware)."
    )
    assert sentences(report, "svm")[1].endswith(
        "The published study reports 89.84% in 367,438 ms for the poly kernel under this protocol: "
        "+0.16 points here (train times depend on the hardware)."
    )
    assert "published study reports" not in sentences(other, "best")[0]


def test_grid_over_datasets_gives_one_table_per_dataset_and_studies_do_not_mix(
    tmp_path: Path,
) -> None:
    base = RunSpec(
        model="resnet18", epochs=2, device="cpu", threads=1, batch_size=16, optimizer="sgd"
    )
    specs = [
        base.replace(dataset=d, lr=lr) for d in ("mnist", "fashion-mnist") for lr in (1e-3, 1e-4)
    ]
    with Store(tmp_path / "two.db") as store:
        store.register("a", "grid", specs)
        store.register("b", "grid", specs[:1])
        for index, spec in enumerate(specs):
            _finish(store, spec, torch_result(spec, 90.0 + index, 10.0))
        one = build_report(store, "a", descriptions={"grid": "Q1(a)"}, plots=False)
        both = build_report(store, plots=False)
    assert [s.experiment for s in one.sections] == ["grid-mnist", "grid-fashion-mnist"]
    assert one.sections[1].table.title == "grid-fashion-mnist: Q1(a) (FashionMNIST)"
    assert [texts(row) for row in one.sections[1].table.rows] == [
        ["16", "SGD", "0.001", "92.00", "10.0"],
        ["16", "SGD", "0.0001", "93.00", "10.0"],
    ]
    assert [s.experiment for s in both.sections] == [
        "a-grid-mnist",
        "a-grid-fashion-mnist",
        "b-grid",
    ]
    assert len(both.runs) == 4  # the run both studies asked for is one run


def test_most_frequent_mistakes_come_from_the_best_runs_confusion_matrix(report) -> None:
    # Best single runs: ResNet-50 B16 SGD seed 1 on MNIST (99.0%: 1 error per class, to the
    # next class); ResNet-50 on CPU on FashionMNIST (91.0%: 9 per class).
    assert sentences(report, "confusion") == [
        "Most frequent mistakes (true → predicted) of the best run on MNIST (ResNet-50, MNIST, "
        "B16, SGD, lr 0.001, 99.00%, 10 errors): 0 → 1: 1 (1.0% of true 0); 1 → 2: 1 (1.0% of "
        "true 1); 2 → 3: 1 (1.0% of true 2).",
        "Most frequent mistakes (true → predicted) of the best run on FashionMNIST (ResNet-50, "
        "FashionMNIST, B32, Adam, lr 0.0001, 91.00%, 90 errors): T-shirt/top → Trouser: 9 (9.0% "
        "of true T-shirt/top); Trouser → Pullover: 9 (9.0% of true Trouser); Pullover → Dress: 9 "
        "(9.0% of true Pullover).",
    ]
