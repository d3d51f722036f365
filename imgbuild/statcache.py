"""A machine-local cache of (size, mtime, inode) → sha256, so a no-op build hashes nothing.

A file rewritten within one timestamp tick, at the same size, keeps its (size, mtime). As git does
with its index, an entry is trusted only if the file's mtime is clearly older than the moment the
cache was last saved; a newer ("racily clean") one is hashed again, and settles with the next save.
Entries hashed or recorded during this run are trusted for the rest of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from .cache import file_sha256
from .fsutil import atomic_write

STAT_VERSION = 2
RACY_NS = 1_000_000_000  # far above any local filesystem's timestamp granularity


class StatCache:
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
        entry = self.entries.get(rel)
        if (type(entry) is list and len(entry) == 4 and entry[0] == st.st_size and entry[1] == st.st_mtime_ns
                and entry[2] == st.st_ino
                and (rel in self._fresh or st.st_mtime_ns < self.saved_ns - RACY_NS)):
            return str(entry[3])
        sha = (self.vouch(rel, st) if self.vouch is not None else None) or file_sha256(Path(full))
        self._remember(rel, st, sha)
        return sha

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
