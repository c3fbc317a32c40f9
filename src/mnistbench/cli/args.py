"""Argument helpers shared by the subcommands: the help formatter, common flags, value types.

Imports nothing heavy: every subcommand's parser is built at startup, for `--help` too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mnistbench.errors import UserError
from mnistbench.study import DEFAULT_STORE


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's default shown once, as ` [default: X]`; a text with line breaks kept as written.

    The default is appended only when it says something (not None, False or SUPPRESS: a flag
    whose default is RunSpec's writes it into its help itself) and the help does not already
    state it in words, e.g. `[default: all]`.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:  # laid out by hand, like the exit codes in the top-level epilog
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "[default:" in help_text or not _meaningful(action.default):
            return help_text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return help_text  # a required positional has no default
        return f"{help_text} [default: %(default)s]"


def _meaningful(default: Any) -> bool:
    return default is not None and default is not False and default is not argparse.SUPPRESS


def add_command(
    subparsers: argparse._SubParsersAction, name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser, with this module's HelpFormatter (argparse does not inherit it)."""
    return subparsers.add_parser(name, formatter_class=HelpFormatter, **kwargs)


def add_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root; files go to ROOT/MNIST/raw and ROOT/FashionMNIST/raw, torchvision's "
        "layout [default: $MNISTBENCH_DATA, else ./data]",
    )


def add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        metavar="PATH",
        help="SQLite results store",
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def add_json(parser: argparse.ArgumentParser, what: str) -> None:
    """`--json OUT`: the command's result as JSON too; write it with write_json."""
    parser.add_argument(
        "--json", default=None, metavar="OUT", help=f"write {what} as JSON to OUT ('-': stdout)"
    )


def write_json(target: str | None, payload: Any) -> None:
    """The payload as JSON to the --json target: nothing when None, stdout when '-', else the
    file (written atomically). With '-' the command prints nothing else on stdout."""
    if target is None:
        return
    text = json.dumps(payload, indent=2)
    if target == "-":
        print(text)
        return
    from mnistbench.files import atomic_write_text

    atomic_write_text(target, text + "\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def jobs_count(text: str) -> int | str:
    """An argparse type: an integer >= 1, or 'auto'."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error}; or write 'auto'") from None


def existing_path(text: str) -> Path:
    """An argparse type: a file or directory that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def require_store(path: Path) -> None:
    """A command that reads the store needs one: a missing store is a usage error (exit 2)."""
    if not path.exists():
        raise UserError(f"no results store at {path}; run `mnistbench study run FILE` first")


def study_name(text: str | None) -> str | None:
    """A study given as its name or its TOML file (whose [study] name is read)."""
    if text is None or not (text.endswith(".toml") or Path(text).is_file()):
        return text
    from mnistbench.study.file import load_study

    return load_study(Path(text)).name
