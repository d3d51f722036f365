"""The scoped path's writes (scoped.py): the lock with a few entries replaced in its text, and the
no-op and change states spliced for the next run, as a full run would record them.
"""

from __future__ import annotations

import marshal
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import fastpath
from .fsutil import atomic_write_parts
from .lockfile import Lock
from .statcache import StatCache

if TYPE_CHECKING:
    from .target import Target

ENTRY_HEADER = re.compile(rb'\n\[targets\.(?:[A-Za-z0-9_-]+|"[^"\n]*")\]\n')


@dataclass
class Found:
    """What the scoped path found when it prepared (scoped.py), and what its writes here need:
    the states, the new manifest, and the scoped targets in build order."""

    root: str
    manifest_path: str
    state_dir: str
    noop: tuple[Any, ...]  # fastpath's state, as read
    state: tuple[Any, ...]  # this module's state, as read
    new: bytes  # the manifest's bytes now
    new_sizes: tuple[int, ...]  # each table's length in them
    fresh: dict[str, Target]  # the tables edited, resolved again
    targets: dict[str, Target]  # they and their readers, in build order
    deps: dict[str, list[str]]
    lock: bytes  # the lock's bytes, as recorded
    lock_digest: str  # their sha256, as recorded
    lock_path: str
    settings: dict[str, Any]
    count: int  # targets in the manifest
    check: Any = None  # fastpath.StatCheck of every other file, answered before anything is written


def discard(path: Any) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Stats(StatCache):
    """The stat cache without its file: the scoped targets' files are hashed (a few), and the
    10,000-entry file is neither read nor written (the full path hashes again what changed)."""

    def __init__(self, root: Any) -> None:  # noqa: super().__init__ would read the file
        self.root = root
        self.path = root / fastpath.STATE_DIR / "stat.json"
        self.entries = {}
        self.saved_ns = 0
        self.dirty = False
        self._fresh = set()
        self.vouch = None

    def save(self) -> None:
        pass


class SplicedLock(Lock):
    """The lock with the scoped targets' entries only: parsed from their text, and written back by
    replacing that text in the lock's bytes (the other entries' text is written from slices of what
    was read, never copied in memory)."""

    def __init__(self, path: Any, state_dir: Any, data: bytes, digest: str, names: list[str]) -> None:
        import tomllib

        from .lockfile import _toml_key, entry_problem

        super().__init__(path, state_dir)
        self.problem: str | None = None
        self._data = data
        self._spans: dict[str, tuple[int, int]] = {}
        for name in names:
            start = data.find(f"\n[targets.{_toml_key(name)}]\n".encode())
            if start < 0:
                self.problem = "a target the lock lacks"
                return
            end_match = ENTRY_HEADER.search(data, start + 1)
            end = end_match.start() if end_match else len(data)
            try:
                entry = tomllib.loads(data[start + 1:end].decode("utf-8"))["targets"][name]
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError):
                self.problem = "a lock entry that does not parse"
                return
            if entry_problem(entry) is not None:
                self.problem = "a lock entry of the wrong shape"
                return
            self.targets[name] = entry
            self._spans[name] = (start + 1, end)
        self._original = dict(self.targets)
        self._replaced: dict[str, dict[str, Any]] = {}  # what the last _serialized put in place of their text
        self._written: dict[str, dict[str, Any]] = {}  # the same, for the bytes on disk
        # The sha256 of ``data``, as the change state recorded it with the lock's signature (or as
        # the check of a racily clean lock verified it): 8 MB are not hashed again to learn it.
        self._saved_digest = self._read_digest = digest

    def _serialized(self, snapshot: dict[str, dict[str, Any]] | None) -> list[bytes | memoryview]:
        import tomli_w

        from .lockfile import _sorted

        snapshot = dict(self.targets) if snapshot is None else snapshot
        text = memoryview(self._data)
        parts: list[bytes | memoryview] = []
        self._replaced = {}
        at = 0
        for name, (start, end) in sorted(self._spans.items(), key=lambda item: item[1]):
            entry = snapshot[name]
            if entry is self._original[name] or entry == self._original[name]:
                continue  # its text as read
            parts += [text[at:start], tomli_w.dumps({"targets": {name: _sorted(entry)}}).encode()]
            self._replaced[name] = entry
            at = end
        parts.append(text[at:])
        return parts

    def _write(self, parts: list[bytes | memoryview]) -> tuple[str, bool]:
        """As the lock writes itself, but knowing without a digest whether the bytes are those on
        disk (the same entries in place of the same spans: the rest is the text read), and taking
        the digest in a thread while the bytes are written (both let go of the GIL): 8 MB hashed
        is a quarter of a one-target change's write."""
        import threading

        from .lockfile import sha256_of

        if self._replaced == self._written:
            return self.saved_digest(), False
        digests: list[str] = []
        hashing = threading.Thread(target=lambda: digests.append(sha256_of(parts)), name="imgbuild-lock-digest")
        hashing.start()
        try:
            atomic_write_parts(self.path, parts)
        finally:
            hashing.join()
        self._written = dict(self._replaced)
        return digests[0], True

    def dumps(self, snapshot: dict[str, dict[str, Any]] | None = None) -> bytes:
        return b"".join(self._serialized(snapshot))

    def saved_digest(self) -> str:
        if self._saved_digest is None:
            raise OSError("no lock written")
        return self._saved_digest

    def _write_json_copy(self, digest: str) -> None:
        """The lock's machine-local copy: its delta grows by these entries (lockfile's format)."""
        from .fsutil import atomic_write
        from .lockfile import COPY_FILE, DELTA_FILE, DELTA_MAX, LOCK_VERSION

        old = self._read_digest
        try:
            try:
                delta = marshal.loads((self.state_dir / DELTA_FILE).read_bytes())
            except OSError:
                delta = None
            if isinstance(delta, dict) and delta.get("sha256") == old:
                base, entries, removed = delta["base"], dict(delta["set"]), list(delta["removed"])
            else:
                with open(self.state_dir / COPY_FILE, "rb") as f:
                    head = f.read(256)
                if old.encode() not in head:
                    return  # no copy of the lock this one extends: the full path writes one
                base, entries, removed = old, {}, []
            entries.update({n: e for n, e in self.targets.items() if e is not self._original[n]})
            if len(entries) + len(removed) > DELTA_MAX:
                discard(self.state_dir / DELTA_FILE)  # the full path writes the whole copy again
                return
            atomic_write(self.state_dir / DELTA_FILE, marshal.dumps(
                {"version": LOCK_VERSION, "base": base, "sha256": digest, "set": entries, "removed": removed}),
                durable=False)
            self._json_digest = digest
        except (OSError, ValueError, EOFError, TypeError, KeyError):
            pass  # only a speed-up


def _written(root: str, rel: str, stats: Stats) -> list[int]:
    """The (size, mtime, inode) of an output as the build wrote it (the executor records each
    output's signature and digest as it writes it); OSError if the file changed since."""
    st = os.lstat(os.path.join(root, rel))
    sig = [st.st_size, st.st_mtime_ns, st.st_ino]
    entry = stats.entries.get(rel)
    if entry is None or list(entry[:3]) != sig:
        raise OSError(f"{rel} changed since it was written")
    return sig


def _racy_digest(root: str, rel: str, stats: Stats) -> str:
    """The sha256 of an output the build wrote, from the bytes on disk, which must be the very
    bytes the build wrote."""
    import hashlib

    with open(os.path.join(root, rel), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != stats.entries[rel][3]:
        raise OSError(f"{rel} changed since it was written")
    return digest


def save_states(found: Found, lock: SplicedLock, stats: Stats, done: bool) -> None:
    """After a scoped build that left every target ``ok``: the no-op state and this one, as a full
    run would record them. Otherwise both go (the next run takes the full path)."""
    from pathlib import Path

    from .changestate import FILE, change_state_parts
    from .fsutil import rewrite_cache_file

    state_dir = Path(found.state_dir)
    try:
        if not done:
            raise OSError("not every target is ok")
        noop = list(found.noop)
        now = time.time_ns()
        files = f"\0{noop[10]}\0"
        sigs = list(noop[11])
        racy: dict[str, str] = {}
        for rel, digest in noop[15] if len(noop) > 15 else ():
            # This run checked these bytes (fastpath.unchanged): one no longer within a tick of
            # now is trusted by its stat from here on, as git does with a racily clean entry.
            at = files.find(f"\0{rel}\0")
            if at < 0 or sigs[3 * files.count("\0", 0, at) + 1] >= now - fastpath.RACY_NS:
                racy[rel] = digest
        for t in found.targets.values():
            for rel in t.outputs:
                i = files.count("\0", 0, files.index(f"\0{rel}\0"))  # its place in the recorded list
                sigs[3 * i:3 * i + 3] = _written(found.root, rel, stats)
                racy.pop(rel, None)
                if sigs[3 * i + 1] >= now - fastpath.RACY_NS:  # racily clean: trusted by its bytes
                    racy[rel] = _racy_digest(found.root, rel, stats)
        lock_name = noop[5]
        noop[6] = fastpath._signature(found.lock_path)
        racy.pop(lock_name, None)
        if noop[6] is not None and noop[6][1] >= now - fastpath.RACY_NS:
            racy[lock_name] = lock.saved_digest()  # the sha256 of what it wrote, taken as it wrote it
        manifest_digest = fastpath.digest_of(found.new)
        noop[3], noop[11] = manifest_digest, tuple(sigs)
        noop[15:] = [tuple(sorted(racy.items()))]
        state = list(found.state)
        state[2], state[3], state[4] = manifest_digest, found.new, (state[4][0], found.new_sizes)
        state[10], state[11] = noop[6], lock.saved_digest()
        rewrite_cache_file(state_dir / FILE, change_state_parts(tuple(state)))
        rewrite_cache_file(state_dir / fastpath.FILE, [marshal.dumps(tuple(noop))])
    except (OSError, ValueError, IndexError, KeyError):
        discard(os.path.join(state_dir, fastpath.FILE))
        discard(os.path.join(state_dir, FILE))
