import gzip
import struct

import numpy as np
import pytest

from mnistbench.data.idx import (
    IDXError,
    check_images_labels,
    idx_bytes,
    parse_idx,
    read_idx,
    write_idx,
)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_images_and_labels(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"labels{suffix}", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"labels{suffix}"), labels)
    raw = (tmp_path / f"images{suffix}").read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")


def test_header_is_the_standard_one():
    data = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))
    assert struct.unpack(">IIII", data[:16]) == (0x803, 2, 3, 4)
    assert len(data) == 16 + 24


def test_truncated_file_says_where(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))[:5000])
    with pytest.raises(IDXError, match=r"train-images-idx3-ubyte: truncated at byte 5000 of 7856"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(struct.pack(">II", 0x803, 10))
    with pytest.raises(IDXError, match=r"truncated at byte 8 of a 16-byte header"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "weird"
    path.write_bytes(struct.pack(">II", 0x0802, 1) + b"\x00\x00")
    with pytest.raises(IDXError, match=r"weird: bad magic 0x00000802"):
        read_idx(path)


def test_trailing_bytes_rejected(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)) + b"junk")
    with pytest.raises(IDXError, match=r"4 unexpected bytes after the 13"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(50, dtype=np.uint8)))[:-10])
    with pytest.raises(IDXError, match=r"labels.gz: corrupt gzip stream"):
        read_idx(path)


def test_count_mismatch():
    images = np.zeros((60000, 2, 2), dtype=np.uint8)
    labels = np.zeros(59999, dtype=np.uint8)
    with pytest.raises(IDXError, match=r"mnist train: 59999 labels for 60000 images"):
        check_images_labels(images, labels, "mnist train")


def test_label_out_of_range():
    labels = np.array([1, 2, 12, 3, 11], dtype=np.uint8)
    with pytest.raises(IDXError, match=r"label 12 outside 0-9 at index 2 \(and 1 more\)"):
        check_images_labels(np.zeros((5, 2, 2), dtype=np.uint8), labels, "f")


def test_writer_refuses_wrong_dtype_and_rank():
    with pytest.raises(ValueError, match="uint8"):
        idx_bytes(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="1 \\(labels\\) or 3 \\(images\\)"):
        idx_bytes(np.zeros((3, 3), dtype=np.uint8))


def test_parse_returns_exact_values():
    labels = np.arange(10, dtype=np.uint8)
    assert parse_idx(idx_bytes(labels)).tolist() == list(range(10))
