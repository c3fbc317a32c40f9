"""`mnistbench track mlflow`: export the store's runs to an MLflow tracking store (tracking.py).

`study run --mlflow URI` logs each run as it finishes, through `live_logger` here. mlflow is
imported by the handlers only (an optional extra, seconds to import).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.cli.args import add_command, add_store, require_store, study_name
from mnistbench.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mnistbench.study.store import Store

DEFAULT_URI = "sqlite:///results/mlflow.db"  # tracking.DEFAULT_URI, without importing it here


def add_parser(commands: argparse._SubParsersAction) -> None:
    track = add_command(commands, "track", help="export runs to an experiment tracker (MLflow)")
    trackers = track.add_subparsers(dest="tracker", required=True, metavar="TRACKER")
    mlflow = add_command(
        trackers,
        "mlflow",
        help="export the store's runs to MLflow: one MLflow experiment per study",
        description="Export runs from the results store to an MLflow tracking store: one MLflow "
        "experiment per study, one MLflow run per mnistbench run with a result (params: the "
        "spec; metrics: the results and the per-epoch history; tags: study, experiment, run key, "
        "status, device, back-end, git commit, a short description; artifacts: result JSON, "
        "per-class accuracy table, confusion matrix) and, when the run kept its model, that "
        "model in MLflow's onnx flavour (the run's logged model). Each run is said on stderr as "
        "it goes. Run it again: unchanged runs are left as they are, changed ones are replaced. "
        "It ends with where to look: the runs pages of a tracking server, or the `mlflow ui` "
        "command that serves a local store.",
    )
    mlflow.add_argument(
        "--study", default=None, metavar="NAME|FILE", help="one study [default: every study]"
    )
    add_tracking_uri(mlflow)
    add_store(mlflow)
    mlflow.set_defaults(handler=export_to_mlflow)


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=DEFAULT_URI,
        metavar="URI",
        help="MLflow tracking URI: sqlite:///PATH.db (relative; sqlite:////PATH.db absolute) or "
        "http(s)://HOST:PORT [default: a SQLite store under results/]",
    )


def add_live_mlflow(parser: argparse.ArgumentParser) -> None:
    """`study run --mlflow URI`."""
    parser.add_argument(
        "--mlflow",
        default=None,
        metavar="URI",
        help="also log each run to this MLflow tracking URI as it finishes (from this process "
        f"only), e.g. {DEFAULT_URI}; `mnistbench track mlflow` exports afterwards",
    )


def export_to_mlflow(args: argparse.Namespace) -> int:
    """Export every study (or one), saying each run as it goes, then what changed and where to
    look at it. Everything the user gave is checked before the MLflow store is made."""
    from mnistbench.cli.console import console, err_console
    from mnistbench.study.store import Store
    from mnistbench.use.tracking import Exported, Tracker

    require_store(args.store)
    study = study_name(args.study)
    with Store(args.store) as store:
        known = list(dict.fromkeys(s for s, _ in store.experiments()))
        if study and study not in known:
            raise UserError(f"study {study!r} has no runs in {args.store}")
        # A URI it cannot use: exit 2, nothing written. Progress on stderr, a line a run.
        tracker = Tracker(args.tracking_uri, log=partial(err_console.print, markup=False))
        done = Exported()
        for name in [study] if study else known:
            err_console.print(f"study {name}:", markup=False)
            tracker.export(store, name, done)
    for note in done.notes:
        err_console.print(f"note: {note}", markup=False)
    console.print(
        f"MLflow {args.tracking_uri}: {len(done.created)} run(s) created, {len(done.updated)} "
        f"updated, {len(done.unchanged)} unchanged, {len(done.left_out)} left out (no result)"
    )
    for line in where_to_look(args.tracking_uri, done.experiments):
        console.print(line, markup=False)
    return EXIT_OK


def where_to_look(uri: str, experiments: dict[str, str]) -> list[str]:
    """The runs page of each study on a tracking server; for a store MLflow's UI serves from
    here, the command that starts it (the venv's own mlflow, which works without activating the
    venv; a SQLite path made absolute, to work from any folder) and the pages it will show."""
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
    elif uri.startswith("databricks"):
        return [f"study {s}: MLflow experiment {e}" for s, e in experiments.items()]
    else:
        if uri.startswith("sqlite:///"):
            uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
        beside = Path(sys.executable).parent / "mlflow"
        program = str(beside) if beside.is_file() else "mlflow"
        base = "http://127.0.0.1:5000"
        command = shlex.join([program, "ui", "--backend-store-uri", uri])
        return [f"look at them: {command}", *_pages(base, experiments, "  ")]
    return _pages(base, experiments, "")


def _pages(base: str, experiments: dict[str, str], lead: str) -> list[str]:
    return [f"{lead}study {s}: {base}/#/experiments/{e}/runs" for s, e in experiments.items()]


def live_logger(uri: str, study: str, log: Callable[[str], None]) -> Callable[[Store, str], None]:
    """For `study run --mlflow URI`: a callback the study driver calls after it records a run,
    which logs that run to MLflow. Checked here, before the study starts; a failure to log a run
    later is said through `log` and does not stop the study."""
    from mnistbench.errors import RunFailure
    from mnistbench.use.selection import existing_model
    from mnistbench.use.tracking import EXPORTED, Exported, Tracker
    from mnistbench.use.tracking_store import TrackingError

    try:
        tracker = Tracker(uri)
    except TrackingError as exc:
        exc.flag = "--mlflow"  # what `study run` calls the URI
        raise
    tracker.experiment_id(study)  # created now: a store that refuses it fails before any run

    def log_run(store: Store, key: str) -> None:
        record = store.get(key)
        if record is None or record.status not in EXPORTED:
            return
        experiment = next((e for s, e in store.memberships(key) if s == study), "")
        try:
            old = tracker.runs_by_key(tracker.experiment_id(study)).get(key)
            model = existing_model(record, store.path)
            tracker.export_run(record, study, experiment, model, old, Exported())
        except (UserError, RunFailure) as exc:
            log(f"MLflow: run {key} not logged: {exc}")

    return log_run
