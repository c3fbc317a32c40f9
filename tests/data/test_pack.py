"""`data pack`: verified .gz copies that `data fetch --from` installs on an offline machine."""

import gzip

import pytest

from mnistbench.data.fetch import fetch_dataset
from mnistbench.data.pack import pack_dataset
from mnistbench.data.registry import FILENAMES
from mnistbench.data.storage import ChecksumError, raw_dir
from tests.conftest import write_files


def _root_with(tmp_path, files):
    root = tmp_path / "root"
    write_files(root / "MNIST" / "raw", files)
    return root


def test_pack_then_fetch_from_installs_the_same_bytes_elsewhere(tmp_path, synthetic):
    files, info = synthetic
    written = pack_dataset(info, _root_with(tmp_path, files), tmp_path / "bundle")
    assert sorted(p.name for p in written) == sorted(f"{name}.gz" for name in FILENAMES)
    assert all(p.parent == tmp_path / "bundle" / "MNIST" / "raw" for p in written)
    assert gzip.decompress(written[0].read_bytes()) == files[FILENAMES[0]]

    offline_root = tmp_path / "offline"
    report = fetch_dataset(info, offline_root, from_path=tmp_path / "bundle", log=lambda _: None)
    assert report.ok
    for name in FILENAMES:
        assert (raw_dir(offline_root, info) / name).read_bytes() == files[name]


def test_the_same_data_packs_to_the_same_bytes(tmp_path, synthetic):
    files, info = synthetic
    root = _root_with(tmp_path, files)
    first = [p.read_bytes() for p in pack_dataset(info, root, tmp_path / "one")]
    second = [p.read_bytes() for p in pack_dataset(info, root, tmp_path / "two")]
    assert first == second


def test_a_damaged_file_is_never_packed(tmp_path, synthetic):
    files, info = synthetic
    root = _root_with(tmp_path, files)
    damaged = raw_dir(root, info) / "t10k-labels-idx1-ubyte"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x09")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        pack_dataset(info, root, tmp_path / "bundle")
    assert not (tmp_path / "bundle" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").exists()


def test_a_missing_dataset_says_to_fetch_it_first(tmp_path, synthetic):
    _, info = synthetic
    with pytest.raises(FileNotFoundError, match="mnistbench data fetch mnist"):
        pack_dataset(info, tmp_path / "empty", tmp_path / "bundle")
