"""Taking git's word for outputs it has already verified, so that a fresh clone's ``check`` does not
hash gigabytes.

A fresh clone has no ``.imgbuild/`` stat cache and every mtime is new: without help, every output
would be hashed again. But git has just written those files and recorded their stat data in its
index, and ``git ls-files -m`` lists the ones that changed since (git compares stat data, and the
bytes where the stat data cannot tell: its own racily-clean rule). The lock records each output's
git blob id beside its sha256 (``git_blob``, computed from the same bytes when they were stored).
So an output that git's index holds with that blob id, that git does not list as modified, and
whose (size, mtime, inode) have not moved while we asked, has the locked bytes: its sha256 is the
lock's. Anything git cannot vouch for (not tracked, another blob, modified, marked assume-unchanged
or skip-worktree, no git on PATH, not a work tree) is hashed as before.

git is asked at most once a run, and only once hashing would cost more than asking it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
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
    """path → (signature when git was asked, sha256) of the outputs git vouches for."""
    git = shutil.which("git")
    if git is None or not blobs:
        return {}
    before = {}
    for rel in blobs:
        try:
            before[rel] = _signature(os.lstat(os.path.join(root, rel)))
        except OSError:
            continue
    index = _git(git, root, "ls-files", "-s", "-v", "-z", "--", ".")
    modified = _git(git, root, "ls-files", "-m", "-z", "--", ".")
    if index is None or modified is None:
        return {}
    changed = set(modified.split("\0"))
    vouched = {}
    for record in index.split("\0"):
        head, _, rel = record.partition("\t")
        fields = head.split(" ")
        # "H" is a plain tracked entry: lowercase tags are assume-unchanged, "S" skip-worktree
        # (git does not look at those files), a stage other than 0 a conflict.
        if len(fields) != 4 or fields[0] != "H" or fields[1] not in ("100644", "100755") or fields[3] != "0":
            continue
        locked = blobs.get(rel)
        sig = before.get(rel)
        if locked is None or sig is None or rel in changed or fields[2] != locked[0] or sig[0] != locked[2]:
            continue
        try:
            if _signature(os.lstat(os.path.join(root, rel))) != sig:
                continue  # moved while git looked: hash it
        except OSError:
            continue
        vouched[rel] = (sig, locked[1])
    return vouched


def _git(git: str, root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run([git, *args], cwd=root, capture_output=True, timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None  # not a work tree, or git cannot read it: hash as before
    return proc.stdout.decode("utf-8", "surrogateescape")
