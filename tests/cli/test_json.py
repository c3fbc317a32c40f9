"""`--json OUT` of `study status`, `data info` and `export`: the numbers each prints, as JSON,
checked against where they come from (the store, the registry and the files, the ONNX file);
`--json -` puts only the JSON on stdout, `--json FILE` writes it and keeps the table."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mnistbench.cli import main
from mnistbench.cli.console import human_size
from mnistbench.data.registry import DATASETS, FASHION_MNIST, MNIST
from mnistbench.data.storage import raw_dir
from mnistbench.study.store import Store
from tests.conftest import synthetic_files, write_files
from tests.report.test_report import build_synthetic_store

# stdout buffered, as a user's Python has it (a test runner may set PYTHONUNBUFFERED): a closed
# pipe met at exit's flush, not in main, would say "Exception ignored ..." and exit 120.
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNISTBENCH_DATA", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("json") / "results.db")


# --- study status -------------------------------------------------------------------------------


def _expected_status(path: Path) -> list[dict]:
    """Per experiment, from the store itself: its counts, and the mean wall time of its done
    runs times the runs left (None when nothing is left or nothing is done)."""
    expected = []
    with Store(path) as store:
        for (study, experiment), counts in store.counts().items():
            records = store.runs(study, experiment)
            walls = [r.finished_at - r.started_at for r in records
                     if r.status == "done" and r.finished_at and r.started_at]  # fmt: skip
            left = sum(r.status in ("pending", "running") for r in records)
            eta = sum(walls) / len(walls) * left if walls and left else None
            expected.append(
                {"study": study, "experiment": experiment, "counts": counts, "eta_seconds": eta}
            )
    return expected


def test_status_json_on_stdout_is_the_stores_counts_and_eta(store_path: Path, capsys) -> None:
    assert main(["study", "status", "--store", str(store_path), "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)  # nothing else on stdout
    expected = _expected_status(store_path)
    assert payload == {"store": str(store_path), "experiments": expected}
    assert any(e["eta_seconds"] for e in expected), "the store has an experiment with an ETA"
    with Store(store_path) as store:
        for entry in payload["experiments"]:
            runs = store.runs(entry["study"], entry["experiment"])
            assert sum(entry["counts"].values()) == len(runs)
            assert entry["counts"]["done"] == sum(r.status == "done" for r in runs)


def test_status_json_to_a_file_keeps_the_table(store_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "status.json"
    assert main(["study", "status", "--store", str(store_path), "--json", str(out)]) == 0
    assert "results store" in capsys.readouterr().out
    assert json.loads(out.read_text())["experiments"] == _expected_status(store_path)


def test_status_json_of_a_study_file_is_its_forecast(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.stub_probes import TWO_EXPERIMENTS, stub_probes

    stub_probes(monkeypatch)  # 24 s a run here, 5 s start-up
    study = tmp_path / "s.toml"
    study.write_text(TWO_EXPERIMENTS)
    store = tmp_path / "none.db"
    assert main(["study", "status", str(study), "--store", str(store), "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["study"], payload["store"]) == ("s", str(store))
    assert payload["overhead_seconds"] == pytest.approx(5.0)
    grid, gpu = payload["experiments"]
    assert grid["experiment"] == "grid" and gpu["experiment"] == "gpu"
    assert grid["counts"] == {"done": 0, "failed": 0, "skipped": 0, "running": 0, "pending": 2,
                              "skip here": 0}  # fmt: skip
    assert grid["seconds"] == pytest.approx(48.0) and grid["unknown"] == 0
    assert human_size(grid["disk_bytes"]) == "44.7 MB" and grid["skips"] == {}
    assert gpu["counts"]["pending"] == 1 and gpu["counts"]["skip here"] == 1
    assert gpu["seconds"] == 0 and gpu["disk_bytes"] == 0
    ((reason, count),) = gpu["skips"].items()
    assert count == 1 and reason.startswith("device 'cuda:99' needs")
    total = payload["total"]
    assert total["seconds"] == pytest.approx(53.0) and total["counts"]["pending"] == 3
    assert total["skips"] == gpu["skips"] and total["disk_bytes"] == grid["disk_bytes"]
    assert not store.exists(), "status writes no store"


# --- data info ----------------------------------------------------------------------------------


def test_data_info_json_is_the_files_on_disk_and_the_registry(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MNIST's four files present, one of them pinned to its own digest (verified), the other
    # three wrong; Fashion-MNIST missing.
    files = synthetic_files()
    root = tmp_path / "root"
    write_files(raw_dir(root, MNIST), files)
    good = "train-images-idx3-ubyte"
    monkeypatch.setitem(MNIST.sha256, good, hashlib.sha256(files[good]).hexdigest())
    assert main(["data", "info", "--root", str(root), "--json", "-"]) == 1
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert "mnistbench data fetch" in captured.err
    assert payload["root"] == str(root.resolve()) and payload["all_verified"] is False
    assert [d["name"] for d in payload["datasets"]] == list(DATASETS)
    by_name = {d["name"]: d for d in payload["datasets"]}
    for info in (MNIST, FASHION_MNIST):
        entry = by_name[info.name]
        assert entry["path"] == str(raw_dir(root, info).resolve())
        assert entry["classes"] == list(info.classes) and entry["examples"] == info.sizes
        assert [f["file"] for f in entry["files"]] == list(info.sha256)
    mnist = by_name["mnist"]
    assert mnist["verified"] is False
    for file in mnist["files"]:
        path = Path(file["path"])
        assert path == raw_dir(root, MNIST) / file["file"] and file["present"] is True
        assert file["bytes"] == path.stat().st_size
        assert file["verified"] is (file["file"] == good)
        assert (file["problem"] is None) is (file["file"] == good)
    assert mnist["bytes"] == sum(p.stat().st_size for p in raw_dir(root, MNIST).iterdir()
                                 if p.name in files)  # fmt: skip
    fashion = by_name["fashion-mnist"]
    assert fashion["bytes"] == 0 and fashion["verified"] is False
    assert all(not f["present"] and f["bytes"] is None for f in fashion["files"])


def test_data_info_json_to_a_file_keeps_the_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "info.json"
    assert main(["data", "info", "--root", str(tmp_path), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "train-images-idx3-ubyte" in printed and "mnistbench data fetch" in printed
    payload = json.loads(out.read_text())
    assert payload["root"] == str(tmp_path.resolve())
    assert not any(f["present"] for d in payload["datasets"] for f in d["files"])


# --- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str, Any]:
    """A store with one finished ResNet run whose final model is kept, the data root and the
    data (synthetic: its files are not MNIST's, `load_dataset` of 'mnist' refuses them)."""
    from tests.saved_models import synthetic_root, train

    folder = tmp_path_factory.mktemp("json-export")
    root, data = synthetic_root(folder / "data")
    store_path = folder / "results" / "store.db"
    spec, result = train(data, folder / "results" / "checkpoints")
    with Store(store_path) as store:
        store.register("s", "resnet", [spec])
        assert store.claim(spec.key()) and store.finish(spec.key(), result)
    return root, store_path, spec.key(), data


def test_export_json_is_the_file_written_and_what_onnxruntime_gives(
    trained, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistbench.use.onnx_export import compare
    from mnistbench.use.saved import load_model

    root, store_path, key, data = trained
    # The run's test images are here: the comparison is made on them.
    monkeypatch.setattr("mnistbench.data.load.load_dataset", lambda name, root=None: data)
    out = tmp_path / "m.onnx"
    code = main(["export", "--run", key[:10], "--store", str(store_path), "--root", str(root),
                 "--out", str(out), "--json", "-"])  # fmt: skip
    payload = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert code == 0 and out.is_file()
    assert payload["file"] == str(out) and payload["bytes"] == out.stat().st_size
    assert payload["format"] == "onnx" and payload["run"] == key
    with Store(store_path) as store:
        assert payload["model"] == store.get(key).result.model_path
    images = data.test_images.numpy()
    agree, diff = compare(load_model(Path(payload["model"]), lambda name: data), out, images)
    assert payload["onnxruntime"] == {
        "images": len(images), "what": "mnist test images",
        "same_class_percent": agree, "max_score_difference": diff,
    }  # fmt: skip
    assert agree == 100.0 and 0 < diff < 1e-3


def test_export_json_to_a_file_keeps_the_lines(trained, tmp_path: Path, capsys) -> None:
    root, store_path, key, _ = trained
    out, report = tmp_path / "m.onnx", tmp_path / "export.json"
    assert main(["export", "--run", key, "--store", str(store_path), "--root", str(root),
                 "--out", str(out), "--json", str(report)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    payload = json.loads(report.read_text())
    assert f"wrote {out}" in printed and "same class on 100.0 %" in printed
    assert payload["bytes"] == out.stat().st_size and payload["run"] == key


# --- where the JSON goes ------------------------------------------------------------------------


def test_json_that_cannot_be_written_is_a_usage_error_not_a_traceback(
    store_path: Path, tmp_path: Path, capsys
) -> None:
    """write_json's own guard, for the commands that do not check --json before their work."""
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["study", "status", "--store", str(store_path), "--json", "out"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: --json: out: cannot be written: Is a directory" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"], "no temporary file left"


@pytest.mark.parametrize("json_flag", ["--json -", ""])
def test_stdout_closed_early_ends_the_command_quietly(
    store_path: Path, tmp_path: Path, json_flag: str
) -> None:
    """`mnistbench study status --json - | head -c 10`, head gone before the command writes (it
    read ten bytes written first): the exit code of a command stopped by SIGPIPE, nothing on
    stderr (no traceback, no 'Exception ignored' at exit), JSON or rich's table alike."""
    command = (
        f"{{ printf 0123456789; exec {sys.executable} -m mnistbench study status --store "
        f"{store_path} {json_flag} 2>{tmp_path / 'err.txt'}; }} | head -c 10; "
        "exit ${PIPESTATUS[0]}"
    )
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=BUFFERED, timeout=120
    )
    assert (done.returncode, done.stdout) == (141, "0123456789")
    assert (tmp_path / "err.txt").read_text() == ""
