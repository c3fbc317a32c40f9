"""Where MLflow keeps runs: a tracking URI checked before anything is written (an HTTP server
that answers, a SQLite file that can be made or is MLflow's, never a folder in MLflow 3), and
where the artifacts of a SQLite store go. Imports nothing of MLflow: a bad URI is said at once.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

from mnistbench.errors import UserError
from mnistbench.files import check_writable

REACH_SECONDS = 5.0


class TrackingError(UserError):
    """A tracking URI that cannot be used; the message says why."""

    flag = "--tracking-uri"


# The schemes of MLflow's tracking stores (a plain path is a local folder: scheme "").
TRACKING_SCHEMES = (
    "", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
)  # fmt: skip


def check_uri(uri: str) -> None:
    """Fail fast, before anything is written, on a tracking URI that cannot be used: an HTTP
    server that does not answer its /health, a SQLite file that cannot be made or is not
    MLflow's, a folder (MLflow 3 refuses folders), a scheme MLflow does not keep runs in. MLflow
    itself would retry a SQLite file it cannot open for minutes, then end in a traceback."""
    if not uri.strip():
        raise TrackingError("empty: give sqlite:///PATH.db or an http(s):// tracking server")
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise TrackingError(
            f"{uri}: MLflow cannot keep runs there (scheme {scheme!r}); use a sqlite:///PATH.db "
            "file or an http(s):// tracking server"
        )
    if scheme in ("", "file") and os.environ.get(ALLOW_FOLDER, "").lower() not in ("1", "true"):
        path = Path(uri.removeprefix("file://"))
        path = path if path.suffix == ".db" or path.is_file() else path / "mlflow.db"
        raise TrackingError(
            f"{uri}: MLflow 3 keeps no runs in a folder (unless {ALLOW_FOLDER}=true); use a "
            f"SQLite file, e.g. sqlite:///{path}"
        )
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_SECONDS):
                return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(f"MLflow tracking server {uri} cannot be reached: {exc}") from exc
    if scheme == "sqlite":
        _check_sqlite(uri)


ALLOW_FOLDER = "MLFLOW_ALLOW_FILE_STORE"


def _check_sqlite(uri: str) -> None:
    """A SQLite file MLflow can create, or an MLflow store already there; its folder is made
    (results/ of a fresh clone)."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///":
        raise TrackingError(
            f"{uri}: a SQLite URI is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = Path(uri.removeprefix("sqlite:///"))
    if path.is_dir():
        raise TrackingError(f"{uri}: {path} is a folder; give a file in it, e.g. {path}/mlflow.db")
    if path.exists():
        problem = _not_mlflow(path) or (None if os.access(path, os.W_OK) else "read-only")
        if problem:
            raise TrackingError(f"{uri}: {problem}")
        return
    try:  # as the results store's folder is made; a probe file says whether one can be written
        path.parent.mkdir(parents=True, exist_ok=True)
        check_writable(path.parent)
    except OSError as exc:
        raise TrackingError(
            f"{uri}: the SQLite file cannot be made in {path.parent}: {exc.strerror or exc}"
        ) from exc


def _not_mlflow(path: Path) -> str | None:
    """Why an existing file is not an MLflow SQLite store (an empty one is: MLflow fills it)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        return f"{path} is not a SQLite file ({exc})"
    if tables and "experiments" not in tables:
        return (
            f"{path} is a SQLite file of something else (tables: {', '.join(sorted(tables)[:4])}"
            "), not an MLflow store"
        )
    return None


def artifact_root(uri: str) -> str | None:
    """For a SQLite tracking store, artifacts go to `mlflow-artifacts/` beside its file (an
    absolute file URI, so that `mlflow ui` started anywhere finds them); elsewhere MLflow's
    own default."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlflow-artifacts").resolve().as_uri()
