"""`mnistbench report`: the files it writes, its console summary and its usage errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnistbench.cli import main
from tests.report.test_report import STUDY, build_synthetic_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_store(tmp_path_factory.mktemp("cli") / "results.db")


@pytest.mark.slow
def test_report_writes_every_format_by_default(store_path: Path, tmp_path: Path, capsys) -> None:
    # --study FILE: the study file names the study and describes its experiments.
    study = tmp_path / "syn.toml"
    study.write_text(
        f'[study]\nname = "{STUDY}"\ndescription = "A synthetic study."\n'
        '[experiments.grid_mnist]\ndescription = "Q1(a) MNIST grid"\n'
        'base = { dataset = "mnist" }\n'
    )
    out = tmp_path / "report"
    assert (
        main(["report", "--store", str(store_path), "--study", str(study), "--out", str(out)]) == 0
    )
    names = {path.name for path in out.iterdir()}
    assert {"report.md", "report.html", "runs.csv", "runs.json"} <= names
    assert {
        "grid_mnist-heatmap.png",
        "confusion-mnist-torch.png",
        "confusion-mnist-svm.png",
    } <= names
    printed = capsys.readouterr().out
    assert "24 runs: 17 ok, 2 not run, 2 failed, 1 diverged, 2 skipped" in printed
    assert "GPU speedup: not measured here (skipped:" in printed
    assert str(out / "report.html") in printed
    markdown = (out / "report.md").read_text()
    assert "A synthetic study." in markdown
    # The same titles as without --study; the study file's description follows the title.
    title = (
        "### grid_mnist: ResNet-18 / ResNet-50 test accuracy by batch size × optimizer × lr (MNIST)"
    )
    assert f"{title}\n\nQ1(a) MNIST grid\n" in markdown
    assert "### svm: SVM accuracy and train time (MNIST, FashionMNIST)\n\n|" in markdown


def test_report_format_subset_of_the_only_study(store_path: Path, tmp_path: Path) -> None:
    assert (
        main(["report", "--store", str(store_path), "--out", str(tmp_path), "--format", "csv,json"])
        == 0
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs.csv", "runs.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "pdf"], "--format 'pdf': choose from md, html, csv, json"),
        (["--study", "nope"], "has no runs of study 'nope'; studies in it: syn"),
    ],
)
def test_usage_errors_exit_2(store_path: Path, tmp_path: Path, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--store", str(store_path), "--out", str(tmp_path), *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_store_exits_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--store", str(tmp_path / "none.db")])
    assert exited.value.code == 2
    assert "no results store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
