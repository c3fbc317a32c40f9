"""MLflow export into a real tracking store in tmp_path, read back through MlflowClient: one
experiment per study, one run per stored run with a result, params, metric histories, tags and
artifacts; exporting again duplicates nothing and a changed result replaces its run."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from mnistbench.cli import main
from mnistbench.config import RunSpec
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.store import Store
from mnistbench.use.tracking import KEY_TAG, Tracker, TrackingError

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
    assert adam.data.params.keys() == SPECS["adam"].to_dict().keys()
    assert adam.data.metrics["test_accuracy"] == 95.5
    assert adam.data.metrics["class_accuracy/3"] == 100.0
    assert adam.data.tags | {
        "mnistbench.study": "s", "mnistbench.experiment": "grid", "mnistbench.status": "done",
        "mnistbench.device": "cpu", "mnistbench.backend": "torch",
        "mnistbench.git_commit": "0123abc", "mlflow.runName": SPECS["adam"].label(),
    } == adam.data.tags  # fmt: skip
    assert adam.info.status == "FINISHED"
    failed = runs[SPECS["failed"].key()]
    assert failed.info.status == "FAILED" and "diverged" in failed.data.tags["mnistbench.error"]
    assert runs[SPECS["svm"].key()].data.tags["mnistbench.backend"] == "sklearn 1.9"


def test_the_epoch_history_is_logged_as_steps(exported) -> None:
    _, _, _, client = exported
    run_id = _runs(client, "s")[SPECS["sgd"].key()].info.run_id
    loss = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in loss] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    held_out = client.get_metric_history(run_id, "epoch_test_accuracy")
    assert [m.value for m in held_out] == [61.0, 62.0, 63.0]


def test_artifacts_are_the_result_json_and_the_confusion_matrix(exported, tmp_path) -> None:
    store, _, _, client = exported
    run_id = _runs(client, "s")[SPECS["adam"].key()].info.run_id
    assert {a.path for a in client.list_artifacts(run_id)} == {
        "result.json",
        "confusion_matrix.png",
    }
    local = Path(client.download_artifacts(run_id, "result.json", str(tmp_path)))
    assert json.loads(local.read_text()) == store.get(SPECS["adam"].key()).result.to_dict()
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
    with pytest.raises(TrackingError, match="no folder for the SQLite file"):
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


def test_the_cli_exports_a_study_file_and_names_the_ui_command(tmp_path, capsys) -> None:
    make_store(tmp_path / "store.db").close()
    study_file = tmp_path / "s.toml"
    study_file.write_text('[study]\nname = "s"\n[experiments.grid]\nbase = {}\n')
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["track", "mlflow", "--study", str(study_file), "--store", str(tmp_path / "store.db"),
            "--tracking-uri", uri]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 run(s) created" in out and f"mlflow ui --backend-store-uri {uri}" in out
    assert main(args) == 0 and "0 run(s) created, 0 updated, 4 unchanged" in capsys.readouterr().out


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


def test_a_kept_model_is_logged_as_onnx(tmp_path) -> None:
    from tests.saved_models import synthetic_root, train

    _, data = synthetic_root(tmp_path / "data")
    store = Store(tmp_path / "results" / "store.db")
    for fields in ({}, {"model": "svm"}):
        spec, finished = train(data, tmp_path / "results" / "checkpoints", **fields)
        store.register("s", "e", [spec])
        assert store.claim(spec.key()) and store.finish(spec.key(), finished)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    done = Tracker(uri).export(store, "s")
    client = MlflowClient(uri)
    for key, run in _runs(client, "s").items():
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == [
            f"model/{key}.onnx"
        ]
    assert done.notes == []
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
