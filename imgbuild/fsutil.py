"""Atomic, confined file writes.

Atomic: a temp file in the same folder, fsync, rename. A reader sees the old file or the new one,
never half of either, whatever happens to the process.

Confined: imgbuild writes only inside the project root and the cache. A manifest is untrusted
input, and a folder on the way to a file can be a symlink that leads out, or be swapped for one
while a build runs. So each write opens its folder once, checks that the real path of that open
folder lies inside a root imgbuild writes to, and then creates, renames or deletes through the open
folder (``dir_fd``): a swap after the check changes nothing, the write lands in the folder checked.
Folders that must be created are made one level at a time, never following a symlink.

Temp files are named ``.imgbuild-tmp-<pid>-<random>``: a later build tells a killed build's
leftovers (no such process) from a running build's files, and deletes only the former.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UnsafePath

TEMP_PREFIX = ".imgbuild-tmp-"
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FD = {os.open, os.mkdir, os.rename, os.unlink} <= os.supports_dir_fd
# Real paths imgbuild may write under: every project root and cache opened in this process. A
# process-wide set (not a parameter of every write) so that any module writing through here is
# confined without knowing which root it is in.
_ROOTS: set[str] = set()


def allow_writes_under(root: Path) -> str:
    """Let this process write inside ``root`` (its real path). Returns that real path."""
    real = os.path.realpath(root)
    _ROOTS.add(real)
    return real


def is_inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _display(folder: Path) -> str:
    text = str(folder)
    for root in sorted(_ROOTS, key=len, reverse=True):
        if is_inside(text, root) and text != root:
            return os.path.relpath(text, root)
    return text


def check_folder(folder: Path, fd: int | None = None, missing: tuple[str, ...] = ()) -> None:
    """Raise UnsafePath unless ``folder`` / ``missing`` (subfolders about to be made) lies inside a
    root this process writes to, and the open ``fd``, when given, is that very ``folder``."""
    if not _ROOTS:
        return
    real = os.path.realpath(folder)
    if not any(is_inside(os.path.join(real, *missing), root) for root in _ROOTS):
        raise UnsafePath(f"{_display(folder)} leads to {real}, outside the project and the cache: nothing is "
                         "written or read through it; replace the link with a real folder")
    if fd is not None:
        try:
            st, now = os.fstat(fd), os.stat(real)
            same = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
        except OSError:
            same = False
        if not same:
            raise UnsafePath(f"{_display(folder)} was replaced while imgbuild wrote to it; nothing was written "
                             "there: build again")


def _open_folder(folder: Path, create: bool) -> int:
    folder = Path(os.path.abspath(folder))
    missing: list[str] = []
    base = folder
    while True:
        try:
            fd = os.open(base, os.O_RDONLY | _O_DIRECTORY)
            break
        except FileNotFoundError:
            if not create or base.parent == base:
                raise
            missing.append(base.name)
            base = base.parent
    try:
        check_folder(base, fd, tuple(reversed(missing)))
        for name in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=fd)
            # Never through a symlink someone put there since: O_NOFOLLOW refuses it.
            sub = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_folder(folder: Path, *, create: bool = True) -> Iterator[int | None]:
    """The folder, checked and open (None where the platform has no ``dir_fd``: path-based then)."""
    if not _DIR_FD:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        check_folder(folder)
        yield None
        return
    fd = _open_folder(folder, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _fsync_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        _fsync_fd(fd)
    finally:
        os.close(fd)


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"


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


def _atomic(path: Path, write: Callable[[BinaryIO], None], durable: bool, mode: int = 0o644,
            dirs: DirSyncs | None = None) -> None:
    with open_folder(path.parent) as dfd:
        name = _temp_name() if dfd is not None else str(path.parent / _temp_name())
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, mode, dir_fd=dfd)
        except OSError as exc:
            exc.filename = str(path)  # the file meant, not its temporary name relative to a folder
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), mode)  # the mode asked for, whatever the umask
                write(f)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.rename(name, path.name if dfd is not None else path, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            if isinstance(exc, OSError) and not exc.filename:
                exc.filename = str(path)  # a full disk says so on write(): name the file meant
            raise
        if durable and dirs is not None:
            dirs.add(path.parent)  # synced with the others before the lock that names it
        elif durable and dfd is not None:
            _fsync_fd(dfd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    _atomic(path, lambda f: f.write(data), durable)  # type: ignore[arg-type, return-value]


def atomic_write_parts(path: Path, parts: Iterable[bytes | memoryview], *, durable: bool = True) -> None:
    """:func:`atomic_write` of the pieces one after another, never joined in memory."""

    def write(out: BinaryIO) -> None:
        for part in parts:
            out.write(part)

    _atomic(path, write, durable)


def rewrite_cache_file(path: Path, parts: Iterable[bytes | memoryview]) -> None:
    """A machine-local cache file (a state in ``.imgbuild/``) written anew, not durably: the old
    one is deleted first, so that the rename replaces no file, which on ext4 (auto_da_alloc)
    writes the new file's data out at once (measured: ~3 ms for 3 MB). A reader may find no file
    for that moment, which a cache's reader takes for no cache."""
    with contextlib.suppress(FileNotFoundError):
        remove(path)
    atomic_write_parts(path, parts, durable=False)


def atomic_copy(source: Path, dest: Path, *, mode: int = 0o644, dirs: DirSyncs | None = None) -> None:
    """Copy ``source`` to ``dest`` atomically (streamed, never held in memory). With ``dirs``,
    the folder's fsync is left to its next :meth:`DirSyncs.flush`."""

    def copy(out: BinaryIO) -> None:
        with open(source, "rb") as src:
            import shutil

            shutil.copyfileobj(src, out, 1024 * 1024)

    _atomic(dest, copy, durable=True, mode=mode, dirs=dirs)


def move_into(source: Path, dest: Path) -> None:
    """Rename ``source`` to ``dest`` in a confined folder; across file systems, copy then delete."""
    with open_folder(dest.parent) as dfd:
        try:
            os.rename(source, dest.name if dfd is not None else dest, dst_dir_fd=dfd)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
    atomic_copy(source, dest, mode=os.stat(source).st_mode & 0o777)
    os.unlink(source)


def remove(path: Path) -> None:
    """Delete a file, only inside the project or the cache (never through a symlinked folder)."""
    with open_folder(path.parent, create=False) as dfd:
        os.unlink(path.name if dfd is not None else path, dir_fd=dfd)


def remove_leftovers(folders: Iterable[Path]) -> int:
    """Delete the temp files killed processes left in ``folders``; returns how many."""
    removed = 0
    for folder in folders:
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX) and not _writer_alive(entry.name):
                    with contextlib.suppress(OSError):
                        if entry.is_file(follow_symlinks=False):
                            os.unlink(entry.path)
                            removed += 1
    return removed


def _writer_alive(name: str) -> bool:
    pid_text = name[len(TEMP_PREFIX):].split("-", 1)[0]
    if not pid_text.isdigit():
        return False  # an older imgbuild's name; the caller holds the project's run lock
    pid = int(pid_text)
    if pid == os.getpid() or os.name != "posix":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, someone else's
    return True

