"""A machine-local cache of (size, mtime, inode) → sha256, so a no-op build hashes nothing.

A file rewritten within one timestamp tick, at the same size, keeps its (size, mtime). As git does
with its index, an entry is trusted only if the file's mtime is clearly older than the moment the
cache was last saved; a newer ("racily clean") one is hashed again, and settles with the next save.
Entries hashed or recorded during this run are trusted for the rest of it.

The files a plan will hash can be hashed ahead of it, on threads of their own (:meth:`StatCache.prefetch`):
hashlib lets go of the GIL while it hashes, so a fresh checkout's files are read and hashed on every
core while the planner works. What is decided does not change: a digest hashed ahead is used only
if the file still has the (size, mtime, inode, ctime) it had when the hashing began.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .cache import file_sha256
from .fsutil import atomic_write

STAT_VERSION = 2
RACY_NS = 1_000_000_000  # far above any local filesystem's timestamp granularity
PREFETCH_MIN_BYTES = 8 * 1024 * 1024  # below this, starting threads costs more than it saves
HASH_THREADS = 4  # at most; two at least, so that one reads while the other hashes


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


class StatCache:
    # rel → (the signature it had, its digest being computed), made by prefetch(): none until then
    # (splice.Stats, a stat cache without its file, does not call __init__).
    _ahead: dict[str, tuple[tuple[int, int, int, int], _Hashing]] | None = None

    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.path = path
        self.entries: dict[str, list[int | str]] = {}
        self.saved_ns = 0
        self.dirty = False
        self._fresh: set[str] = set()
        # Asked before a file is hashed: its sha256 if someone already verified it (gitcheck.py).
        self.vouch: Callable[[str, os.stat_result], str | None] | None = None
        try:
            data = json.loads(path.read_bytes())
            if data.get("version") == STAT_VERSION and isinstance(data["entries"], dict):
                self.entries = data["entries"]
                self.saved_ns = int(data["saved_ns"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # unknown or broken: start over, it is only a cache

    def digest(self, rel: str) -> str | None:
        """sha256 of the file at ``rel``, or None if it does not exist."""
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if self._trusted(rel, st):
            return str(self.entries[rel][3])
        sha = self._hashed_ahead(rel, st) or (self.vouch(rel, st) if self.vouch is not None else None) \
            or file_sha256(Path(full))
        self._remember(rel, st, sha)
        return sha

    def _trusted(self, rel: str, st: os.stat_result) -> bool:
        entry = self.entries.get(rel)
        return (type(entry) is list and len(entry) == 4 and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                and entry[2] == st.st_ino
                and (rel in self._fresh or st.st_mtime_ns < self.saved_ns - RACY_NS))

    def _hashed_ahead(self, rel: str, st: os.stat_result) -> str | None:
        """The digest prefetch() computed, if the file is still the one it hashed."""
        ahead = self._ahead.pop(rel, None) if self._ahead else None
        if ahead is None or ahead[0] != _signature(st):
            return None
        return ahead[1].result(rel)  # None if it failed: hashed again here, where its error is raised

    def prefetch(self, rels: Iterable[str]) -> None:
        """Start hashing the files among ``rels`` that :meth:`digest` would hash (neither trusted
        here nor vouched for), each on one of a few threads, when there is enough to hash for it
        to pay. digest() then takes each result, in whatever order it asks."""
        todo: list[tuple[str, os.stat_result]] = []
        size = 0
        ahead = self._ahead = self._ahead or {}
        for rel in dict.fromkeys(rels):
            try:
                st = os.stat(os.path.join(self.root, rel))
            except OSError:
                continue  # digest() says what it is
            if rel in ahead or self._trusted(rel, st):
                continue
            sha = self.vouch(rel, st) if self.vouch is not None else None
            if sha is not None:
                self._remember(rel, st, sha)
                continue
            todo.append((rel, st))
            size += st.st_size
        if size < PREFETCH_MIN_BYTES or len(todo) < 2:
            return
        threads = max(2, min(HASH_THREADS, os.cpu_count() or 1, len(todo)))
        hashing = _Hashing(self.root, [rel for rel, _ in todo], threads)
        for rel, st in todo:
            ahead[rel] = (_signature(st), hashing)

    def record(self, rel: str, sha256: str) -> None:
        """Remember the digest of a file the build has just written."""
        try:
            st = os.stat(os.path.join(self.root, rel))
        except OSError:
            return
        self._remember(rel, st, sha256)

    def _remember(self, rel: str, st: os.stat_result, sha256: str) -> None:
        self.entries[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, sha256]
        self._fresh.add(rel)
        self.dirty = True

    def forget(self, rel: str) -> None:
        if self.entries.pop(rel, None) is not None:
            self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.saved_ns = time.time_ns()
            data = {"version": STAT_VERSION, "saved_ns": self.saved_ns, "entries": self.entries}
            try:
                atomic_write(self.path, json.dumps(data, separators=(",", ":")).encode(), durable=False)
            except OSError as exc:
                if exc.filename is not None:
                    raise
                # A failed write() names no file: say which one, for the one-line message.
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            self.dirty = False


class _Hashing:
    """Files hashed in order on a few threads (daemons: they only read, and the process need not
    wait for them when it ends). Lighter to import than concurrent.futures, whose logging a check
    would not otherwise load."""

    def __init__(self, root: Path, rels: list[str], threads: int) -> None:
        self.root = root
        self._todo = iter(rels)
        self._take = threading.Lock()
        self._digests: dict[str, str | None] = {}
        self._done = {rel: threading.Event() for rel in rels}
        for _ in range(threads):
            threading.Thread(target=self._work, name="imgbuild-hash", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._take:
                rel = next(self._todo, None)
            if rel is None:
                return
            digest = None
            try:
                digest = file_sha256(Path(os.path.join(self.root, rel)))
            except Exception:  # noqa: BLE001 - whoever asks hashes it again, and sees the error itself
                pass
            finally:
                self._digests[rel] = digest
                self._done[rel].set()

    def result(self, rel: str) -> str | None:
        self._done[rel].wait()
        return self._digests[rel]
