import os
import subprocess
import sys
import time

import pytest
import torch

from mnistbench.data import load as load_module
from mnistbench.data.fetch import fetch_dataset
from mnistbench.data.load import DatasetNotFoundError, load_dataset
from mnistbench.data.registry import DATASETS, FILENAMES, MNIST
from mnistbench.data.storage import STAMP_NAME, ChecksumError, raw_dir, resolve_root
from tests.conftest import write_files


def _fetched(tmp_path, synthetic):
    files, info = synthetic
    write_files(tmp_path / "src", files)
    fetch_dataset(info, tmp_path / "root", from_path=tmp_path / "src", log=lambda line: None)
    return tmp_path / "root", info


def test_load_returns_uint8_images_and_int64_labels(tmp_path, synthetic):
    root, info = _fetched(tmp_path, synthetic)
    data = load_dataset(info, root)
    assert data.train_images.shape == (200, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64 and data.test_labels.shape == (50,)
    assert set(data.train_labels.tolist()) == set(range(10))


def test_stamp_skips_rehash_but_catches_a_changed_file(tmp_path, synthetic, monkeypatch):
    root, info = _fetched(tmp_path, synthetic)
    directory = raw_dir(root, info)
    assert (directory / STAMP_NAME).is_file()
    hashed: list[str] = []
    real_check = load_module.check_digest

    def counting_check(info, filename, data, origin):
        hashed.append(filename)
        return real_check(info, filename, data, origin)

    monkeypatch.setattr(load_module, "check_digest", counting_check)
    load_dataset(info, root)
    assert hashed == [], "an unchanged, stamped root is not re-hashed"

    path = directory / "t10k-labels-idx1-ubyte"
    corrupted = bytearray(path.read_bytes())
    corrupted[-1] = (corrupted[-1] + 1) % 10
    time.sleep(0.01)  # a new mtime, as any real rewrite would give
    path.write_bytes(bytes(corrupted))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        load_dataset(info, root)
    assert hashed == ["t10k-labels-idx1-ubyte"], "only the changed file was re-hashed"


def test_missing_files_say_how_to_fetch(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="mnistbench data fetch mnist"):
        load_dataset("mnist", tmp_path)


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv("MNISTBENCH_DATA", raising=False)
    assert resolve_root(None) == resolve_root("data")
    monkeypatch.setenv("MNISTBENCH_DATA", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root(tmp_path / "x") == tmp_path / "x"


@pytest.mark.network
def test_real_datasets_are_verified_and_have_the_published_statistics(real_data_root):
    from mnistbench.data.preprocess import normalization_stats

    for info in DATASETS.values():
        data = load_dataset(info, real_data_root)
        assert len(data.train_labels) == 60_000 and len(data.test_labels) == 10_000
    mean, std = normalization_stats(load_dataset(MNIST, real_data_root).train_images)
    assert mean == pytest.approx(0.1307, abs=1e-4) and std == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.network
def test_real_fetch_cli_twice_concurrently_from_a_fetched_root(tmp_path, real_data_root):
    """Two real `data fetch --from` processes at once: both succeed, files end up valid."""
    env = {**os.environ, "MNISTBENCH_DATA": str(tmp_path / "root")}
    command = [sys.executable, "-m", "mnistbench", "data", "fetch", "--from", str(real_data_root)]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    info_run = subprocess.run(
        [sys.executable, "-m", "mnistbench", "data", "info"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert info_run.returncode == 0, info_run.stdout + info_run.stderr
    assert info_run.stdout.count(" yes ") >= 2 * len(FILENAMES) * len(DATASETS)
