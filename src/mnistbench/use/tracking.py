"""Runs from the results store into MLflow: one MLflow experiment per study, one MLflow run per
mnistbench run that has a result (done or failed; a skipped or pending run measured nothing).

An MLflow run holds: params = the run's spec; metrics = the final results (accuracies, times,
FLOPs, memory) and the per-epoch history as steps; tags = study, experiment, run key, status,
device, back-end, git commit, and a one-line description; artifacts = the result JSON, the
per-class accuracy table and the confusion-matrix plot. A run that still has its model logs it
with MLflow's onnx flavour, as a logged model of the run (the UI's "Logged models"), which
`mlflow.pyfunc.load_model` runs; an SVM that ONNX cannot hold logs its `.skops` file instead.

Exporting again creates no duplicate: the tag `mnistbench.run_key` identifies a run, and
`mnistbench.fingerprint` (a hash of the stored result) tells whether it changed. A changed run's
MLflow run is replaced (deleted, then logged afresh), because MLflow appends metric values and
refuses to change a param, so an in-place update would leave the old numbers in its history;
its logged model goes with it. mlflow is imported by the functions that need it: it is an
optional extra and slow to import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistbench.errors import RunFailure, UserError, require
from mnistbench.specfields import by_hand_fields
from mnistbench.study.store import RunRecord, Store
from mnistbench.use.selection import existing_model
from mnistbench.use.tracking_content import (
    KEY_TAG,
    class_table,
    confusion_figure,
    description,
    history_metrics,
    model_name,
    result_metrics,
    signature,
    tags,
)
from mnistbench.use.tracking_store import artifact_root, check_uri

DEFAULT_URI = "sqlite:///results/mlflow.db"
MLFLOW_EXTRA = "pip install 'mnistbench[mlflow]'"
FINGERPRINT_TAG = "mnistbench.fingerprint"
NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI
CLASS_TABLE = "per_class_accuracy.json"
EXPORTED = {"done": "FINISHED", "failed": "FAILED", "pruned": "KILLED"}
"""The store statuses exported, and the MLflow status each gets (a search's pruned trial: a
run stopped early)."""
Log = Callable[[str], None]


def _silent(message: str) -> None:
    """The default Log: nothing said (the study driver's live logging)."""


@dataclass
class Exported:
    """What one export did, run by run."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    """Run key -> why it was not exported (no result yet, skipped)."""
    notes: list[str] = field(default_factory=list)
    """Artifacts that could not be logged, and why."""
    experiments: dict[str, str] = field(default_factory=dict)
    """Study -> MLflow experiment id."""


def fingerprint(record: RunRecord, experiment: str) -> str:
    """A hash of what the store says of this run: a different one means update. Not whether
    its model is still there: a model that keep_models deletes later stays logged in MLflow."""
    result = record.result.to_dict() if record.result else {}
    result.pop("model_path", None)  # cleared when keep_models deletes the model
    payload = {"status": record.status, "error": record.error, "experiment": experiment,
               "result": result}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class Tracker:
    """An MLflow tracking store, as mnistbench writes to it."""

    def __init__(self, uri: str, data_root: Path | None = None, log: Log = _silent) -> None:
        """data_root: where the datasets are, for a first-format model file (saved.py); `log`
        hears of the store being opened and of each run exported (the first export of a
        ResNet's model takes seconds, the first opening of a SQLite store too)."""
        check_uri(uri)
        log(f"MLflow tracking store {uri}: opening it")
        self.log = log
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # not minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # Not a "View run" line per run logged to a server: the command names the pages once.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        tracking = require("mlflow.tracking", MLFLOW_EXTRA)
        self.uri = uri
        self.client = tracking.MlflowClient(tracking_uri=uri)
        self.data_root = data_root
        self._experiments: dict[str, str] = {}
        with _mlflow_errors(f"MLflow tracking store {uri}"):
            self.client.search_experiments(max_results=1)  # opened (made) now, not mid-export

    def experiment_id(self, study: str) -> str:
        """The MLflow experiment of a study (named after it), created on first use."""
        if study not in self._experiments:
            with _mlflow_errors(f"MLflow experiment {study!r} at {self.uri}"):
                found = self.client.get_experiment_by_name(study)
                if found is not None and found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
                self._experiments[study] = (
                    found.experiment_id
                    if found is not None
                    else self.client.create_experiment(
                        study,
                        artifact_location=_experiment_artifacts(self.uri, study),
                        tags={"mnistbench.study": study},
                    )
                )
        return self._experiments[study]

    def runs_by_key(self, experiment_id: str) -> dict[str, Any]:
        """The experiment's active MLflow runs that mnistbench logged, by run key."""
        with _mlflow_errors(f"the runs of MLflow experiment {experiment_id} at {self.uri}"):
            runs = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{KEY_TAG}` != ''", max_results=50_000
            )
        return {run.data.tags[KEY_TAG]: run for run in runs}

    def export(self, store: Store, study: str, done: Exported | None = None) -> Exported:
        """Every run of `study` in the store that has a result, each said as it starts and ends."""
        done, log = done or Exported(), self.log
        experiment_id = self.experiment_id(study)
        done.experiments[study] = experiment_id
        existing = self.runs_by_key(experiment_id)
        records = store.runs(study)
        for index, record in enumerate(records, 1):
            label = f"[{index}/{len(records)}] {record.spec.label()}"
            if record.status not in EXPORTED:
                done.left_out[record.key] = f"{record.status}: nothing measured"
                log(f"{label}: left out ({record.status}: nothing measured)")
                continue
            experiment = next(e for s, e in store.memberships(record.key) if s == study)
            model = existing_model(record, store.path)
            old, started = existing.get(record.key), time.perf_counter()
            if old is None or old.data.tags.get(FINGERPRINT_TAG) != fingerprint(record, experiment):
                log(f"{label} ..." + (" (and its model)" if model else ""))
            outcome = self.export_run(record, study, experiment, model, old, done)
            getattr(done, outcome).append(record.key)
            log(f"{label}: {outcome}" + (f" in {time.perf_counter() - started:.1f} s"
                                         if outcome != "unchanged" else ""))  # fmt: skip
        return done

    def export_run(
        self,
        record: RunRecord,
        study: str,
        experiment: str,
        model: Path | None,
        old: Any,
        done: Exported,
    ) -> str:
        """Log one run ('created'), or replace its changed MLflow run ('updated'), or leave it
        ('unchanged'). A run that fails half-way is deleted: nothing half-written stays."""
        stamp = fingerprint(record, experiment)
        if old is not None and old.data.tags.get(FINGERPRINT_TAG) == stamp:
            return "unchanged"
        experiment_id = self.experiment_id(study)
        with _mlflow_errors(f"logging run {record.key} to {self.uri}"):
            run = self.client.create_run(
                experiment_id,
                start_time=_millis(record.started_at or record.created_at),
                tags=tags(record, study, experiment) | {NOTE_TAG: description(record)},
                run_name=record.spec.label(),
            )
            try:
                complete = self._log_content(run.info.run_id, record, model, done)
                # Set last: a run cut short, or whose model could not be logged, has none (or
                # 'incomplete'), so the next export logs it again.
                self.client.set_tag(
                    run.info.run_id, FINGERPRINT_TAG, stamp if complete else "incomplete"
                )
                self.client.set_terminated(
                    run.info.run_id,
                    EXPORTED[record.status],
                    end_time=_millis(record.finished_at or time.time()),
                )
            except BaseException:
                self._delete_run(experiment_id, run.info.run_id)
                raise
            if old is not None:
                self._delete_run(experiment_id, old.info.run_id)
        return "created" if old is None else "updated"

    def _delete_run(self, experiment_id: str, run_id: str) -> None:
        """A run and the models logged from it (which MLflow keeps when their run goes)."""
        for logged in self.client.search_logged_models(
            [experiment_id], filter_string=f"source_run_id = '{run_id}'"
        ):
            self.client.delete_logged_model(logged.model_id)
        self.client.delete_run(run_id)

    def _log_content(
        self, run_id: str, record: RunRecord, model: Path | None, done: Exported
    ) -> bool:
        """Params, metrics and artifacts; False when the model could not be logged."""
        entities = require("mlflow.entities", MLFLOW_EXTRA)
        at = _millis(record.finished_at or time.time())
        params = [
            entities.Param(k, _param(getattr(record.spec, k))) for k in by_hand_fields(record.spec)
        ]
        metrics = [entities.Metric(k, v, at, 0) for k, v in result_metrics(record.result).items()]
        for step, values in history_metrics(record.result):
            metrics += [entities.Metric(k, v, at, step) for k, v in values.items()]
        for start in range(0, max(len(metrics), 1), 1000):  # log_batch takes 1,000 at most
            self.client.log_batch(
                run_id, metrics=metrics[start : start + 1000], params=params if not start else []
            )
        if record.result is None:
            return True
        self.client.log_text(run_id, record.result.to_json(), "result.json")
        if (table := class_table(record)) is not None:
            self.client.log_table(run_id, table, CLASS_TABLE)
        if record.result.confusion_matrix:
            self.client.log_figure(run_id, confusion_figure(record), "confusion_matrix.png")
        return self._log_model(run_id, record, model, done) if model else True

    def _log_model(self, run_id: str, record: RunRecord, path: Path, done: Exported) -> bool:
        """The model with MLflow's onnx flavour (after the metrics: the logged model shows the
        run's); an SVM's `.skops` file when ONNX cannot hold it; nothing, said in the notes,
        when the model cannot be read or exported here."""
        from mnistbench.data.load import load_dataset
        from mnistbench.use.onnx_export import ExportError, export_onnx
        from mnistbench.use.saved import load_model

        with tempfile.TemporaryDirectory() as folder:
            try:
                model = load_model(path, lambda name: load_dataset(name, self.data_root))
                onnx = export_onnx(model, Path(folder) / f"{record.key}.onnx")
            except ExportError as exc:
                self.client.log_artifact(run_id, str(path), "model")
                done.notes.append(f"{record.key}: logged {path.name} ({exc})")
                return True
            except (UserError, RunFailure) as exc:
                done.notes.append(f"{record.key}: model not logged: {exc}")
                return False
            self._log_onnx(run_id, record, onnx)
        return True

    def _log_onnx(self, run_id: str, record: RunRecord, path: Path) -> None:
        """The ONNX file as a logged model of the run, with its signature."""
        import mlflow

        onnx = require("onnx")
        graph = onnx.load(str(path))
        # log_model writes where the global tracking URI and the active run say (the run
        # places the model in its experiment); the run is ended again, and terminated after.
        with _tracking_uri(self.uri), mlflow.start_run(run_id=run_id):
            mlflow.onnx.log_model(
                graph, name=model_name(record), signature=signature(graph),
                # Given, not inferred: inferring loads the model in a subprocess, seconds.
                pip_requirements=mlflow.onnx.get_default_pip_requirements(),
                save_as_external_data=False, tags={KEY_TAG: record.key},
            )  # fmt: skip


def _experiment_artifacts(uri: str, study: str) -> str | None:
    root = artifact_root(uri)
    return f"{root}/{study}" if root else None


def _param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's own errors (a store that refuses, a server gone away) as a RunFailure."""
    exceptions = require("mlflow.exceptions", MLFLOW_EXTRA)
    try:
        yield
    except exceptions.MlflowException as exc:
        raise RunFailure(f"{what}: {exc.message}") from exc


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI (and its environment variable, which MLflow sets with it)
    pointed at `uri` for a while, as they were after."""
    import mlflow

    before, variable = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
