"""Taking git's word for outputs it has already verified, so that a fresh clone's ``check`` does not
hash gigabytes.

A fresh clone has no ``.imgbuild/`` stat cache and every mtime is new: without help, every output
would be hashed again. But git has just written those files from its objects and recorded each
one's stat data (ctime, mtime, inode, size) in its index. The lock records each output's git blob id
beside its sha256 (``git_blob``, computed from the same bytes when they were stored). So an output
that git's index holds with that blob id, whose stat data is still what git recorded, and that was
not written in the same second as the index (git's own racily-clean rule, at whole seconds) has the
locked bytes: its sha256 is the lock's. That is the test git itself applies before it calls a
file unmodified; reading the stat data (``git ls-files --debug``) rather than asking ``git
ls-files -m`` spares git hashing again, with its slower SHA-1, the racily clean files of a fresh
checkout. Anything git cannot vouch for (not tracked, another blob, touched since, racily clean,
marked assume-unchanged or skip-worktree, no git on PATH, not a work tree) is hashed as before.

git is asked at most once a run, and only once hashing would cost more than asking it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

ASK_GIT_AFTER_BYTES = 4 * 1024 * 1024  # below this, hashing is cheaper than starting git twice
GIT_TIMEOUT_S = 60.0

Signature = tuple[int, int, int]


def _signature(st: os.stat_result) -> Signature:
    return st.st_size, st.st_mtime_ns, st.st_ino


class GitVouch:
    """Called by the stat cache before it hashes a file: the file's sha256 if git vouches for it."""

    def __init__(self, root: Path, lock_targets: Mapping[str, Mapping[str, Any]]) -> None:
        self.root = root
        self.lock_targets = lock_targets
        self._vouched: dict[str, tuple[Signature, str]] | None = None
        self._pending_bytes = 0
        self._lock = threading.Lock()  # the executor's threads hash too

    def __call__(self, rel: str, st: os.stat_result) -> str | None:
        with self._lock:
            if self._vouched is None:
                self._pending_bytes += st.st_size
                if self._pending_bytes < ASK_GIT_AFTER_BYTES:
                    return None
                # list(): a snapshot, taken at once, of entries the build may replace meanwhile
                self._vouched = vouched_outputs(self.root, _locked_blobs(list(self.lock_targets.values())))
            found = self._vouched.get(rel)
        if found is not None and found[0] == _signature(st):
            return found[1]
        return None


def _locked_blobs(entries: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str, int]]:
    """path → (git blob id, sha256, bytes) of every locked output that has a blob id."""
    blobs = {}
    for entry in entries:
        for o in entry.get("outputs", []):
            path, blob, sha, size = o.get("path"), o.get("git_blob"), o.get("sha256"), o.get("bytes")
            if isinstance(path, str) and isinstance(blob, str) and isinstance(sha, str) and isinstance(size, int):
                blobs[path] = (blob, sha, size)
    return blobs


def vouched_outputs(root: Path, blobs: Mapping[str, tuple[str, str, int]]) -> dict[str, tuple[Signature, str]]:
    """path → (signature, sha256) of the outputs git vouches for: its index holds each with the
    locked blob id and with the stat data the file still has, recorded well before the index was
    written (else git itself would look at the bytes again: racily clean)."""
    git = shutil.which("git")
    if git is None or not blobs:
        return {}
    index_path = _git(git, root, "rev-parse", "--git-path", "index")
    if index_path is None:
        return {}  # not a work tree
    listing = _git(git, root, "ls-files", "-s", "-v", "--debug", "-z", "--", ".")
    if listing is None:
        return {}
    try:
        index_mtime_ns = os.stat(os.path.join(root, index_path.strip())).st_mtime_ns
    except OSError:
        return {}
    vouched = {}
    for rel, fields, debug in _entries(listing):
        # "H" is a plain tracked entry: lowercase tags are assume-unchanged, "S" skip-worktree
        # (git does not look at those files), a stage other than 0 a conflict.
        locked = blobs.get(rel)
        if (locked is None or len(fields) != 4 or fields[0] != "H" or fields[1] not in ("100644", "100755")
                or fields[3] != "0" or fields[2] != locked[0]):
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError:
            continue
        recorded = (debug.get("ctime"), debug.get("mtime"), debug.get("ino"), debug.get("size"))
        now = (_sec_ns(st.st_ctime_ns), _sec_ns(st.st_mtime_ns), str(st.st_ino & 0xFFFFFFFF),
               str(st.st_size & 0xFFFFFFFF))
        # Racily clean, as git says when it compares whole seconds: written in the second the index
        # was, it may have changed within the same tick after git looked.
        racy = st.st_mtime_ns // 1_000_000_000 >= index_mtime_ns // 1_000_000_000
        if recorded != now or st.st_size != locked[2] or racy:
            continue
        vouched[rel] = (_signature(st), locked[1])
    return vouched


def _sec_ns(ns: int) -> str:
    return f"{ns // 1_000_000_000}:{ns % 1_000_000_000}"


def _entries(listing: str) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(path, [tag, mode, blob, stage], stat data) of each entry of `git ls-files -s -v --debug -z`:
    "H 100644 <blob> 0\t<path>\0" then lines "  ctime: s:ns", "  mtime: s:ns", "  dev: d\tino: i",
    "  uid: u\tgid: g", "  size: n\tflags: f"."""
    chunks = listing.split("\0")
    header = chunks[0]
    for chunk in chunks[1:]:
        end = chunk.find("\n", chunk.find("flags:"))
        if end < 0:
            return
        debug = {}
        for item in chunk[:end].replace("\t", "\n").split("\n"):
            key, _, value = item.strip().partition(": ")
            debug[key] = value
        head, _, rel = header.partition("\t")
        yield rel, head.split(" "), debug
        header = chunk[end + 1:]


def _git(git: str, root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run([git, *args], cwd=root, capture_output=True, timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None  # not a work tree, or git cannot read it: hash as before
    return proc.stdout.decode("utf-8", "surrogateescape")
