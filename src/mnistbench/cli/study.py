"""`mnistbench study run|status|clean`: run a study from its TOML file (resumable), show its
state, or delete its runs' checkpoints and final models.

`study status` reads the store only: it must not import torch (mnistbench.study.run does).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.cli.args import (
    add_command,
    add_json,
    add_quiet,
    add_root,
    add_store,
    jobs_count,
    require_store,
    write_json,
)
from mnistbench.cli.track import add_live_mlflow
from mnistbench.errors import EXIT_FAILURE, EXIT_OK, UserError
from mnistbench.study.executors import EXECUTORS  # light: no torch (its docstring)

if TYPE_CHECKING:
    from mnistbench.study.file import StudySpec
    from mnistbench.study.run import StudyOutcome
    from mnistbench.study.store import Store

_STATUS_COLUMNS = ("done", "pruned", "failed", "skipped", "running", "pending")


def add_parser(commands: argparse._SubParsersAction) -> None:
    study = add_command(commands, "study", help="run a whole study from a TOML file; resumable")
    actions = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    _add_run_parser(actions)
    status = add_command(
        actions,
        "status",
        help="done / failed / skipped / running / pending runs per experiment, with ETA",
    )
    status.add_argument(
        "file", type=Path, nargs="?", default=None, metavar="FILE", help="only this study"
    )
    _add_overrides(
        status,
        "with FILE: its runs and searches as `study run FILE --set ...` makes them (a smoke "
        "with --set is a study of its own: give its status the same --set)",
    )
    add_store(status)
    add_json(status, "the counts and ETAs (with FILE: the forecast)")
    status.set_defaults(handler=show_status)
    _add_clean_parser(actions)


def _add_overrides(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        dest="overrides",
        default=None,
        metavar="KEY=VALUE",
        help=help_text,
    )


def _add_run_parser(actions: argparse._SubParsersAction) -> None:
    run = add_command(
        actions,
        "run",
        help="run every run of a study that the store does not have yet",
        description="Expand the study file's experiments into runs, skip the ones the results "
        "store already has, and execute the rest. Killed? Run the same command again: finished "
        "runs are kept and an interrupted run resumes from its last epoch checkpoint.",
    )
    run.add_argument("file", type=Path, metavar="FILE", help="study file, e.g. configs/quick.toml")
    run.add_argument(
        "--only", nargs="+", metavar="NAME", default=None, help="run only these experiments"
    )
    _add_overrides(
        run,
        "set a RunSpec field in every run (of the --only experiments), checked like a "
        "study-file value, e.g. --set device=cuda epochs=1 train_limit=2000; values in TOML "
        "syntax, else strings. A changed run is a different run in the store",
    )
    add_store(run)
    run.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        default="local",
        help="; ".join(f"{name}: {executor.help}" for name, executor in EXECUTORS.items()),
    )
    run.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="an existing Ray cluster [default: start a local Ray instance]",
    )
    run.add_argument(
        "--jobs",
        type=jobs_count,
        default=1,
        metavar="N|auto",
        help="local executor: N runs at once in worker processes, CPU threads split between "
        "them; 'auto': one single-threaded worker per core, as many as there are CPU runs and "
        "memory for (the fastest on small shapes, benchmarks/README.md). Runs side "
        "by side slow each other a little, and each result records how many ran at once "
        "[default: 1, in this process, with live epoch progress and uncontended timings]",
    )
    run.add_argument(
        "--retry-failed", action="store_true", help="run again the runs that failed before"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="list the runs and which are done; run nothing"
    )
    add_live_mlflow(run)
    add_root(run)
    add_quiet(run)
    run.set_defaults(handler=run_study)


def run_study(args: argparse.Namespace) -> int:
    """Execute what is missing; 1 when a run failed in this invocation."""
    from mnistbench.study.file import load_study, parse_overrides

    study = load_study(args.file)  # StudyFileError: exit 2
    study = study.with_overrides(parse_overrides(args.overrides or []), args.only)
    selected = study.select(args.only)
    if args.dry_run:
        from mnistbench.cli.forecast import dry_run

        return dry_run(study, args.only, args.store)

    from mnistbench.cli import console as ui
    from mnistbench.cost.estimate import live_estimates
    from mnistbench.study import run as study_module

    # Fetch what the runs need first, here, so that workers never race to download.
    datasets = {spec.dataset for e in selected for spec in e.specs()}
    datasets |= {e.trial_spec({}).dataset for e in selected if e.search is not None}
    for dataset in sorted(datasets):
        ui.load_or_fetch(dataset, args.root)
    reporter = ui.make_reporter(args.quiet)
    on_recorded = None
    if args.mlflow:  # checked now: an unreachable URI stops the study before any run
        from mnistbench.cli.track import live_logger

        on_recorded = live_logger(args.mlflow, study.name, reporter.log)
    started = time.perf_counter()
    try:
        outcome = study_module.run_study(
            study,
            args.store,
            only=args.only,
            executor=args.executor,
            jobs=args.jobs,
            retry_failed=args.retry_failed,
            root=str(args.root) if args.root else None,
            ray_address=args.ray_address,
            reporter=reporter,
            on_recorded=on_recorded,
            estimates=functools.partial(live_estimates, root=str(args.root) if args.root else None),
        )
    finally:
        reporter.close()
    _print_outcome(outcome, study.name, time.perf_counter() - started, args.store)
    return EXIT_FAILURE if outcome.failed else EXIT_OK


def _print_outcome(outcome: StudyOutcome, name: str, seconds: float, store: Path) -> None:
    """What the invocation did, each search's trials, and where to look next."""
    from mnistbench.cli import console as ui

    ui.console.print(
        f"study {name}: {outcome.done} run(s) done, {outcome.failed} failed, "
        f"{outcome.skipped} skipped, {outcome.already_done} already in the store"
        + (f", {outcome.not_claimed} left to another process" if outcome.not_claimed else "")
        + f" ({seconds:.0f} s); store: {store}"
    )
    for experiment, counts in outcome.searches.items():
        ui.console.print(
            f"search {experiment}: {counts.complete} trial(s) complete, {counts.pruned} pruned, "
            f"{counts.failed} failed, {counts.to_run} left"
        )
    if outcome.searches:
        from mnistbench.study.search import storage_url

        dashboard = Path(sys.executable).with_name("optuna-dashboard")
        ui.console.print(f"its trials, live: {dashboard} {storage_url(store)}")
    if outcome.failed:
        ui.err_console.print(
            "some runs failed: `mnistbench study status` lists them; "
            "`study run --retry-failed` runs them again"
        )


def _add_clean_parser(actions: argparse._SubParsersAction) -> None:
    clean = add_command(
        actions,
        "clean",
        help="delete the checkpoints and final models of a study's runs; say how much it freed",
        description="Delete the epoch checkpoints and final models (.model.pt) of every run of "
        "the study in the store, or with --orphans those of runs no longer in any study. A run "
        "that a live process holds is never touched, nor the model of a run that another study "
        "has too. Results stay in the store; a deleted model is no longer advertised there.",
    )
    clean.add_argument("file", type=Path, metavar="FILE", help="study file")
    clean.add_argument(
        "--orphans",
        action="store_true",
        help="instead: runs stored as this study's that FILE no longer has (an edited grid, "
        "`run --set` variants) and files of runs the store has in no study",
    )
    add_store(clean)
    clean.set_defaults(handler=clean_study)


def clean_study(args: argparse.Namespace) -> int:
    """Delete checkpoints and final models; print the bytes freed and what was left alone."""
    from mnistbench.cli.console import console, human_size
    from mnistbench.study import cleanup
    from mnistbench.study.file import load_study
    from mnistbench.study.store import Store

    study = load_study(args.file)
    require_store(args.store)
    directory = cleanup.checkpoint_dir_for(args.store)
    beside: set[str] | None = set()
    with Store(args.store) as store:
        if args.orphans:
            current = cleanup.study_keys(study)
            beside = cleanup.keys_beside(args.store)
            cleaned = cleanup.clean_orphans(store, directory, study.name, current, beside)
        else:
            cleaned = cleanup.clean_study(store, study.name, directory)
    what = "orphaned runs" if args.orphans else f"study {study.name}"
    console.print(
        f"{what}: freed {human_size(cleaned.bytes)} ({cleaned.bytes:,} bytes), "
        f"{cleaned.files} file(s) of {len(cleaned.runs)} run(s) in {directory}"
    )
    if cleaned.claimed:
        console.print(f"left alone: {len(cleaned.claimed)} run(s) a live process holds")
    if cleaned.shared:
        console.print(f"kept: the models of {len(cleaned.shared)} run(s) another study has too")
    if beside is None:
        console.print(
            f"kept: files of runs this store does not know ({args.store.parent} holds a SQLite "
            "file that is not a readable store; they may be its runs)"
        )
    return EXIT_OK


def show_status(args: argparse.Namespace) -> int:
    """Done / failed / skipped / running / pending counts per experiment, with an ETA. With a
    study file (and `--set` overrides, as `study run` takes them): its runs as this machine sees them (pending when the store has none yet), the
    runs skipped here and why, the time left here and the disk of the kept models. --json
    writes the same numbers (`--json -`: only them on stdout)."""
    from mnistbench.study.file import load_study, parse_overrides
    from mnistbench.study.store import Store

    if args.overrides and args.file is None:
        raise UserError("--set applies to a study file: give FILE (study status FILE --set ...)")
    if args.file is not None:
        from mnistbench.cli.forecast import (
            forecast_json,
            print_forecast,
            print_searches,
            search_forecasts,
            study_forecast,
        )

        study = load_study(args.file).with_overrides(parse_overrides(args.overrides or []))
        store = Store(args.store) if args.store.exists() else None
        try:  # StoreError (corrupt, not a store): exit 1
            forecast = study_forecast(study, None, store, args.store)
            searches = search_forecasts(study, None, store, args.store)
        finally:
            if store:
                store.close()
        if args.json != "-":
            print_forecast(forecast, f"study {study.name} in {args.store}")
            print_searches(searches)
        write_json(args.json, forecast_json(forecast, searches, study.name, args.store))
        return EXIT_OK
    require_store(args.store)
    with Store(args.store) as store:  # StoreError (corrupt, not a store): exit 1
        rows = status_rows(store, None)
    if args.json != "-":
        _print_status(rows, args.store)
    write_json(args.json, {"store": str(args.store), "experiments": [
        {"study": name, "experiment": experiment, "counts": counts, "eta_seconds": eta}
        for name, experiment, counts, eta in rows
    ]})  # fmt: skip
    return EXIT_OK


def _print_status(rows: list[tuple[str, str, dict[str, int], float | None]], path: Path) -> None:
    from rich.table import Table

    from mnistbench.cli.console import console, duration

    # 'pruned' only where a search pruned something: the table fits 80 columns without it.
    pruned = any(counts.get("pruned") for _, _, counts, _ in rows)
    columns = [c for c in _STATUS_COLUMNS if c != "pruned" or pruned]
    table = Table(title=f"results store {path}")
    for column in ("study", "experiment", *columns, "eta"):
        table.add_column(column, justify="right" if column in columns else "left")
    for study_name, experiment, counts, eta in rows:
        cells = (str(counts[c]) for c in columns)
        table.add_row(study_name, experiment, *cells, duration(eta))
    console.print(table)
    if not rows:
        console.print("the store has no runs")


def status_rows(
    store: Store, study: StudySpec | None
) -> list[tuple[str, str, dict[str, int], float | None]]:
    """(study, experiment, counts, ETA seconds) per experiment, for `study status` without a
    study file (which must start at once: no torch, no probe).

    The ETA is the mean wall time of this experiment's finished runs times the runs left; with a
    study file, `study status FILE` estimates each run from this machine's probes instead.
    """
    rows = []
    for (study_name, experiment), counts in store.counts(study.name if study else None).items():
        records = store.runs(study_name, experiment)
        durations = [
            r.finished_at - r.started_at
            for r in records
            if r.status == "done" and r.finished_at and r.started_at
        ]
        left = counts["pending"] + counts["running"]
        eta = sum(durations) / len(durations) * left if durations and left else None
        rows.append((study_name, experiment, counts, eta))
    return rows
