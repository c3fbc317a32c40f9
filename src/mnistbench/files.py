"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Used by everything that writes a file another process may read meanwhile, or that a killed
process may leave behind: dataset files, checkpoints, final models, reports.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it is flushed to disk and replaces `path`. On error the
    temporary file is removed and `path` is left as it was.

    The temporary file lives in the destination directory so that the final rename stays on one
    filesystem (and is therefore atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes atomically (see atomic_replace)."""
    with atomic_replace(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically (see atomic_replace)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Raise OSError when no new file can be made in `folder`: what an atomic write (a new file,
    then a rename) needs there, probed before any work."""
    tempfile.TemporaryFile(dir=folder).close()
