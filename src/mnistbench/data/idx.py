"""IDX files (the MNIST container format): read and write idx1/idx3 ubyte, plain or gzip.

Layout: a 4-byte magic (0x00 0x00 <dtype> <ndim>), then ndim big-endian uint32 dimensions, then
the data. MNIST-family files use dtype 0x08 (unsigned byte): 0x801 for labels (N,) and 0x803 for
images (N, rows, cols). Every error names the file and says what exactly is wrong.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from mnistbench.files import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
_NDIM_BY_MAGIC = {LABELS_MAGIC: 1, IMAGES_MAGIC: 3}


class IDXError(ValueError):
    """A malformed IDX file; the message names the file and the defect."""

    def __init__(self, name: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = str(name)
        self.problem = problem


def decompress_if_gzip(raw: bytes) -> bytes:
    """Return the bytes of a gzip stream decompressed, or the bytes unchanged when not gzip."""
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw


def parse_idx(raw: bytes, name: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (plain or gzip) into a uint8 array of shape (N,) or (N, rows, cols)."""
    try:
        data = decompress_if_gzip(raw)
    except (OSError, EOFError) as exc:
        raise IDXError(name, f"corrupt gzip stream ({exc})") from exc
    if len(data) < 4:
        raise IDXError(name, f"truncated at byte {len(data)} of at least 4 (no IDX header)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic not in _NDIM_BY_MAGIC:
        raise IDXError(
            name,
            f"bad magic 0x{magic:08x}; expected 0x{LABELS_MAGIC:08x} (ubyte labels) "
            f"or 0x{IMAGES_MAGIC:08x} (ubyte images)",
        )
    ndim = _NDIM_BY_MAGIC[magic]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXError(name, f"truncated at byte {len(data)} of a {header_size}-byte header")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    if ndim == 3 and (dims[1] == 0 or dims[2] == 0):
        raise IDXError(name, f"bad dimensions {dims}: images must be at least 1x1")
    expected = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise IDXError(name, f"truncated at byte {len(data)} of {expected} (header says {dims})")
    if len(data) > expected:
        raise IDXError(
            name,
            f"{len(data) - expected} unexpected bytes after the {expected} that the header "
            f"declares (dimensions {dims})",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX ubyte file (plain or .gz, detected from its content)."""
    return parse_idx(Path(path).read_bytes(), path)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array of shape (N,) or (N, rows, cols) to uncompressed IDX bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX ubyte needs a uint8 array, got {array.dtype}")
    magic = {1: LABELS_MAGIC, 3: IMAGES_MAGIC}.get(array.ndim)
    if magic is None:
        raise ValueError(f"IDX ubyte needs 1 (labels) or 3 (images) dimensions, got {array.ndim}")
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an IDX ubyte file atomically; gzip-compressed when the name ends in .gz."""
    data = idx_bytes(array)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


def check_images_labels(
    images: np.ndarray, labels: np.ndarray, name: str, num_classes: int = 10
) -> None:
    """Check that an images/labels pair belongs together: same count, labels in range."""
    if images.ndim != 3:
        raise IDXError(name, f"images must have 3 dimensions (N, rows, cols), got {images.shape}")
    if labels.ndim != 1:
        raise IDXError(name, f"labels must have 1 dimension (N,), got {labels.shape}")
    if len(labels) != len(images):
        raise IDXError(name, f"{len(labels)} labels for {len(images)} images")
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        raise IDXError(
            name,
            f"label {int(labels[bad[0]])} outside 0-{num_classes - 1} at index {int(bad[0])}"
            + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""),
        )
