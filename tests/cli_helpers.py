"""Run ``netzoo.cli.main`` in this process (so faults can be injected) and inject OS faults at the writes.

Tests run as root, where ``chmod`` does not stop a write: a read-only folder or a full disk is simulated by
making Python's ``open``/``os.open``/``os.fdopen`` (and pyarrow's Parquet writer, and the renames) raise the
OSError the kernel would raise for paths under a folder.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run ``netzoo ARGS`` through ``netzoo.cli.main``; return (exit code, stdout, stderr)."""
    from netzoo.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["netzoo", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single stderr line of a refused command (asserts there is exactly one, and no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _under(path, root: Path) -> bool:
    try:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(root)
    except TypeError:
        return False


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _FullFile(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails every write with ENOSPC, like a full disk."""

    def __init__(self, real, room: int, path: str) -> None:
        self.real, self.room, self.path = real, room, path

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            if self.room:
                self.real.write(data[: self.room])
                self.real.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        self.room -= len(data)
        return self.real.write(data)

    def close(self) -> None:
        self.real.close()
        super().close()

    def __getattr__(self, name):
        return getattr(self.real, name)


def disk_full(monkeypatch, root: Path, match: str = "", room: int = 7) -> None:
    """Every file opened for writing under ``root`` whose path contains ``match`` fills after ``room`` bytes."""
    root = Path(root).resolve()
    real_open, real_fdopen, real_write_table = builtins.open, os.fdopen, pq.write_table

    def hits(path) -> bool:
        return _under(path, root) and match in os.fspath(path)

    def full(real, path, mode, encoding):
        raw = _FullFile(real, room, os.fspath(path))
        if "b" in mode:
            return raw
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding or "utf-8", write_through=True)

    def binary(mode: str) -> str:
        return mode.replace("t", "") + ("" if "b" in mode else "b")

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wxa+") and hits(file):
            return full(real_open(file, binary(mode)), file, mode, kwargs.get("encoding"))
        return real_open(file, mode, *args, **kwargs)

    def fake_fdopen(fd, mode="r", *args, **kwargs):
        path = _fd_path(fd)
        if any(c in mode for c in "wxa+") and hits(path):
            return full(real_fdopen(fd, binary(mode)), path, mode, kwargs.get("encoding"))
        return real_fdopen(fd, mode, *args, **kwargs)

    def fake_write_table(table, where, *args, **kwargs):
        if isinstance(where, (str, os.PathLike)) and hits(where):
            with real_open(where, "wb") as f:
                f.write(b"PAR1" + b"\0" * room)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(where))
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text opens through io.open
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    monkeypatch.setattr(pq, "write_table", fake_write_table)


def read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> None:
    """Make every attempt to create, write, rename or delete a file under ``root`` fail with ``code``."""
    root = Path(root).resolve()
    real_open, real_os_open, real_write_table = builtins.open, os.open, pq.write_table
    real_replace, real_rename, real_link, real_unlink = os.replace, os.rename, os.link, os.unlink
    real_mkdir, real_utime = os.mkdir, os.utime

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wxa+") and _under(file, root):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and _under(path, root):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def two(real):
        def call(src, dst, *args, **kwargs):
            if _under(src, root) or _under(dst, root):
                refuse(dst)
            return real(src, dst, *args, **kwargs)
        return call

    def one(real):
        def call(path, *args, **kwargs):
            if _under(path, root):
                refuse(path)
            return real(path, *args, **kwargs)
        return call

    def fake_mkdir(path, *args, **kwargs):
        if _under(path, root) and not os.path.isdir(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_write_table(table, where, *args, **kwargs):
        if isinstance(where, (str, os.PathLike)) and _under(where, root):
            refuse(where)
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "replace", two(real_replace))
    monkeypatch.setattr(os, "rename", two(real_rename))
    monkeypatch.setattr(os, "link", two(real_link))
    monkeypatch.setattr(os, "unlink", one(real_unlink))
    monkeypatch.setattr(os, "utime", one(real_utime))
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(pq, "write_table", fake_write_table)


def leftovers(root: Path) -> list[str]:
    """Temporary files left anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob(".tmp-*"))
