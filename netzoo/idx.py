"""The IDX files of MNIST and its kin (Fashion-MNIST, KMNIST): what a published file holds, and checks that a
file on disk is that file, whole.

An IDX file (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS") is a 4-byte magic number (0x0000 0x08 for
unsigned bytes, then the number of dimensions), one big-endian uint32 per dimension, then one unsigned byte
per value in C order: 60000 28x28 images take 16 + 60000*28*28 = 47,040,016 bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from netzoo import files
from netzoo.errors import DatasetError

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only type MNIST and its kin use


@dataclass(frozen=True)
class IdxFile:
    """One raw file as published: its name, the shape it holds, and the md5 of its .gz."""

    name: str               # e.g. "train-images-idx3-ubyte"; the published file is name + ".gz"
    shape: tuple[int, ...]  # (60000, 28, 28) for images, (60000,) for labels
    gz_md5: str             # md5 of name.gz, from torchvision's list (e.g. torchvision.datasets.MNIST.resources)

    @property
    def magic(self) -> int:
        """The magic number its header starts with: 0x803 for images, 0x801 for labels."""
        return UBYTE << 8 | len(self.shape)

    @property
    def header_size(self) -> int:
        """Bytes of the header: the magic number and one uint32 per dimension."""
        return 4 + 4 * len(self.shape)

    @property
    def size(self) -> int:
        """Bytes of the decompressed file: header + one byte per value (47,040,016 for MNIST's train images)."""
        return self.header_size + math.prod(self.shape)


def corrupt(path: Path, problem: str) -> DatasetError:
    """The one-line error for a damaged dataset file: which file, what is wrong, and the fix."""
    original = "the original (torchvision.datasets lists the md5 of each .gz)" if path.suffix == ".gz" else \
        "the original or its .gz"
    return DatasetError(f"{path} is corrupt ({problem}): replace it with {original}, or pass --download.")


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def idx_problem(path: Path, expected: IdxFile) -> str | None:
    """What makes the decompressed file at ``path`` not ``expected`` (magic number, shape, size), or None.

    Reads the header only and takes the size from stat: microseconds, so it runs on every load. A file of
    the right shape and size whose values were changed passes; only a .gz has a published checksum."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(expected.header_size)
    magic = struct.unpack(">I", header[:4])[0] if len(header) >= 4 else expected.magic
    if magic != expected.magic:
        return (f"magic number 0x{magic:08x}, expected 0x{expected.magic:08x} "
                f"(unsigned bytes, {len(expected.shape)} dimensions)")
    if len(header) < expected.header_size:
        return f"{size} bytes, shorter than its {expected.header_size}-byte header"
    shape = struct.unpack(f">{len(expected.shape)}I", header[4:])
    if shape != expected.shape:
        return f"header says {_dims(shape)}, expected {_dims(expected.shape)}"
    if size != expected.size:
        return (f"{size} bytes, expected {expected.size} = {expected.header_size}-byte header + "
                f"{_dims(expected.shape)} bytes")
    return None


def gz_problem(path: Path, expected: IdxFile) -> str | None:
    """What makes the .gz at ``path`` differ from the published file (its md5), or None.

    Hashes the whole file (~11 MB for MNIST, ~31 MB for Fashion-MNIST) each time a .gz is used; a root that
    holds whole decompressed files is not hashed."""
    with open(path, "rb") as f:
        md5 = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    return None if md5 == expected.gz_md5 else f"md5 {md5} differs from the published {expected.gz_md5}"


def decompress(gz: Path, target: Path, expected: IdxFile) -> None:
    """Decompress ``gz`` into ``target``, checking the result is the whole ``expected`` file; raise DatasetError.

    The bytes go to a temporary file in target's folder that is renamed into place only once checked
    (``netzoo.files.atomic_write``), so a concurrent reader never sees half a file, and it is removed on any
    failure (a gzip fault, a full disk)."""
    def write(dst) -> None:
        with gzip.open(gz, "rb") as src:
            shutil.copyfileobj(src, dst)  # gzip checks the CRC and length of what it read at the end
        dst.flush()
        problem = idx_problem(Path(dst.name), expected)
        if problem is not None:
            raise corrupt(gz, f"it decompresses to {problem}")

    try:
        files.atomic_write(target, write)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # BadGzipFile is an OSError: caught first
        raise corrupt(gz, f"{type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"Cannot decompress {gz} into {target.parent}: {exc.strerror or exc}. Free space "
                           f"there or make it writable (the cache folder is $NETZOO_CACHE).") from None