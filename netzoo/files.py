"""Writing a file so that no reader ever sees half of it, and no failure leaves a temporary file behind.

Every write goes to a temporary name in the target's folder (``.tmp-<name>-<pid>-<random>``: pyarrow, pandas
and netzoo's readers skip names that start with a dot) and becomes the file in one atomic step:

- ``atomic_write(path, write)`` replaces ``path`` (``os.replace``);
- ``atomic_create(path, write)`` creates ``path`` only if nothing is there yet (``os.link``, which fails on an
  existing name: atomic on local filesystems and NFS), so a file created this way is never seen half-written;
- ``write_temp(path, write)`` only writes the temporary file and returns its name, for callers that rename it
  later themselves (``netzoo.compact``'s journal).

``write(f)`` receives a binary file object. On any failure (a full disk, a read-only folder, an exception in
``write``) the temporary file is removed and the error is raised; an OSError names the file being written
(not its temporary name).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_PREFIX = ".tmp-"
Writer = Callable[[BinaryIO], object]


def temp_name(path: Path) -> Path:
    """A fresh temporary name next to ``path``, unique across processes and hosts."""
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` instead of the temporary file it was raised for (same errno, same class)."""
    if exc.errno is None or exc.filename is None or not Path(exc.filename).name.startswith(TMP_PREFIX):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


@contextlib.contextmanager
def _removed_on_failure(tmp: Path, path: Path):
    """Inside: any failure removes ``tmp`` and re-raises (an OSError naming ``path``)."""
    try:
        yield
    except OSError as exc:
        _discard(tmp)
        raise _named(exc, path) from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(path: Path) -> None:
    """Remove ``path`` if it is there (a cleanup step: it never raises)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temp(path, write: Writer) -> Path:
    """Write a temporary file next to ``path`` with ``write(f)``; return its name (removed again on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with _removed_on_failure(tmp, path), open(tmp, "xb") as f:
        write(f)
    return tmp


def atomic_write(path, write: Writer) -> Path:
    """Replace ``path`` with what ``write(f)`` writes, atomically; return ``path``."""
    path = Path(path)
    tmp = write_temp(path, write)
    with _removed_on_failure(tmp, path):
        os.replace(tmp, path)
    return path


def atomic_write_text(path, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8), atomically; return ``path``."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_create(path, write: Writer) -> bool:
    """Create ``path`` with what ``write(f)`` writes, only if nothing is there: True if this call created it.

    The content is complete before the name appears (``os.link`` of a written temporary file). On a
    filesystem without hard links the file is created with ``O_EXCL`` and then written, so a reader may
    briefly see it empty.
    """
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        return _create_exclusive(path, tmp)
    finally:
        _discard(tmp)


def _create_exclusive(path: Path, written: Path) -> bool:
    """``atomic_create`` without hard links: O_EXCL, then copy ``written``'s bytes in."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(written.read_bytes())
    except BaseException:
        _discard(path)
        raise
    return True
