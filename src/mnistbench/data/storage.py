"""Where dataset files live (torchvision's layout) and how they are verified.

Files sit uncompressed at ROOT/<folder>/raw/<name>, exactly where torchvision's MNIST and
FashionMNIST classes look, so an existing torchvision download works and torchvision reads ours.
Verification compares the SHA-256 of the decompressed bytes against the pinned digest; a stamp
(size + mtime + digest) next to the files lets later loads skip re-hashing 50 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from mnistbench.data.registry import DATASETS, FILENAMES, DatasetInfo
from mnistbench.files import atomic_write_bytes

ROOT_ENV_VAR = "MNISTBENCH_DATA"
DEFAULT_ROOT = "data"
STAMP_NAME = ".mnistbench-verified.json"


class ChecksumError(ValueError):
    """A file whose decompressed bytes do not have the pinned SHA-256."""

    def __init__(self, origin: str, filename: str, expected: str, actual: str) -> None:
        hint = _identify_digest(actual)
        super().__init__(
            f"{origin}: SHA-256 mismatch for {filename}: expected {expected}, got {actual}"
            + (f" ({hint})" if hint else "")
        )
        self.origin, self.filename, self.expected, self.actual = origin, filename, expected, actual


def _identify_digest(digest: str) -> str:
    """Say which known file a digest belongs to, to explain swapped or misnamed files."""
    for info in DATASETS.values():
        for filename, known in info.sha256.items():
            if known == digest:
                return f"that is {info.name}'s {filename}"
    return ""


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else $MNISTBENCH_DATA, else ./data."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT)


def raw_dir(root: Path, info: DatasetInfo) -> Path:
    return root / info.folder / "raw"


def dataset_lock(root: Path, info: DatasetInfo) -> FileLock:
    """An inter-process lock for writing one dataset's files under one root."""
    lock_path = root / info.folder / ".mnistbench.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_path))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(info: DatasetInfo, filename: str, data: bytes, origin: str) -> None:
    """Raise ChecksumError unless data is the pinned content of info's filename."""
    actual = sha256_hex(data)
    if actual != info.sha256[filename]:
        raise ChecksumError(origin, filename, info.sha256[filename], actual)


def _read_stamp(directory: Path) -> dict[str, dict[str, object]]:
    try:
        stamp = json.loads((directory / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _file_key(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def record_verified(directory: Path, filenames: list[str], info: DatasetInfo) -> None:
    """Remember that these files (as they are now on disk) have their pinned digests."""
    stamp = _read_stamp(directory)
    for filename in filenames:
        stamp[filename] = {**_file_key(directory / filename), "sha256": info.sha256[filename]}
    atomic_write_bytes(directory / STAMP_NAME, json.dumps(stamp, indent=1).encode())


def stamp_says_verified(directory: Path, filename: str, info: DatasetInfo) -> bool:
    """True when the stamp vouches for the file exactly as it is now (same size and mtime)."""
    entry = _read_stamp(directory).get(filename)
    path = directory / filename
    if not isinstance(entry, dict) or not path.is_file():
        return False
    return entry == {**_file_key(path), "sha256": info.sha256[filename]}


@dataclass(frozen=True)
class FileStatus:
    """What `data info` reports for one file."""

    dataset: str
    filename: str
    path: Path
    present: bool
    verified: bool
    size: int | None
    problem: str = ""


def file_statuses(root: Path, info: DatasetInfo) -> list[FileStatus]:
    """Presence and verification of each of a dataset's files (hashing only what is unstamped)."""
    directory = raw_dir(root, info)
    statuses = []
    newly_verified = []
    for filename in FILENAMES:
        path = directory / filename
        if not path.is_file():
            statuses.append(FileStatus(info.name, filename, path, False, False, None))
            continue
        verified, problem = stamp_says_verified(directory, filename, info), ""
        if not verified:
            try:
                check_digest(info, filename, path.read_bytes(), str(path))
                verified = True
                newly_verified.append(filename)
            except ChecksumError as exc:
                problem = str(exc)
        statuses.append(
            FileStatus(info.name, filename, path, True, verified, path.stat().st_size, problem)
        )
    if newly_verified:
        record_verified(directory, newly_verified, info)
    return statuses
