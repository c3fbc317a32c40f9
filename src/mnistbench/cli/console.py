"""What the subcommands share at run time: the rich consoles, reporters, human units, datasets.

Handlers import this module when they run, not at startup: rich costs ~0.1 s to import.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from mnistbench.errors import UserError

if TYPE_CHECKING:
    from mnistbench.data.load import Dataset
    from mnistbench.progress import Reporter


class PipedConsole(Console):
    """A rich Console that leaves an output closed early (`| head`) to `main`, which ends every
    command the same way then, quietly (rich alone would exit 1, a failure's code)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more can be said there
        raise BrokenPipeError(errno.EPIPE, "the reader of the output is gone")


console = PipedConsole(highlight=False, soft_wrap=True)
err_console = PipedConsole(stderr=True, highlight=False, soft_wrap=True)


def make_reporter(quiet: bool) -> Reporter:
    """Progress on stderr: log lines when quiet, else live progress bars."""
    from mnistbench.progress import PlainReporter, RichReporter

    return PlainReporter(err_console.print) if quiet else RichReporter(err_console)


def human_size(size: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def load_or_fetch(name: str, root: Path | None) -> Dataset:
    """Load a dataset; fetch it first (printing each source tried) when it is not there yet.
    Files there that are not the dataset's (a digest or format that does not match) are bad
    input, said with how to replace them, not a traceback."""
    from mnistbench.data.fetch import fetch_dataset
    from mnistbench.data.idx import IDXError
    from mnistbench.data.load import DatasetNotFoundError, load_dataset
    from mnistbench.data.registry import get_dataset
    from mnistbench.data.storage import ChecksumError, resolve_root

    info = get_dataset(name)
    try:
        try:
            return load_dataset(name, root)
        except DatasetNotFoundError:
            err_console.print(f"{info.name} is not under {resolve_root(root)}: fetching it first")
            fetch_dataset(info, resolve_root(root), log=err_console.print)
            return load_dataset(name, root)
    except (ChecksumError, IDXError) as exc:
        raise DataRootError(
            f"{exc}; `mnistbench data fetch {info.name} --root {resolve_root(root)}` replaces "
            "the files"
        ) from exc


class DataRootError(UserError):
    """A data root whose files are not the dataset's."""

    flag = "--root"
