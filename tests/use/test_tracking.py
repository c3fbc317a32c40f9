"""MLflow export into a real tracking store in tmp_path, read back through MlflowClient: one
experiment per study, one run per stored run with a result, params, metric histories, tags,
description, artifacts and the logged ONNX model; exporting again duplicates nothing and a
changed result replaces its run (and its model); a tracking URI or store that cannot be used
exits 2 having written nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from mnistbench.cli import main
from mnistbench.config import RunSpec
from mnistbench.pruning import TrialLink
from mnistbench.result import EpochRecord, RunResult
from mnistbench.specfields import by_hand_fields
from mnistbench.study.store import Store
from mnistbench.use.tracking import KEY_TAG, Tracker
from mnistbench.use.tracking_store import TrackingError

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SPECS = {
    "sgd": RunSpec(optimizer="sgd", epochs=3),
    "adam": RunSpec(optimizer="adam", lr=2e-3, epochs=3),
    "svm": RunSpec(model="svm", kernel="poly"),
    "failed": RunSpec(optimizer="adamw", epochs=3),
    "cuda": RunSpec(device="cuda"),
}


def result(spec: RunSpec, accuracy: float) -> RunResult:
    """A finished run's result as an engine writes it: history, confusion matrix, environment."""
    history = [
        EpochRecord(epoch=e, train_loss=1.0 / e, train_accuracy=50.0 + e, lr=0.1, train_seconds=2.0,
                    images=100, images_per_second=50.0, eval_split="test", eval_accuracy=60.0 + e)
        for e in range(1, spec.epochs + 1)
    ] if not spec.is_svm else []  # fmt: skip
    confusion = [[5 if i == j else 0 for j in range(10)] for i in range(10)]
    return RunResult(
        spec=spec.to_dict(), test_accuracy=accuracy, train_seconds=6.0, device="cpu",
        history=history, confusion_matrix=confusion, per_class_accuracy=[100.0] * 10,
        environment={"git_commit": "0123abc"}, backend="sklearn 1.9" if spec.is_svm else None,
    )  # fmt: skip


def make_store(path: Path) -> Store:
    """Study 's': grid (sgd, adam, failed), svm; study 't': devices (a skipped CUDA run)."""
    store = Store(path)
    store.register("s", "grid", [SPECS["sgd"], SPECS["adam"], SPECS["failed"]])
    store.register("s", "svm", [SPECS["svm"]])
    store.register("t", "devices", [SPECS["cuda"], SPECS["sgd"]])
    for name, accuracy in (("sgd", 91.0), ("adam", 95.5), ("svm", 93.25)):
        assert store.claim(SPECS[name].key())
        store.finish(SPECS[name].key(), result(SPECS[name], accuracy))
    assert store.claim(SPECS["failed"].key())
    store.fail(SPECS["failed"].key(), "RuntimeError: diverged", "Traceback ...")
    store.skip(SPECS["cuda"].key(), "needs CUDA")
    return store


@pytest.fixture
def exported(tmp_path):
    store = make_store(tmp_path / "results" / "store.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    done = tracker.export(store, "s")
    yield store, uri, done, MlflowClient(uri)
    store.close()


def _runs(client: MlflowClient, study: str) -> dict[str, object]:
    experiment = client.get_experiment_by_name(study)
    return {r.data.tags[KEY_TAG]: r for r in client.search_runs([experiment.experiment_id])}


def test_one_mlflow_run_per_stored_run_with_its_spec_results_and_tags(exported) -> None:
    _, _, done, client = exported
    runs = _runs(client, "s")
    assert set(runs) == {SPECS[n].key() for n in ("sgd", "adam", "svm", "failed")}
    assert sorted(done.created) == sorted(runs) and not done.updated and not done.unchanged
    adam = runs[SPECS["adam"].key()]
    assert adam.data.params["optimizer"] == "adam" and adam.data.params["lr"] == "0.002"
    assert adam.data.params.keys() == set(by_hand_fields(SPECS["adam"]))
    assert "trial" not in adam.data.params, "a search's trial link is not a setting"
    assert adam.data.metrics["test_accuracy"] == 95.5
    assert not [m for m in adam.data.metrics if "class" in m], "per class: a table, not charts"
    assert adam.data.tags["mlflow.note.content"] == (
        "ResNet-18 on MNIST, batch 32, Adam, lr 0.002, 3 epochs, seed 0: 95.50 % test "
        "accuracy, 6.0 s training on cpu"
    )
    assert adam.data.tags | {
        "mnistbench.study": "s", "mnistbench.experiment": "grid", "mnistbench.status": "done",
        "mnistbench.device": "cpu", "mnistbench.backend": "torch",
        "mnistbench.git_commit": "0123abc", "mlflow.runName": SPECS["adam"].label(),
    } == adam.data.tags  # fmt: skip
    assert adam.info.status == "FINISHED"
    failed = runs[SPECS["failed"].key()]
    assert failed.info.status == "FAILED" and "diverged" in failed.data.tags["mnistbench.error"]
    assert failed.data.tags["mlflow.note.content"].endswith(": failed (RuntimeError: diverged)")
    svm = runs[SPECS["svm"].key()]
    assert svm.data.tags["mnistbench.backend"] == "sklearn 1.9"
    assert svm.data.tags["mlflow.note.content"] == (
        "SVM (poly, C=10) on MNIST, seed 0: 93.25 % test accuracy, 6.0 s training on cpu"
    )


def test_a_pruned_trial_exports_as_a_killed_run_of_its_search(tmp_path) -> None:
    store = make_store(tmp_path / "store.db")
    link = TrialLink("sqlite:///o.db", "s.find.0123abcd", 7, "val_accuracy", "median")
    spec = SPECS["sgd"].replace(lr=0.05, trial=link.to_text())
    store.register("s", "find", [spec])
    assert store.claim(spec.key())
    pruned = result(spec, 0.0)
    pruned.status, pruned.test_accuracy, pruned.message = "pruned", None, "pruned after epoch 1"
    store.finish(spec.key(), pruned)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri).export(store, "s")
    run = _runs(MlflowClient(uri), "s")[spec.key()]
    assert run.info.status == "KILLED"
    assert run.data.tags["mnistbench.status"] == "pruned"
    assert run.data.tags["mnistbench.search"] == "s.find.0123abcd"
    assert run.data.params["lr"] == "0.05" and "trial" not in run.data.params
    store.close()


def test_the_epoch_history_is_logged_as_steps(exported) -> None:
    _, _, _, client = exported
    run_id = _runs(client, "s")[SPECS["sgd"].key()].info.run_id
    loss = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in loss] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    held_out = client.get_metric_history(run_id, "epoch_test_accuracy")
    assert [m.value for m in held_out] == [61.0, 62.0, 63.0]


def test_artifacts_are_the_result_json_the_class_table_and_the_confusion_matrix(
    exported, tmp_path
) -> None:
    store, _, _, client = exported
    run_id = _runs(client, "s")[SPECS["adam"].key()].info.run_id
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "result.json",
        "per_class_accuracy.json",
        "confusion_matrix.png",
    }
    local = Path(client.download_artifacts(run_id, "result.json", str(tmp_path)))
    assert json.loads(local.read_text()) == store.get(SPECS["adam"].key()).result.to_dict()
    table = json.loads(
        Path(
            client.download_artifacts(run_id, "per_class_accuracy.json", str(tmp_path))
        ).read_text()
    )
    assert table["columns"] == ["class", "name", "accuracy", "images", "right"]
    assert table["data"][3] == [3, "3", 100.0, 5, 5]  # MNIST's class 3: 5 images, 5 right
    assert [row[0] for row in table["data"]] == list(range(10))
    png = client.download_artifacts(run_id, "confusion_matrix.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exporting_again_changes_nothing_and_a_changed_result_replaces_its_run(exported) -> None:
    store, uri, _, client = exported
    again = Tracker(uri).export(store, "s")
    assert len(again.unchanged) == 4 and not again.created and not again.updated
    changed = result(SPECS["adam"], 97.0)
    assert store.finish(SPECS["adam"].key(), changed)  # this process still owns the claim
    third = Tracker(uri).export(store, "s")
    assert third.updated == [SPECS["adam"].key()] and len(third.unchanged) == 3
    runs = _runs(client, "s")
    assert len(runs) == 4  # replaced, not added
    adam = runs[SPECS["adam"].key()]
    assert adam.data.metrics["test_accuracy"] == 97.0
    assert len(client.get_metric_history(adam.info.run_id, "train_loss")) == 3  # no duplicates


def test_each_study_is_its_own_experiment_and_runs_without_results_are_left_out(exported) -> None:
    store, uri, _, client = exported
    done = Tracker(uri).export(store, "t")
    assert done.left_out == {SPECS["cuda"].key(): "skipped: nothing measured"}
    assert set(_runs(client, "t")) == {SPECS["sgd"].key()}  # the same run, in study t too
    assert _runs(client, "t")[SPECS["sgd"].key()].data.tags["mnistbench.experiment"] == "devices"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_uri_fails_at_once_writing_nothing(tmp_path, capsys) -> None:
    started = time.monotonic()
    with pytest.raises(TrackingError, match="cannot be reached"):
        Tracker(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TrackingError, match="the SQLite file cannot be made in"):
        Tracker(f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    (tmp_path / "a-file").unlink()
    store = make_store(tmp_path / "store.db")
    store.close()
    with pytest.raises(SystemExit) as exit_:
        main(["track", "mlflow", "--store", str(tmp_path / "store.db"),
              "--tracking-uri", f"http://127.0.0.1:{free_port()}"])  # fmt: skip
    assert exit_.value.code == 2
    assert "--tracking-uri: MLflow tracking server" in capsys.readouterr().err
    assert all(p.name.startswith("store.db") for p in tmp_path.iterdir())  # no MLflow file


def test_the_cli_exports_a_study_file_says_each_run_and_names_the_ui_command(
    tmp_path, capsys
) -> None:
    make_store(tmp_path / "store.db").close()
    study_file = tmp_path / "s.toml"
    study_file.write_text('[study]\nname = "s"\n[experiments.grid]\nbase = {}\n')
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["track", "mlflow", "--study", str(study_file), "--store", str(tmp_path / "store.db"),
            "--tracking-uri", uri]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "4 run(s) created" in captured.out
    # Progress on stderr: the store opened, then each run as it starts and ends.
    assert f"MLflow tracking store {uri}: opening it" in captured.err
    assert f"[1/4] {SPECS['sgd'].label()} ..." in captured.err
    assert f"[1/4] {SPECS['sgd'].label()}: created in " in captured.err
    assert f"[4/4] {SPECS['svm'].label()}: created in " in captured.err
    # The venv's own mlflow, which works without activating the venv, and the runs page.
    mlflow_ui = f"{Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri {uri}"
    assert f"look at them: {mlflow_ui}\n" in captured.out
    assert "  study s: http://127.0.0.1:5000/#/experiments/1/runs" in captured.out
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "0 run(s) created, 0 updated, 4 unchanged" in captured.out
    assert f"[2/4] {SPECS['adam'].label()}: unchanged" in captured.err


def test_a_tracking_server_is_named_by_its_runs_pages() -> None:
    from mnistbench.cli.track import where_to_look

    assert where_to_look("http://mlflow.lab:5000/", {"s": "3", "t": "7"}) == [
        "study s: http://mlflow.lab:5000/#/experiments/3/runs",
        "study t: http://mlflow.lab:5000/#/experiments/7/runs",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "FOLDER"], "FOLDER is a folder, not a results store"),
        (["--tracking-uri", "sqlite:///FOLDER"], "FOLDER is a folder; give a file in it"),
        (["--tracking-uri", "sqlite:///NOTES"], "NOTES is not a SQLite file"),
        (["--tracking-uri", "sqlite:///STORE"], "STORE is a SQLite file of something else"),
        (["--tracking-uri", "sqlite://m.db"], "a SQLite URI is sqlite:///relative/path.db"),
        (["--tracking-uri", "FOLDER"], "MLflow 3 keeps no runs in a folder"),
        (["--tracking-uri", "file:///tmp/mlruns"], "MLflow 3 keeps no runs in a folder"),
        (["--tracking-uri", ""], "--tracking-uri: empty: give sqlite:///PATH.db"),
        (["--tracking-uri", "sqlite:////proc/m.db"], "the SQLite file cannot be made in /proc"),
        (["--tracking-uri", "sqlite:///NOTES/m.db"], "cannot be made in"),
    ],
)
def test_a_store_or_tracking_uri_that_cannot_be_used_exits_2_writing_nothing(
    tmp_path, monkeypatch, capsys, args, message
) -> None:
    monkeypatch.chdir(tmp_path)  # the default tracking URI is under results/ here
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    make_store(tmp_path / "store.db").close()
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a database\n")
    names = {"FOLDER": "folder", "NOTES": "notes.txt", "STORE": "store.db"}

    def fill(text: str) -> str:
        for placeholder, name in names.items():
            text = text.replace(placeholder, name)
        return text

    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main(["track", "mlflow", "--store", "store.db", *map(fill, args)])
    assert exit_.value.code == 2
    assert time.monotonic() - started < 20, "said at once, not after minutes of retries"
    err = capsys.readouterr().err
    assert fill(message) in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing written"


def test_live_logging_from_the_study_driver(tmp_path) -> None:
    from mnistbench.cli.track import live_logger

    store = make_store(tmp_path / "store.db")
    uri, said = f"sqlite:///{tmp_path / 'live.db'}", []
    log_run = live_logger(uri, "s", said.append)
    log_run(store, SPECS["sgd"].key())
    log_run(store, SPECS["sgd"].key())  # logged once, however often it is called
    log_run(store, SPECS["cuda"].key())  # skipped: nothing to log
    assert set(_runs(MlflowClient(uri), "s")) == {SPECS["sgd"].key()} and said == []
    store.close()


def test_a_kept_model_is_logged_as_an_mlflow_onnx_model_of_its_run(tmp_path, monkeypatch) -> None:
    import torch

    from mnistbench.use.saved import load_model
    from tests.saved_models import synthetic_root, train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, data = synthetic_root(tmp_path / "data")
    store = Store(tmp_path / "results" / "store.db")
    trained = {}
    for fields in ({}, {"model": "svm"}):
        spec, finished = train(data, tmp_path / "results" / "checkpoints", **fields)
        store.register("s", "e", [spec])
        assert store.claim(spec.key()) and store.finish(spec.key(), finished)
        trained[spec.key()] = finished
    uri, global_uri = f"sqlite:///{tmp_path / 'm.db'}", mlflow.get_tracking_uri()
    assert Tracker(uri).export(store, "s").notes == []
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("s").experiment_id
    models = {m.source_run_id: m for m in client.search_logged_models([experiment])}
    images = data.test_images[:16].numpy()
    for key, run in _runs(client, "s").items():
        logged = models[run.info.run_id]  # the run's own logged model, in its experiment
        assert logged.tags[KEY_TAG] == key and logged.name.endswith(f"-mnist-{key[:8]}")
        assert client.list_artifacts(run.info.run_id, "model") == []  # not a second copy
        served = mlflow.pyfunc.load_model(logged.artifact_location)  # MLflow's own loader
        inputs = served.metadata.signature.inputs.inputs[0]
        assert (inputs.name, inputs.shape, str(inputs.type)) == ("images", (-1, 28, 28), "uint8")
        outputs = served.predict(images)
        labels = outputs["logits"].argmax(1) if "logits" in outputs else outputs["label"]
        saved = load_model(Path(trained[key].model_path), lambda name: data)
        assert labels.tolist() == saved.predict(torch.from_numpy(images)).tolist()
    # MLflow's global state as it was: nothing else in the process logs there by accident.
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == global_uri
    assert "MLFLOW_TRACKING_URI" not in os.environ
    # A changed result replaces the run, and the replaced run's model goes with it.
    key = next(k for k, r in trained.items() if r.model_path.endswith(".pt"))
    assert store.finish(key, dataclasses.replace(trained[key], test_accuracy=1.0))
    assert Tracker(uri).export(store, "s").updated == [key]
    after = client.search_logged_models([experiment])
    assert {m.source_run_id for m in after} == {r.info.run_id for r in _runs(client, "s").values()}
    assert len(after) == 2
    store.close()


def test_the_study_driver_calls_on_recorded_once_a_run_is_stored(tmp_path) -> None:
    from mnistbench.progress import Reporter
    from mnistbench.study.run import Heartbeat, PlannedRun, RunContext, StudyOutcome

    seen: list[tuple[str, str | None]] = []
    with Store(tmp_path / "store.db") as store:
        store.register("s", "grid", [SPECS["sgd"]])
        context = RunContext(
            store, Heartbeat(store), StudyOutcome(), Reporter(), False, None, store.path,
            study="s", on_recorded=lambda s, key: seen.append((key, s.get(key).status)),
        )  # fmt: skip
        run = PlannedRun("grid", SPECS["sgd"], "pending")
        assert context.claim(run)
        context.finish(run, result(SPECS["sgd"], 90.0), None)
    assert seen == [(SPECS["sgd"].key(), "done")]


def test_a_model_deleted_later_by_keep_models_is_no_change(exported) -> None:
    store, uri, _, _ = exported
    key = SPECS["sgd"].key()
    kept = result(SPECS["sgd"], 92.0)  # run again, and better
    kept.model_path = "results/checkpoints/gone.model.pt"
    assert store.finish(key, kept)
    assert Tracker(uri).export(store, "s").updated == [key]  # a new result: replaced once
    store.forget_model(key)  # what keep_models does to a run that is not the best any more
    assert key in Tracker(uri).export(store, "s").unchanged
