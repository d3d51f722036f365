"""A machine-local cache of (size, mtime, inode) → sha256, so a no-op build hashes nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .cache import file_sha256
from .fsutil import atomic_write

STAT_VERSION = 2
# A file written again within the same timestamp tick, at the same size, keeps its (size, mtime):
# like git's "racily clean" entries, an entry recorded less than this after the file's mtime is
# not trusted, and the file is hashed again (and the entry then settles).
RACY_NS = 2_000_000_000


def _settled(entry: list[int | str]) -> bool:
    return len(entry) > 4 and int(entry[4]) - int(entry[1]) > RACY_NS


class StatCache:
    def __init__(self, root: Path, path: Path) -> None:
        self.root = root
        self.path = path
        self.entries: dict[str, list[int | str]] = {}
        self.dirty = False
        try:
            data = json.loads(path.read_bytes())
            if data.get("version") == STAT_VERSION:
                self.entries = data["entries"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # unknown or broken: start over, it is only a cache

    def digest(self, rel: str) -> str | None:
        """sha256 of the file at ``rel``, or None if it does not exist."""
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        key = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(rel)
        if entry is not None and entry[:3] == key and _settled(entry):
            return str(entry[3])
        sha = file_sha256(Path(full))
        self.entries[rel] = [*key, sha, time.time_ns()]
        self.dirty = True
        return sha

    def record(self, rel: str, sha256: str) -> None:
        """Remember the digest of a file the build has just written."""
        try:
            st = os.stat(os.path.join(self.root, rel))
        except OSError:
            return
        self.entries[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, sha256, time.time_ns()]
        self.dirty = True

    def forget(self, rel: str) -> None:
        if self.entries.pop(rel, None) is not None:
            self.dirty = True

    def save(self) -> None:
        if self.dirty:
            data = json.dumps({"version": STAT_VERSION, "entries": self.entries}, separators=(",", ":"))
            atomic_write(self.path, data.encode(), durable=False)
            self.dirty = False
