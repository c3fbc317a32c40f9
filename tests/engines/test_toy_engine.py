"""A new engine is one folder plus one registry line: a test-only LogisticRegression engine
(toy_engine.py) goes through `study run`, the store, `report` and `predict` with no change
anywhere else in mnistbench."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mnistbench import specfields
from mnistbench.cli import main
from mnistbench.data.load import load_dataset
from mnistbench.study.store import Store
from tests.engines import toy_engine
from tests.saved_models import save_png

STUDY = """
[study]
name = "toy"
seeds = [0, 1]

[defaults]
model = "logreg"
train_limit = 300
test_limit = 80

[experiments.logreg]
description = "a logistic regression, by an engine mnistbench did not ship with"
"""


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its folder (as the module engines.toy) and its registry line."""
    monkeypatch.setitem(sys.modules, "mnistbench.engines.toy", toy_engine)
    monkeypatch.setitem(specfields.ENGINES, "toy", ("logreg",))


def test_a_toy_engine_runs_a_study_reports_it_and_predicts(
    toy, real_data_root: Path, tmp_path: Path, capsys
) -> None:
    root, data = real_data_root, load_dataset("mnist", real_data_root)
    (tmp_path / "toy.toml").write_text(STUDY)
    store = tmp_path / "results" / "store.db"
    common = ["--store", str(store)]
    assert main(["study", "run", str(tmp_path / "toy.toml"), *common, "--root", str(root)]) == 0

    with Store(store) as opened:
        records = opened.runs()
    assert len(records) == 2 and {r.status for r in records} == {"done"}
    results = [r.result for r in records]
    assert all(r.test_accuracy > 70 and r.backend == "sklearn-logreg" for r in results)
    # The study's keep policy ('best' by default) kept the better run's model file only.
    kept = [r for r in records if r.result.model_path]
    assert len(kept) == 1 and kept[0].result.test_accuracy == max(r.test_accuracy for r in results)
    assert kept[0].result.model_path.endswith(".model.toy.pkl")

    out = tmp_path / "report"
    assert main(["report", *common, "--out", str(out), "--format", "md,csv,json"]) == 0
    rows = json.loads((out / "runs.json").read_text())
    assert sorted(row["model"] for row in rows) == ["logreg", "logreg"]
    assert sorted(row["test_accuracy"] for row in rows) == sorted(r.test_accuracy for r in results)

    images = data.test_images.numpy()[:12]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index, image in enumerate(images):
        save_png(folder / f"{index:02d}.png", image)
    key = kept[0].key
    predictions = tmp_path / "p.json"
    code = main(["predict", str(folder), "--run", key, *common, "--json", str(predictions)])
    assert code == 0, capsys.readouterr().err
    labels = [p["label"] for p in json.loads(predictions.read_text())["predictions"]]
    fitted = toy_engine.ENGINE.load_model(Path(kept[0].result.model_path)).fitted
    expected = fitted.predict(images.reshape(len(images), -1).astype(np.float32) / 255)
    assert labels == expected.tolist()


def test_without_its_registry_line_the_model_is_unknown(tmp_path: Path, capsys) -> None:
    (tmp_path / "toy.toml").write_text(STUDY)
    with pytest.raises(SystemExit) as exited:
        main(["study", "run", str(tmp_path / "toy.toml"), "--dry-run"])
    assert exited.value.code == 2
    assert "model='logreg' is invalid: choose one of resnet18, resnet50, svm" in (
        capsys.readouterr().err
    )
