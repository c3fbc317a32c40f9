"""`mnistbench report`: a study's tables, insights, plots and exports (md, html, csv, json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistbench.cli.args import add_command, add_store
from mnistbench.errors import EXIT_OK


def add_parser(commands: argparse._SubParsersAction) -> None:
    report = add_command(
        commands,
        "report",
        help="tables, insights, plots and exports of a study's results (md, html, csv, json)",
        description="Write the study's tables (Q1(a) grids, Q1(b) SVMs, Q2 CPU vs GPU), the "
        "headline results and insights computed from the data, plots, a self-contained HTML "
        "file and CSV/JSON exports of every run.",
    )
    add_store(report)
    report.add_argument(
        "--study",
        default=None,
        metavar="NAME|FILE",
        help="a study name in the store, or its TOML file (which also gives the experiments' "
        "descriptions) [default: the store's only study, else all]",
    )
    report.add_argument(
        "--out", type=Path, default=Path("results/report"), metavar="DIR", help="output directory"
    )
    report.add_argument(
        "--format",
        dest="formats",
        type=formats,
        default="md,html,csv,json",
        metavar="LIST",
        help="comma-separated formats from md, html, csv, json [default: all]",
    )
    report.set_defaults(handler=write_report)


def formats(text: str) -> list[str]:
    """--format's type: the comma-separated list, checked here once (argparse exits 2)."""
    from mnistbench.report import FORMATS

    chosen = [f.strip().lower() for f in text.split(",") if f.strip()]
    if not chosen or any(f not in FORMATS for f in chosen):
        # An ArgumentError without an action: argparse prints the message as it is.
        raise argparse.ArgumentError(None, f"--format {text!r}: choose from {', '.join(FORMATS)}")
    return chosen


def write_report(args: argparse.Namespace) -> int:
    """Build the study's report from the store and write each format."""
    from mnistbench import report
    from mnistbench.cli.args import require_store
    from mnistbench.cli.console import console
    from mnistbench.study.file import load_study
    from mnistbench.study.store import Store

    require_store(args.store)
    study, descriptions, study_description = args.study, {}, ""
    if study is not None and (study.endswith(".toml") or Path(study).is_file()):
        spec = load_study(Path(study))  # a study file names the study and describes it
        study, study_description = spec.name, spec.description
        descriptions = {e.name: e.description for e in spec.experiments}
    with Store(args.store) as store:  # EmptyReportError: exit 2; StoreError: exit 1
        built = report.build_report(
            store,
            study,
            descriptions=descriptions,
            study_description=study_description,
            plots=bool({"md", "html"} & set(args.formats)),  # CSV/JSON alone need no drawing
        )
    written = report.write_report(built, args.out, args.formats)
    console.print(f"[bold]{built.title}[/bold]: {built.status_line()}")
    for insight in built.headline:
        console.print(f"  - {insight.text}")
    shown = [p for p in written if p.suffix != ".png"]
    pngs = len(written) - len(shown)
    console.print(
        "wrote " + ", ".join(str(p) for p in shown) + (f" and {pngs} PNG plots" if pngs else "")
    )
    return EXIT_OK
