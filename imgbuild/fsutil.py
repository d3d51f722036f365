"""Atomic file writes: a temp file in the same folder, fsync, rename. A reader sees the old file or
the new one, never half of either, whatever happens to the process."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".imgbuild-tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DirSyncs:
    """Folders whose new entries still need an fsync. A build writing 10,000 outputs into one
    folder syncs that folder once before the lock that names them is written, not 10,000 times."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._pending: set[Path] = set()

    def add(self, folder: Path) -> None:
        with self._mutex:
            self._pending.add(folder)

    def flush(self) -> None:
        with self._mutex:
            pending, self._pending = self._pending, set()
        for folder in sorted(pending):
            _fsync_dir(folder)


def _atomic(path: Path, write: Callable[[BinaryIO], None], durable: bool, dirs: DirSyncs | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    if durable and dirs is not None:
        dirs.add(path.parent)
    elif durable:
        _fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    _atomic(path, lambda f: f.write(data), durable)  # type: ignore[arg-type, return-value]


def atomic_copy(source: Path, dest: Path, *, dirs: DirSyncs | None = None) -> None:
    """Copy ``source`` to ``dest`` atomically (streamed, never held in memory). With ``dirs``,
    the folder's fsync is left to its next :meth:`DirSyncs.flush`."""

    def copy(out: BinaryIO) -> None:
        with source.open("rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)

    _atomic(dest, copy, durable=True, dirs=dirs)


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
