"""`mnistbench data pack DIR`: the verified datasets as gzip IDX files, to carry to a machine
without network (a GPU box, a cluster node). There `mnistbench data fetch --from DIR` reads them
back: DIR keeps torchvision's layout (DIR/MNIST/raw/train-images-idx3-ubyte.gz, ...), which the
--from source already understands, and every file is verified again on arrival.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from mnistbench.data.registry import FILENAMES, DatasetInfo
from mnistbench.data.storage import check_digest, raw_dir
from mnistbench.files import atomic_write_bytes


def pack_dataset(info: DatasetInfo, root: Path, destination: Path) -> list[Path]:
    """Write the dataset's four files from root, verified, as .gz under destination."""
    written = []
    for filename in FILENAMES:
        source = raw_dir(root, info) / filename
        if not source.is_file():
            raise FileNotFoundError(
                f"{source} is missing: run `mnistbench data fetch {info.name}` first"
            )
        data = source.read_bytes()
        check_digest(info, filename, data, str(source))  # never carry a damaged copy
        target = raw_dir(destination, info) / f"{filename}.gz"
        # mtime=0: the same data packs to the same bytes, so a pack can be compared by hash.
        atomic_write_bytes(target, gzip.compress(data, compresslevel=6, mtime=0))
        written.append(target)
    return written
