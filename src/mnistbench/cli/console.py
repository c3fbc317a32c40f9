"""What the subcommands share at run time: the rich consoles, reporters, human units, datasets.

Handlers import this module when they run, not at startup: rich costs ~0.1 s to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from mnistbench.data.load import Dataset
    from mnistbench.progress import Reporter

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    """Load a dataset; fetch it first (printing each source tried) when it is not there yet."""
    from mnistbench.data.fetch import fetch_dataset
    from mnistbench.data.load import DatasetNotFoundError, load_dataset
    from mnistbench.data.registry import get_dataset
    from mnistbench.data.storage import resolve_root

    try:
        return load_dataset(name, root)
    except DatasetNotFoundError:
        info = get_dataset(name)
        err_console.print(f"{info.name} is not under {resolve_root(root)}: fetching it first")
        fetch_dataset(info, resolve_root(root), log=err_console.print)
        return load_dataset(name, root)
