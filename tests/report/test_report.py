"""Reports from a synthetic store: the tables' cells and the numbers behind them, the headline,
the plots and the exports, each checked against numbers worked out by hand in this file (the
published study's numbers come from mnistbench.published, never copied here).

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
import sqlite3
import statistics
from pathlib import Path
from typing import Any

import pytest

from mnistbench import published, specfields
from mnistbench.config import RunSpec
from mnistbench.report import build_report, write_report
from mnistbench.report.frame import BUILT_OTHERWISE, LAST, RESULT_FIELDS, load_runs
from mnistbench.report.render import render_markdown
from mnistbench.report.text import label, name
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.store import Store

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
            "cuda_graphs": "on" if on_gpu else "off",
        },
        **extra,
    )


def _finish(store: Store, spec: RunSpec, result: RunResult) -> None:
    assert store.claim(spec.key())
    store.finish(spec.key(), result)


def build_synthetic_store(
    path: Path, gpu: bool = False, gpu_sharing: dict[str, dict[str, Any]] | None = None
) -> Path:
    """The store described at the top; `gpu_sharing`: per model, the concurrency its CUDA run
    records (executors: how many runs shared its GPU)."""
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
            result = torch_result(spec, accuracy, seconds, flops=flops)
            if spec.device == "cuda" and spec.model in (gpu_sharing or {}):
                result.environment["concurrency"] = gpu_sharing[spec.model]
            _finish(store, spec, result)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("report") / "results.db")


@pytest.fixture(scope="module")
def report(store_path: Path):
    with Store(store_path) as store:
        return build_report(store, STUDY)


def table(report, name: str):
    return next(s.table for s in report.sections if s.exp.slug == name)


def row(table, index: int) -> list[str]:
    return table.cells.iloc[index].tolist()


def insights(report, topic: str) -> list:
    return [i for i in report.headline + report.insights if i.topic == topic]


# --- tables -------------------------------------------------------------------------------------


def test_grid_table_has_the_published_shape_with_published_values_beside_ours(report) -> None:
    grid = table(report, "grid_mnist")
    assert grid.kind == "grid"
    assert list(grid.cells.columns) == [
        "batch size", "optimizer", "lr",
        "ResNet-18 %", "ResNet-18 published %", "ResNet-18 Δ",
        "ResNet-50 %", "ResNet-50 published %", "ResNet-50 Δ",
        "ResNet-18 train (s)", "ResNet-50 train (s)",
    ]  # fmt: skip
    mean, std = statistics.mean([98.0, 98.4]), statistics.stdev([98.0, 98.4])
    theirs = published.GRID[("mnist", "resnet18", 16, "sgd", 1e-3)].accuracy
    assert row(grid, 0)[:6] == [
        "16",
        "SGD",
        "0.001",
        f"{mean:.2f} ± {std:.2f}",
        f"{theirs:.2f}",
        f"{mean - theirs:+.2f}†",
    ]
    assert row(grid, 0)[3] == "98.20 ± 0.28" and row(grid, 0)[9:] == [
        "105.00 ± 7.07",
        "305.00 ± 7.07",
    ]
    assert grid.values.loc[0, "ResNet-18 %"] == pytest.approx(98.2)
    assert grid.values.loc[0, "ResNet-18 Δ"] == pytest.approx(98.2 - theirs)
    assert grid.values.loc[0, "ResNet-18 train (s)"] == pytest.approx(105.0)
    assert [r[:3] for r in grid.cells.values.tolist()] == [
        ["16", "SGD", "0.001"], ["16", "Adam", "0.001"], ["32", "SGD", "0.001"], ["32", "Adam", "0.001"]
    ]  # fmt: skip


def test_missing_grid_cells_say_why_and_have_no_number(report) -> None:
    grid = table(report, "grid_mnist")
    assert (
        grid.cells.loc[1, "ResNet-50 %"] == "not run"
        and grid.cells.loc[1, "ResNet-50 train (s)"] == "not run"
    )
    assert grid.cells.loc[2, "ResNet-50 %"] == "failed" and grid.cells.loc[2, "ResNet-50 Δ"] == "—"
    assert grid.cells.loc[3, "ResNet-50 %"] == "95.00 (1/2 seeds; 1 diverged)"
    assert grid.values.loc[3, "ResNet-50 %"] == 95.0
    assert grid.values.loc[[1, 2], "ResNet-50 %"].isna().all()
    assert not grid.cells.isin(["", "0", "0.00", "nan"]).any(axis=None)
    assert grid.notes[-3:] == [
        "not run: pending in the store — ResNet-50, MNIST, B16, Adam (seeds 0, 1)",
        "failed: RuntimeError: out of memory — ResNet-50, MNIST, B32, SGD (seeds 0, 1)",
        "diverged: loss is nan at step 345 — ResNet-50, MNIST, B32, Adam (seed 1)",
    ]


def test_footnotes_state_the_protocol_how_it_differs_from_the_published_one_and_the_machine(
    report,
) -> None:
    notes = table(report, "grid_mnist").notes
    gaps, protocol, machine = notes[0], notes[1], table(report, "grid_mnist").machine
    for part in ("split official here, assignment published", "input 28×28×1 here, 224×224×3 published",
                 f"epochs 2 here, {published.Q1A_EPOCHS['mnist']} published", "device CPU here, GPU published"):  # fmt: skip
        assert part in gaps
    for part in ("split: official (1,000 train / 0 val / 100 test images)", "train_limit 1,000, test_limit 100",
                 "input: 28×28×1", "epochs: 2", "pin_memory: off", "precision: fp32", "seeds: 0, 1 (cells are mean ± sample std over seeds)"):  # fmt: skip
        assert part in protocol
    assert machine == f"Machine: {CPU} (2 threads); PyTorch 2.5.1, scikit-learn 1.5.0."


def test_one_machine_and_one_seed_are_said_once_atop_not_per_table(report) -> None:
    notes = [n for s in report.sections for n in s.table.notes]
    assert not [n for n in notes if n.startswith("Machine:")]  # every table ran on one machine
    texts = [i.text for i in report.headline + report.insights]
    assert not [t for t in texts if "one seed" in t]
    assert (
        report.caveat == "7 of 12 finished configs have one seed: gaps between them are untested."
    )
    markdown = render_markdown(report)
    assert (
        markdown.count("one seed") == 1 and "\nCaveat: 7 of 12" in markdown.split("## Machine")[0]
    )


def test_svm_table_in_seconds_with_the_published_rows(report) -> None:
    svm = table(report, "svm")
    assert svm.kind == "svm"
    assert list(svm.cells.columns) == ["dataset", "kernel", "C", "accuracy %", "train (s)", "support vectors",
                                       "back-end", "published %", "Δ", "published train (s)"]  # fmt: skip
    assert row(svm, 0)[:7] == ["MNIST", "poly", "10", "97.61", "286.00", "9,000", "sklearn 1.5.0"]
    theirs = [published.SVM[(d, k)] for d in ("mnist", "fashion-mnist") for k in ("poly", "rbf")]
    assert svm.values["published %"].tolist() == [p.accuracy for p in theirs]
    assert svm.values["published train (s)"].tolist() == [p.train_seconds for p in theirs]
    assert svm.values["Δ"].tolist() == pytest.approx(
        [a - p.accuracy for a, p in zip([97.61, 96.99, 87.0, 89.89], theirs, strict=True)]
    )
    assert "epochs" not in svm.notes[1] and "features: pixels" in svm.notes[1]


def test_one_unit_per_quantity(report) -> None:
    headers = [h for s in report.sections for h in s.table.cells.columns]
    assert not [h for h in headers if "ms" in h.split()] and "train (s)" in headers


def test_devices_table_without_gpu(report) -> None:
    devices = table(report, "devices")
    assert devices.kind == "devices"
    assert row(devices, 0)[:10] == [
        f"CPU: {CPU}",
        "ResNet-18",
        "90.00",
        "1,149.00",
        "3.640",
        "1.820",
        "20",
        "1.814 | 1.824",
        "1.00× (baseline)",
        "87.40",
    ]
    assert (
        row(devices, 1)[:7] == ["GPU (cuda)", "ResNet-18", "not run here (needs CUDA)"] + [""] * 4
    )
    assert row(devices, 1)[7:9] == ["1.814 | 1.824", ""]  # a count, shown though the run was not
    assert devices.cells.loc[1].tolist().count("not run here (needs CUDA)") == 1
    assert devices.values["published %"].tolist() == [
        published.Q2[(m, d)].accuracy for m in ("resnet18", "resnet50") for d in ("cpu", "cuda")
    ]
    assert devices.notes[-1] == (
        f"skipped: {SKIP_REASON} — ResNet-18, FashionMNIST, GPU (seed 0); ResNet-50, FashionMNIST, GPU (seed 0)"
    )
    assert [p.slug for p in next(s for s in report.sections if s.exp.slug == "devices").plots] == [
        "devices-devices",
        "devices-models",
        "devices-curves",
    ]


def test_gpu_rows_give_a_speedup_per_model_with_its_flops(tmp_path: Path) -> None:
    with Store(build_synthetic_store(tmp_path / "gpu.db", gpu=True)) as store:
        report = build_report(store, STUDY, plots=False)
    devices = table(report, "devices")
    assert devices.cells.loc[1, "compute"] == f"GPU: {GPU}"
    assert devices.cells.loc[1, "speedup vs CPU"] == "18.53×" and devices.values.loc[
        1, "speedup vs CPU"
    ] == pytest.approx(1149 / 62)
    assert devices.values.loc[3, "speedup vs CPU"] == pytest.approx(2500 / 100)
    (speedup,) = insights(report, "speedup")
    assert speedup.data["speedups"] == pytest.approx({"resnet18": 1149 / 62, "resnet50": 25.0})
    assert (
        devices.notes[3]
        == f"Machine: {CPU} (2 threads), GPU {GPU}; PyTorch 2.5.1, scikit-learn 1.5.0."
    )
    assert ("GPU", GPU) in report.environment


def test_a_gpu_train_time_taken_beside_other_runs_is_marked_and_the_footnote_says_how_many(
    tmp_path: Path,
) -> None:
    sharing = {
        "resnet18": {"runs_at_once": 3, "runs_on_same_gpu": 2, "mean_runs_on_same_gpu": 1.5},
        "resnet50": {"runs_at_once": 1, "runs_on_same_gpu": 1, "mean_runs_on_same_gpu": 1.0},
    }
    with Store(build_synthetic_store(tmp_path / "gpu.db", gpu=True, gpu_sharing=sharing)) as store:
        report = build_report(store, STUDY, plots=False)
    devices = table(report, "devices")
    # Rows: ResNet-18 CPU, GPU, ResNet-50 CPU, GPU. Only the GPU run that shared is marked, and
    # its number (and the speedup from it) stays the run's own train time.
    assert devices.cells["train (s)"].tolist() == ["1,149.00", "62.00‡", "2,500.00", "100.00"]
    assert devices.values.loc[1, "train (s)"] == 62.0
    assert devices.values.loc[1, "speedup vs CPU"] == pytest.approx(1149 / 62)
    assert [n for n in devices.notes if "‡" in n] == [
        "‡ Shared its GPU with other runs; runs on that GPU on average over the run's life "
        "(time-weighted, itself included): ResNet-18, FashionMNIST, GPU: 1.50. Its train time is "
        "its own synchronised train time, not the group's wall time divided by the runs."
    ]
    others = [s.table for s in report.sections if s.exp.slug != "devices"]
    assert not [cell for t in others for cell in t.cells.to_numpy().ravel() if "‡" in str(cell)]
    assert not [n for t in others for n in t.notes if "‡" in n]
    # How the GPU runs stepped is part of the stated protocol; CPU-only tables do not say it.
    assert "GPU steps: captured in CUDA graphs" in " ".join(devices.notes)
    assert not [n for t in others for n in t.notes if "GPU steps" in n]


def test_a_result_stored_before_the_mean_existed_still_says_it_shared_its_gpu(
    tmp_path: Path,
) -> None:
    sharing = {"resnet50": {"runs_at_once": 3, "runs_on_same_gpu": 3}}
    with Store(build_synthetic_store(tmp_path / "old.db", gpu=True, gpu_sharing=sharing)) as store:
        devices = table(build_report(store, STUDY, plots=False), "devices")
    assert devices.cells.loc[3, "train (s)"] == "100.00‡"
    (note,) = [n for n in devices.notes if "‡" in n]
    assert "ResNet-50, FashionMNIST, GPU: up to 3 at once." in note


# --- headline -----------------------------------------------------------------------------------


def test_best_per_dataset_comes_from_q1a_with_the_published_best_beside_it(report) -> None:
    from scipy import stats

    (best,) = insights(report, "best")  # the devices (Q2) experiment has no say here
    assert best.data["dataset"] == "mnist" and best.data["experiment"] == "grid_mnist"
    assert best.data["accuracy"] == pytest.approx(98.9)
    assert best.data["configs"] == 6  # 8 configs, 1 not run and 1 failed: never counted
    assert best.data["published"] == published.best("mnist")[1].accuracy
    assert set(best.runs) == {
        r.key
        for r in _runs(report)
        if r.model == "resnet50" and r.batch_size == 16 and r.optimizer == "sgd"
    }
    p = stats.ttest_ind([98.8, 99.0], [98.0, 98.4], equal_var=False).pvalue
    assert f"p = {p:.3f}" in best.text


def _runs(report):
    return list(report.runs.itertuples())


def test_best_svm_per_dataset_with_the_published_best(report) -> None:
    svms = insights(report, "svm")
    assert [(i.data["dataset"], i.data["accuracy"], i.data["configs"]) for i in svms] == [
        ("mnist", 97.61, 2),
        ("fashion-mnist", 89.89, 2),
    ]
    assert [i.data["published"] for i in svms] == [
        max(p.accuracy for k, p in published.SVM.items() if k.dataset == d)
        for d in ("mnist", "fashion-mnist")
    ]


def test_no_gpu_run_says_the_speedup_is_not_measured_and_why(report) -> None:
    (speedup,) = insights(report, "speedup")
    assert speedup.data["speedups"] == {} and SKIP_REASON in speedup.text
    assert set(speedup.runs) == {r.key for r in _runs(report) if r.state == "skipped"}


def test_same_section_titles_with_or_without_a_study_file(store_path: Path) -> None:
    with Store(store_path) as store:
        described = build_report(
            store, STUDY, descriptions={"grid_mnist": "Q1(a) MNIST grid"}, plots=False
        )
        plain = build_report(store, plots=False)
    assert [s.table.title for s in described.sections] == [s.table.title for s in plain.sections]
    assert described.sections[0].exp.description == "Q1(a) MNIST grid"


# --- plots and files ----------------------------------------------------------------------------


def test_plots_are_pngs(report) -> None:
    assert [plot.slug for plot in report.plots] == [
        "grid_mnist-heatmap", "grid_mnist-time", "grid_mnist-models", "grid_mnist-curves",
        "svm-heatmap", "devices-devices", "devices-models", "devices-curves",
        "confusion-mnist-torch", "confusion-mnist-svm",
        "confusion-fashion-mnist-torch", "confusion-fashion-mnist-svm",
    ]  # fmt: skip
    for plot in report.plots:
        assert plot.png.startswith(b"\x89PNG\r\n\x1a\n") and len(plot.png) > 5000


def test_no_training_curves_when_every_run_has_one_epoch(tmp_path: Path) -> None:
    spec = RunSpec(dataset="mnist", model="resnet18", epochs=1, threads=1, device="cpu")
    with Store(tmp_path / "one.db") as store:
        store.register("one", "e", [spec, spec.replace(lr=1e-4)])
        for s, accuracy in ((spec, 97.0), (spec.replace(lr=1e-4), 96.0)):
            result = torch_result(s, accuracy, 10.0)
            result.history = result.history[:1]
            _finish(store, s, result)
        report = build_report(store, "one")
    assert not [p for p in report.plots if p.slug.endswith("-curves")]


def test_written_files(report, tmp_path: Path) -> None:
    written = write_report(report, tmp_path / "out")
    assert {"report.md", "report.html", "runs.csv", "runs.json", "grid_mnist-heatmap.png"} <= {
        p.name for p in written
    }
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| 16 | SGD | 0.001 | 98.20 ± 0.28 | 99.20 | -1.00† |" in markdown
    assert "![grid_mnist: accuracy heatmap](grid_mnist-heatmap.png)" in markdown
    for plot in report.plots:
        assert (tmp_path / "out" / f"{plot.slug}.png").read_bytes() == plot.png
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report.plots)
    assert "http://" not in html and "https://" not in html  # nothing to fetch


def test_csv_and_json_exports_are_flat_one_row_per_run(
    report, tmp_path: Path, store_path: Path
) -> None:
    import pandas

    write_report(report, tmp_path, ["csv", "json"])
    with open(tmp_path / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = json.loads((tmp_path / "runs.json").read_text())
    with Store(store_path) as store:
        keys = load_runs(store, STUDY)["key"].tolist()
    assert len(rows) == len(records) == len(set(keys)) == 24
    assert all(not isinstance(v, (dict, list)) for record in records for v in record.values())
    first = records[0]
    assert (first["experiment"], first["status"] if "status" in first else first["state"]) == (
        "grid_mnist",
        "ok",
    )
    assert (
        first["model"],
        first["batch_size"],
        first["test_accuracy"],
        first["train_seconds"],
    ) == ("resnet18", 16, 98.0, 100.0)
    assert first["kernel"] is None and rows[0]["kernel"] == ""  # SVM fields left empty
    assert "model_path" in first and "model_path" in rows[0]
    failed = [r for r in records if r["state"] == "failed"]
    assert len(failed) == 2 and failed[0]["reason"] == "RuntimeError: out of memory"
    assert [r["reason"] for r in records if r["state"] == "skipped"] == [SKIP_REASON] * 2
    svm = next(r for r in records if r["model"] == "svm")
    assert svm["lr"] is None and svm["kernel"] == "poly" and svm["backend"] == "sklearn 1.5.0"
    assert (
        pandas.read_csv(tmp_path / "runs.csv").shape[0]
        == pandas.read_json(tmp_path / "runs.json").shape[0]
        == 24
    )


def test_the_html_links_the_best_models(tmp_path: Path) -> None:
    spec = RunSpec(dataset="mnist", model="resnet18", epochs=2, threads=1, device="cpu")
    model = tmp_path / "models" / f"{spec.key()}.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    with Store(tmp_path / "m.db") as store:
        store.register("m", "e", [spec, spec.replace(lr=1e-4)])
        _finish(store, spec, torch_result(spec, 97.0, 10.0, model_path=str(model)))
        _finish(store, spec.replace(lr=1e-4), torch_result(spec.replace(lr=1e-4), 96.0, 10.0))
        report = build_report(store, "m", plots=False)
    assert [path for _, path in report.best_models] == [str(model)]
    write_report(report, tmp_path / "out", ["html", "csv"])
    assert 'href="../models/' in (tmp_path / "out" / "report.html").read_text()
    assert str(model) in (tmp_path / "out" / "runs.csv").read_text()


def test_published_protocol_runs_are_compared_without_a_dagger(tmp_path: Path) -> None:
    exact = {"split": "assignment", "image_size": 224, "channels": 3, "threads": 1}
    net = RunSpec(
        dataset="mnist",
        model="resnet18",
        batch_size=16,
        optimizer="sgd",
        lr=1e-3,
        epochs=5,
        device="cuda",
        **exact,
    )
    svm = RunSpec(
        dataset="mnist", model="svm", kernel="poly", C=10.0, split="assignment", threads=1
    )
    with Store(tmp_path / "pub.db") as store:
        store.register("pub", "grid", [net])
        store.register("pub", "svm", [svm])
        result = torch_result(net, 99.35, 600.0)
        result.protocol, result.precision = (
            {"split": "assignment", "sizes": {"train": 49000, "val": 7000, "test": 14000}},
            "fp16",
        )
        _finish(store, net, result)
        _finish(
            store,
            svm,
            RunResult(
                spec=svm.to_dict(),
                test_accuracy=97.50,
                train_seconds=250.0,
                environment=_environment(CPU),
            ),
        )
        report = build_report(store, "pub", plots=False)
    grid = table(report, "grid")
    theirs = published.GRID[("mnist", "resnet18", 16, "sgd", 1e-3)].accuracy
    assert grid.cells.loc[
        0, "ResNet-18 Δ"
    ] == f"{99.35 - theirs:+.2f}" and "Not like for like" not in " ".join(grid.notes)
    assert (
        table(report, "svm").cells.loc[0, "Δ"]
        == f"{97.50 - published.SVM[('mnist', 'poly')].accuracy:+.2f}†"
    )  # train times: other hardware


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
        one = build_report(store, "a", plots=False)
        both = build_report(store, plots=False)
    assert [s.exp.slug for s in one.sections] == ["grid-mnist", "grid-fashion-mnist"]
    assert (
        table(one, "grid-fashion-mnist").title
        == "grid-fashion-mnist: ResNet-18 test accuracy by batch size × optimizer × lr (FashionMNIST)"
    )
    assert [r[:4] for r in table(one, "grid-fashion-mnist").cells.values.tolist()] == [
        ["16", "SGD", "0.001", "92.00"],
        ["16", "SGD", "0.0001", "93.00"],
    ]
    assert [s.exp.slug for s in both.sections] == ["a-grid-mnist", "a-grid-fashion-mnist", "b-grid"]
    assert len(both.runs) == 4  # the run both studies asked for is one run


# --- a run of an engine the report does not know ------------------------------------------------


def test_every_result_field_is_a_column_or_built_otherwise() -> None:
    """RESULT_FIELDS derives from RunResult: a new field is a column unless BUILT_OTHERWISE
    says what the frame makes of it, and no name there is stale."""
    names = {f.name for f in dataclasses.fields(RunResult)}
    assert set(BUILT_OTHERWISE) <= names and set(LAST) <= names
    assert set(RESULT_FIELDS) == names - set(BUILT_OTHERWISE)
    assert len(RESULT_FIELDS) == len(set(RESULT_FIELDS)) and RESULT_FIELDS[-len(LAST) :] == [*LAST]


def test_names_the_report_does_not_know_are_written_as_they_are() -> None:
    assert (name("logreg"), name("kmnist"), name("resnet18")) == ("logreg", "kmnist", "ResNet-18")
    assert label({"model": "logreg", "dataset": "kmnist", "lr": 0.1}, ["lr"]) == (
        "logreg, kmnist, lr 0.1"
    )


def _logreg_store(path: Path, specs: list[RunSpec], accuracies: tuple[float, ...]) -> Path:
    with Store(path) as store:
        store.register("new", "linear", specs)
        for spec, accuracy in zip(specs, accuracies, strict=True):
            result = RunResult(
                spec=spec.to_dict(),
                test_accuracy=accuracy,
                train_seconds=3.0,
                device="cpu",
                confusion_matrix=_confusion(accuracy),
                environment=_environment(CPU),
            )
            _finish(store, spec, result)
    return path


def _assert_renders(path: Path, out: Path, slugs: list[str]) -> None:
    """Every format is written, with plots; each dataset's table and the CSV and JSON rows hold
    the logreg runs' accuracies (92.5 %, then 81 %)."""
    with Store(path) as store:
        report = build_report(store, "new")
    assert {"report.md", "report.html", "runs.csv", "runs.json"} <= {
        p.name for p in write_report(report, out)
    }
    assert [s.exp.slug for s in report.sections] == slugs
    first = table(report, slugs[0])
    assert first.cells.loc[0, "logreg %"] == "92.50"
    assert not [n for s in report.sections for n in s.table.notes if "None" in n]
    with (out / "runs.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["model"], r["test_accuracy"]) for r in rows] == [
        ("logreg", "92.5"),
        ("logreg", "81.0"),
    ][: len(slugs)]
    assert "engine" not in rows[0]  # what the report branches on, not a column
    exported = json.loads((out / "runs.json").read_text())
    assert [r["model"] for r in exported] == ["logreg"] * len(slugs)


def test_a_third_engines_runs_render_in_the_tables_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model of a third engine, on a dataset the published study has and on one it lacks:
    its runs reach the tables, CSV and JSON. The engine is declared as engines are: a line in
    specfields.ENGINES."""
    monkeypatch.setitem(specfields.ENGINES, "logreg", ("logreg",))
    common = {"model": "logreg", "seed": 0, "threads": 2}
    specs = [RunSpec._unchecked({**common, "dataset": d}) for d in ("mnist", "kmnist")]
    path = _logreg_store(tmp_path / "logreg.db", specs, (92.5, 81.0))
    _assert_renders(path, tmp_path / "out", ["linear-mnist", "linear-kmnist"])


def test_a_run_of_a_model_this_version_does_not_know_renders(tmp_path: Path) -> None:
    """A newer mnistbench stored a 'logreg' run: its spec names a model no engine here trains."""
    spec = RunSpec(dataset="mnist", model="resnet18", epochs=2, threads=2, device="cpu")
    path = _logreg_store(tmp_path / "newer.db", [spec], (92.5,))
    stored = json.dumps({"dataset": "mnist", "model": "logreg", "seed": 0, "threads": 2})
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE runs SET spec = ? WHERE key = ?", (stored, spec.key()))
    connection.close()
    _assert_renders(path, tmp_path / "out", ["linear"])
