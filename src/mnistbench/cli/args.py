"""Argument helpers shared by the subcommands: the help formatter, common flags, value types.

Imports nothing heavy: every subcommand's parser is built at startup, for `--help` too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mnistbench.errors import UserError
from mnistbench.files import check_writable
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
    file (written atomically). With '-' the command prints nothing else on stdout; it is flushed
    here, so that a reader gone early (`| head`) is met in `main`, not at interpreter exit."""
    if target is None:
        return
    text = json.dumps(payload, indent=2)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    from mnistbench.files import atomic_write_text

    try:  # checked before the work by check_outputs; this is for the commands that do not
        atomic_write_text(target, text + "\n")
    except OSError as exc:
        raise OutputError(f"{target}: cannot be written: {exc.strerror or exc}", "--json") from exc


class OutputError(UserError):
    """A file the command was asked to write and cannot: said before any work starts."""

    def __init__(self, message: str, flag: str) -> None:
        super().__init__(message)
        self.flag = flag


Output = tuple[str, str | Path | None]
"""(flag, target) of a file a command writes; None: not asked for, '-': stdout."""


def check_outputs(outputs: Sequence[Output], reads: Iterable[Path | None] = ()) -> None:
    """Each output a file that can be written, none the same as another or as a file the
    command reads (the model, the store, an input): an OutputError, before any work."""
    if empty := [flag for flag, target in outputs if target is not None and not str(target)]:
        raise OutputError("an empty path: give a file to write", empty[0])
    files = [(flag, Path(target)) for flag, target in outputs if target not in (None, "-")]
    reads = [path for path in reads if path is not None and path.is_file()]
    for index, (flag, path) in enumerate(files):
        check_output(path, flag)
        for other_flag, other in files[:index]:
            if _same(path, other):
                raise OutputError(f"{path} is also {other_flag}'s file: give another", flag)
        if any(_same(path, read) for read in reads):
            raise OutputError(f"{path} is a file this command reads: it would be lost", flag)


EXAMPLES = {"--out": "model.onnx", "--json": "out.json"}


def check_output(path: Path, flag: str) -> None:
    """A file that can be made or replaced at `path` (its missing folders made): not a
    folder, not under a file, not in a place where no file can be made."""
    if not str(path) or path.is_dir():
        example = path / EXAMPLES.get(flag, "out")
        raise OutputError(f"{path} is a folder: give the file to write, e.g. {example}", flag)
    place = next(folder for folder in path.absolute().parents if folder.exists())
    if not place.is_dir():
        raise OutputError(f"{path}: {place} is a file, not a folder", flag)
    try:  # what writing will do: a new file in that folder (atomic writes replace, not edit)
        check_writable(place)
    except OSError as exc:
        raise OutputError(
            f"{path}: no file can be written in {place}: {exc.strerror}", flag
        ) from exc


def _same(path: Path, other: Path) -> bool:
    """The same file, whether it exists yet or not (links followed)."""
    try:
        if path.exists() and other.exists():
            return os.path.samefile(path, other)
        return path.resolve() == other.resolve()
    except OSError:
        return False


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
    """A command that reads the store needs one: a missing store, or a folder, is a usage error
    (exit 2). A file that is not a store is found when it is opened (a corrupt store: exit 1)."""
    if not path.exists():
        raise UserError(f"no results store at {path}; run `mnistbench study run FILE` first")
    if not path.is_file():
        raise UserError(f"{path} is a folder, not a results store (a SQLite file)")


def study_name(text: str | None) -> str | None:
    """A study given as its name or its TOML file (whose [study] name is read)."""
    if text is None or not (text.endswith(".toml") or Path(text).is_file()):
        return text
    from mnistbench.study.file import load_study

    return load_study(Path(text)).name
