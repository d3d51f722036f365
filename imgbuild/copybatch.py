"""Restoring outputs from the cache in batches: one sync for many files, one folder check per batch.

Restoring 10,000 deleted outputs used to cost, per file, a task and a thread hand-off, opening and
checking the output folder, an ``fsync`` (a journal commit of its own) and a rename. Here the
restores that become ready together are handed to one thread as a batch (:class:`BatchedRestores`),
which copies every file of the batch into a temp file beside its destination, makes them all
durable at once (:func:`sync_files`: one ``syncfs`` on Linux, an ``fsync`` per file elsewhere),
and only then renames each into place. The order is the one :func:`fsutil.atomic_copy` keeps for
a single file — the data are on disk before the name points at them — so a restored output that
a power cut catches is the old state (absent) or the whole file, never an empty file that would
look edited by hand. The folders' own fsync is left to the lock writer (:class:`fsutil.DirSyncs`),
as before: it runs before the lock that names the outputs is written.

A killed process leaves temp files named as fsutil names them (``.imgbuild-tmp-<pid>-…``); the
next build deletes them (fsutil.remove_leftovers) and restores the outputs again.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .fsutil import _DIR_FD, _O_NOFOLLOW, DirSyncs, _atomic, _fsync_fd, _open_folder, _temp_name

if TYPE_CHECKING:  # loaded by BatchedRestores, the executor's: a batch of one (sequential.py) needs neither
    import asyncio

BATCH = 64  # restores per batch: enough to share one sync, few enough to keep the outputs coming
THREADS = 8  # batches copied at once: the copies wait on the disk and the journal, not the CPU
IN_FLIGHT = BATCH * THREADS * 2  # restores the executor starts before earlier ones finish

Source = Callable[[], int]  # opens the bytes to copy: a read-only descriptor the copy closes


def _copy_into(source: Source, out: BinaryIO) -> None:
    src = source()
    try:
        while chunk := os.read(src, 1 << 20):
            out.write(chunk)
    finally:
        os.close(src)


class _Copy:
    __slots__ = ("owner", "folder", "dfd", "temp", "dest", "fd", "describe")

    def __init__(self, owner: str, folder: Path, dfd: int, temp: str, dest: Path, fd: int,
                 describe: Callable[[OSError], Exception]) -> None:
        self.owner, self.folder, self.dfd, self.temp, self.dest, self.fd = owner, folder, dfd, temp, dest, fd
        self.describe = describe


class CopyBatch:
    """Copies made durable together. Each owner (a target being restored) adds its copies and what
    to do once they are in place (:meth:`then`) inside :meth:`run`; :meth:`commit` syncs every temp
    file at once, renames them into place and runs the owners' follow-ups. An owner whose copy fails
    loses its copies (no half-restored target) and gets the error; the others go on."""

    def __init__(self, dirs: DirSyncs | None = None) -> None:
        self.dirs = dirs
        self._folders: dict[Path, int] = {}  # opened and checked once per batch
        self._copies: list[_Copy] = []
        self._then: list[tuple[str, Callable[[], None]]] = []
        self._owner = ""
        self.errors: dict[str, Exception] = {}

    def run(self, owner: str, work: Callable[[CopyBatch], None]) -> None:
        self._owner = owner
        mark = len(self._copies), len(self._then)
        try:
            work(self)
        except Exception as exc:
            self._drop(mark)
            self.errors[owner] = exc

    def copy(self, source: Source, dest: Path, describe: Callable[[OSError], Exception], *, mode: int = 0o644) -> None:
        """Copy the bytes ``source`` opens (the cache's :meth:`~imgbuild.cache.CacheStore.open_object`,
        say) into a temp file beside ``dest`` (renamed at :meth:`commit`). An OSError is raised as
        ``describe`` makes it, now or at the commit."""
        if not _DIR_FD:  # no folder descriptors here (Windows): one durable copy at a time, by path
            try:
                _atomic(dest, lambda out: _copy_into(source, out), durable=True, mode=mode, dirs=self.dirs)
            except OSError as exc:
                raise describe(exc) from exc
            return
        try:
            folder = dest.parent
            dfd = self._folders.get(folder)
            if dfd is None:
                dfd = self._folders[folder] = _open_folder(folder, True)
            temp = _temp_name()
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, mode, dir_fd=dfd)
        except OSError as exc:
            exc.filename = str(dest)
            raise describe(exc) from exc
        self._copies.append(_Copy(self._owner, folder, dfd, temp, dest, fd, describe))
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)  # the mode asked for, whatever the umask
            src = source()
            try:
                _copy_data(src, fd)
            finally:
                os.close(src)
        except OSError as exc:
            if not exc.filename:
                exc.filename = str(dest)
            raise describe(exc) from exc

    def then(self, action: Callable[[], None]) -> None:
        """Run ``action`` (in :meth:`commit`) once every copy of the current owner is in place."""
        self._then.append((self._owner, action))

    def commit(self) -> dict[str, Exception]:
        """Sync, rename, follow up; returns the errors by owner. Closes everything it opened."""
        try:
            copies = [c for c in self._copies if c.owner not in self.errors]
            try:
                sync_files([c.fd for c in copies], list(self._folders.values()))
            except OSError as exc:  # nothing is renamed: every owner keeps its old state
                for c in copies:
                    self.errors.setdefault(c.owner, c.describe(exc))
                copies = []
            for c in copies:
                os.close(c.fd)
                c.fd = -1
                if c.owner in self.errors:
                    continue
                try:
                    os.rename(c.temp, c.dest.name, src_dir_fd=c.dfd, dst_dir_fd=c.dfd)
                    c.temp = ""
                except OSError as exc:
                    exc.filename = str(c.dest)
                    self.errors[c.owner] = c.describe(exc)
            renamed = {c.folder: c.dfd for c in copies if not c.temp}
            for folder, dfd in renamed.items():
                if self.dirs is not None:
                    self.dirs.add(folder)  # synced with the others before the lock that names it
                else:
                    _fsync_fd(dfd)
            for owner, action in self._then:
                if owner not in self.errors:
                    try:
                        action()
                    except Exception as exc:
                        self.errors[owner] = exc
            return self.errors
        finally:
            self._drop((0, 0))
            for dfd in self._folders.values():
                os.close(dfd)
            self._folders.clear()

    def _drop(self, mark: tuple[int, int]) -> None:
        """Forget the copies and follow-ups after ``mark``, deleting their temp files."""
        for c in self._copies[mark[0]:]:
            if c.fd >= 0:
                os.close(c.fd)
            if c.temp:
                with contextlib.suppress(OSError):
                    os.unlink(c.temp, dir_fd=c.dfd)
        del self._copies[mark[0]:]
        del self._then[mark[1]:]


def _copy_data(src: int, dst: int) -> None:
    """Copy a whole file between descriptors in the kernel (no buffer in Python), else by reads."""
    if sys.platform != "linux":  # elsewhere sendfile may want a socket to write to
        _copy_by_reads(src, dst)
        return
    try:
        size = os.fstat(src).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(dst, src, offset, size - offset)
            if sent == 0:
                break
            offset += sent
        if offset == size and os.fstat(src).st_size == size:
            return
        os.lseek(src, 0, os.SEEK_SET)  # the source grew or shrank: copy what it holds now
        os.ftruncate(dst, 0)
        os.lseek(dst, 0, os.SEEK_SET)
    except OSError as exc:
        if exc.errno not in _NO_SENDFILE:
            raise
        os.lseek(src, 0, os.SEEK_SET)
        os.ftruncate(dst, 0)
        os.lseek(dst, 0, os.SEEK_SET)
    _copy_by_reads(src, dst)


def _copy_by_reads(src: int, dst: int) -> None:
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]


_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def sync_files(fds: list[int], folders: list[int]) -> None:
    """Make the data of every open file in ``fds`` durable. On Linux with more than one file: one
    ``syncfs`` per file system (one journal commit for them all, where an fsync each commits once
    per file); it reports write-back errors since Linux 5.8, and the files are fsynced one by one
    where it is missing or fails. Raises OSError if a file cannot be made durable."""
    if not fds:
        return
    syncfs = _syncfs() if len(fds) > 1 else None
    if syncfs is not None:
        devices: dict[int, int] = {}
        for dfd in folders:
            devices.setdefault(os.fstat(dfd).st_dev, dfd)
        # A file created in a folder lives on that folder's file system: these cover them all.
        if all(syncfs(dfd) == 0 for dfd in devices.values()):
            return
    for fd in fds:
        os.fsync(fd)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs, looked up when first needed (ctypes costs a few ms of every start)."""
    if sys.platform != "linux":
        return None
    try:  # before 5.8, syncfs did not report write-back errors: an fsync each then
        if tuple(int(p) for p in os.uname().release.split(".")[:2]) < (5, 8):
            return None
    except ValueError:
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None



class BatchedRestores:
    """The executor's side: ``await restore(decision)`` returns once that target's outputs are in
    place and recorded (or raises its error). The restores started in one turn of the event loop
    are cut into batches of :data:`BATCH` and run by :data:`THREADS` threads."""

    def __init__(self, restore: Callable[[Any, CopyBatch], None], dirs: DirSyncs,
                 initializer: Callable[[], None] | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._restore = restore
        self._dirs = dirs
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="imgbuild-restore", initializer=initializer)
        self._pending: list[tuple[Any, asyncio.Future[None]]] = []

    async def restore(self, decision: Any) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush, loop)  # after the other restores started in this turn
        self._pending.append((decision, future))
        await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), BATCH):
            chunk = pending[i:i + BATCH]
            done = loop.run_in_executor(self._pool, self._run, [d for d, _ in chunk])
            done.add_done_callback(lambda f, chunk=chunk: _settle(f, chunk))  # type: ignore[misc]

    def _run(self, decisions: list[Any]) -> dict[str, Exception]:
        batch = CopyBatch(self._dirs)
        for decision in decisions:
            batch.run(decision.name, lambda b, d=decision: self._restore(d, b))  # type: ignore[misc]
        return batch.commit()

    def shutdown(self) -> None:
        self._pool.shutdown()


def _settle(done: asyncio.Future[dict[str, Exception]], chunk: list[tuple[Any, asyncio.Future[None]]]) -> None:
    import asyncio

    errors: dict[str, Exception] = {}
    failure: BaseException | None = done.exception() if not done.cancelled() else asyncio.CancelledError()
    if failure is None:
        errors = done.result()
    for decision, future in chunk:
        if future.done():
            continue
        error = failure or errors.get(decision.name)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)
