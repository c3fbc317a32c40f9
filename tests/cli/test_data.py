import subprocess
import sys

import pytest

from mnistbench import __version__
from mnistbench.cli import main
from tests.conftest import synthetic_files, write_files


def _run(*args: str, env_root=None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **({"MNISTBENCH_DATA": str(env_root)} if env_root else {})}
    return subprocess.run(
        [sys.executable, "-m", "mnistbench", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_version():
    result = _run("--version")
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.slow
def test_unknown_dataset_exits_2_and_lists_known(tmp_path):
    result = _run("data", "fetch", "cifar10", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "unknown dataset 'cifar10'" in result.stderr and "fashion-mnist" in result.stderr


@pytest.mark.slow
def test_from_dir_with_corrupt_files_explains_and_exits_nonzero(tmp_path):
    # Synthetic files cannot have MNIST's pinned digests: every one is "corrupt".
    write_files(tmp_path / "src", synthetic_files())
    result = _run(
        "data", "fetch", "mnist", "--from", str(tmp_path / "src"), "--root", str(tmp_path / "root")
    )
    assert result.returncode == 1
    assert "SHA-256 mismatch" in result.stderr and "could not fetch mnist" in result.stderr
    assert not (tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


@pytest.mark.slow
def test_from_missing_path_is_a_usage_error(tmp_path):
    result = _run("data", "fetch", "--from", str(tmp_path / "nope"), "--root", str(tmp_path))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_info_on_empty_root_reports_missing_and_fails(tmp_path, capsys):
    assert main(["data", "info", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "train-images-idx3-ubyte" in out and "mnistbench data fetch" in out
