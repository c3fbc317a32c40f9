"""Atomic writes: the old file or the complete new one, never half, and no temporary left over."""

import pytest

from mnistbench.files import atomic_replace, atomic_write_bytes, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_replace(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_text_is_written_as_utf8_into_a_new_directory(tmp_path):
    path = tmp_path / "new" / "report.md"
    atomic_write_text(path, "accuracy ± 0.1 %\n")
    assert path.read_bytes() == "accuracy ± 0.1 %\n".encode()
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]
