"""What the CLI's subcommands do, as plain functions with console output.

cli.py parses; these functions act and print. Library code stays free of printing policy.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mnistbench.data.fetch import FetchError, fetch_dataset
from mnistbench.data.registry import DATASETS, UnknownDatasetError, get_dataset
from mnistbench.data.storage import file_statuses, resolve_root

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageError(ValueError):
    """A bad value given by the user; the CLI exits with code 2 and this message."""


def _datasets(names: list[str]) -> list:
    try:
        return [get_dataset(name) for name in names] if names else list(DATASETS.values())
    except UnknownDatasetError as exc:
        raise UsageError(str(exc)) from exc


def fetch_datasets(names: list[str], root: Path | None, from_path: Path | None) -> int:
    """Fetch each dataset; print one line per attempt and a summary. 0 when all succeeded."""
    infos = _datasets(names)
    if from_path is not None and not from_path.exists():
        raise UsageError(f"--from {from_path}: no such file or directory")
    root = resolve_root(root)
    started = time.perf_counter()
    fetched, failed = [], []
    for info in infos:
        try:
            report = fetch_dataset(info, root, from_path=from_path, log=console.print)
            fetched.append(f"{info.name} from {report.source} ({report.seconds:.1f} s)")
        except FetchError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            failed.append(info.name)
    for line in fetched:
        console.print(f"[green]fetched[/green] {line}")
    console.print(f"done in {time.perf_counter() - started:.1f} s; data root: {root.resolve()}")
    if failed:
        err_console.print(f"[red]failed:[/red] {', '.join(failed)}")
        return 1
    return 0


def _human_size(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def show_data_info(root: Path | None) -> int:
    """Print a table of every dataset file: present, verified, size. 0 when all are valid."""
    root = resolve_root(root)
    table = Table(title=f"datasets under {root.resolve()}")
    for column in ("dataset", "file", "present", "verified", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    all_valid = True
    problems = []
    for info in DATASETS.values():
        for status in file_statuses(root, info):
            all_valid &= status.verified
            size = _human_size(status.size) if status.size is not None else "-"
            verified = (
                "[green]yes[/green]"
                if status.verified
                else "[red]NO[/red]"
                if status.present
                else "-"
            )
            present = "yes" if status.present else "[yellow]no[/yellow]"
            table.add_row(status.dataset, status.filename, present, verified, size)
            if status.problem:
                problems.append(status.problem)
    console.print(table)
    for problem in problems:
        err_console.print(f"[red]{problem}[/red]")
    if not all_valid:
        console.print("some files are missing or invalid: run `mnistbench data fetch`")
    return 0 if all_valid else 1
