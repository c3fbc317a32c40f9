"""Runs from the results store into MLflow: one MLflow experiment per study, one MLflow run per
mnistbench run that has a result (done or failed; a skipped or pending run measured nothing).

An MLflow run holds: params = the run's spec; metrics = the final results (accuracies, times,
FLOPs, memory, per-class accuracy) and the per-epoch history as steps; tags = study, experiment,
run key, status, device, back-end, git commit; artifacts = the result JSON, the confusion-matrix
plot and the model as an ONNX file (the `.skops` file for an SVM that ONNX cannot hold), when the
run still has its model.

Exporting again creates no duplicate: the tag `mnistbench.run_key` identifies a run, and
`mnistbench.fingerprint` (a hash of the stored result) tells whether it changed. A changed run's
MLflow run is replaced (deleted, then logged afresh), because MLflow appends metric values and
refuses to change a param, so an in-place update would leave the old numbers in its history.
mlflow is imported by the functions that need it: it is an optional extra and slow to import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistbench.errors import RunFailure, UserError, require
from mnistbench.study.store import RunRecord, Store
from mnistbench.use.selection import existing_model
from mnistbench.use.tracking_content import confusion_figure, history_metrics, result_metrics

DEFAULT_URI = "sqlite:///results/mlflow.db"
MLFLOW_EXTRA = "pip install 'mnistbench[mlflow]'"
KEY_TAG = "mnistbench.run_key"
FINGERPRINT_TAG = "mnistbench.fingerprint"
EXPORTED = ("done", "failed")
REACH_SECONDS = 5.0


class TrackingError(UserError):
    """A tracking URI that cannot be used; the message says why."""

    flag = "--tracking-uri"


# The schemes of MLflow's tracking stores (a plain path is a local folder: scheme "").
TRACKING_SCHEMES = (
    "", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
)  # fmt: skip


def check_uri(uri: str) -> None:
    """Fail fast, before anything is written, on a tracking URI that cannot be reached: an
    HTTP server that does not answer its /health, a SQLite file where no folder can be made,
    a scheme MLflow does not keep runs in."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise TrackingError(
            f"{uri}: MLflow cannot keep runs there (scheme {scheme!r}); use a sqlite:///PATH.db "
            "file, a local folder, or an http(s):// tracking server"
        )
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_SECONDS):
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(f"MLflow tracking server {uri} cannot be reached: {exc}") from exc
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:  # as the results store's folder is made: results/ of a fresh clone
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"{uri}: no folder for the SQLite file: {exc}") from exc


def artifact_root(uri: str) -> str | None:
    """For a SQLite tracking store, artifacts go to `mlflow-artifacts/` beside its file (an
    absolute file URI, so that `mlflow ui` started anywhere finds them); elsewhere MLflow's
    own default."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").resolve().as_uri()


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

    def __init__(self, uri: str, data_root: Path | None = None) -> None:
        """data_root: where the datasets are, for a first-format model file (saved.py)."""
        check_uri(uri)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # not minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        tracking = require("mlflow.tracking", MLFLOW_EXTRA)
        self.uri = uri
        self.client = tracking.MlflowClient(tracking_uri=uri)
        self.data_root = data_root
        self._experiments: dict[str, str] = {}

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
        """Every run of `study` in the store that has a result."""
        done = done or Exported()
        experiment_id = self.experiment_id(study)
        done.experiments[study] = experiment_id
        existing = self.runs_by_key(experiment_id)
        for record in store.runs(study):
            if record.status not in EXPORTED:
                done.left_out[record.key] = f"{record.status}: nothing measured"
                continue
            experiment = next(e for s, e in store.memberships(record.key) if s == study)
            model = existing_model(record, store.path)
            old = existing.get(record.key)
            outcome = self.export_run(record, study, experiment, model, old, done)
            getattr(done, outcome).append(record.key)
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
        with _mlflow_errors(f"logging run {record.key} to {self.uri}"):
            run = self.client.create_run(
                self.experiment_id(study),
                start_time=_millis(record.started_at or record.created_at),
                tags=tags(record, study, experiment),
                run_name=record.spec.label(),
            )
            try:
                complete = self._log_content(run.info.run_id, record, model, done)
                # Set last: a run cut short, or whose model could not be logged, has none (or
                # 'incomplete'), so the next export logs it again.
                self.client.set_tag(
                    run.info.run_id, FINGERPRINT_TAG, stamp if complete else "incomplete"
                )
                status = "FINISHED" if record.status == "done" else "FAILED"
                self.client.set_terminated(
                    run.info.run_id, status, end_time=_millis(record.finished_at or time.time())
                )
            except BaseException:
                self.client.delete_run(run.info.run_id)
                raise
            if old is not None:
                self.client.delete_run(old.info.run_id)
        return "created" if old is None else "updated"

    def _log_content(
        self, run_id: str, record: RunRecord, model: Path | None, done: Exported
    ) -> bool:
        """Params, metrics and artifacts; False when the model could not be logged."""
        entities = require("mlflow.entities", MLFLOW_EXTRA)
        at = _millis(record.finished_at or time.time())
        params = [entities.Param(k, _param(v)) for k, v in record.spec.to_dict().items()]
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
        if record.result.confusion_matrix:
            self.client.log_figure(run_id, confusion_figure(record), "confusion_matrix.png")
        return self._log_model(run_id, record, model, done) if model else True

    def _log_model(self, run_id: str, record: RunRecord, path: Path, done: Exported) -> bool:
        """The model as ONNX; an SVM's `.skops` file when ONNX cannot hold it; nothing, said in
        the notes, when the model is gone or cannot be exported here."""
        from mnistbench.data.load import load_dataset
        from mnistbench.use.onnx_export import ExportError, export_onnx
        from mnistbench.use.saved import load_model

        with tempfile.TemporaryDirectory() as folder:
            try:
                model = load_model(path, lambda name: load_dataset(name, self.data_root))
                onnx = export_onnx(model, Path(folder) / f"{record.key}.onnx")
                self.client.log_artifact(run_id, str(onnx), "model")
            except ExportError as exc:
                self.client.log_artifact(run_id, str(path), "model")
                done.notes.append(f"{record.key}: logged {path.name} ({exc})")
            except (UserError, RunFailure) as exc:
                done.notes.append(f"{record.key}: model not logged: {exc}")
                return False
        return True


def tags(record: RunRecord, study: str, experiment: str) -> dict[str, str]:
    """The tags that find and describe a run in MLflow's UI and search."""
    result = record.result
    environment = result.environment if result else {}
    values = {
        KEY_TAG: record.key,
        "mnistbench.study": study,
        "mnistbench.experiment": experiment,
        "mnistbench.status": record.status,
        "mnistbench.device": (result.device if result else None) or record.spec.device,
        "mnistbench.backend": (result.backend if result else None)
        or (record.spec.svm_backend if record.spec.engine() == "svm" else record.spec.engine()),
        "mnistbench.git_commit": environment.get("git_commit"),
        "mlflow.source.git.commit": environment.get("git_commit"),
        "mnistbench.error": (record.error or "")[:5000] or None,
    }
    return {name: str(value) for name, value in values.items() if value is not None}


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
