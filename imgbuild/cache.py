"""The cache: content-addressed image objects and a run cache (spec digest → output digests).

Every image the API returned is put here before anything else is done with it. The store sits
behind a small interface (:class:`Store`) so that a remote cache can stand beside the local one.
Layout, sharded like DVC's::

    <cache>/objects/ab/abcdef…     image bytes, read-only, named by sha256
    <cache>/runs/ab/abcdef….json   {"version": 1, "outputs": [...], ...} by spec digest
    <cache>/tmp/                   staging for provider results (same filesystem: renames are free)
    <cache>/projects.json          projects that used this cache, for gc
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .fsutil import atomic_write

RUN_VERSION = 1


@dataclass(frozen=True)
class OutputInfo:
    sha256: str
    bytes: int
    width: int
    height: int
    format: str | None
    git_blob: str = ""  # git's object id of these bytes: lets a clone's `check` take git's word for them


@dataclass
class RunRecord:
    """What one spec produced: its outputs in order, and what it cost."""

    outputs: list[OutputInfo]
    provider: str
    cost_usd: float | None = None
    built_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """What the engine needs of a cache; the local folder is one implementation."""

    def has(self, sha256: str) -> bool: ...
    def object_path(self, sha256: str) -> Path: ...
    def put_file(self, path: Path) -> OutputInfo: ...
    def get_run(self, spec_digest: str) -> RunRecord | None: ...
    def put_run(self, spec_digest: str, record: RunRecord) -> None: ...


def default_cache_dir() -> Path:
    env = os.environ.get("IMGBUILD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("imgbuild", appauthor=False))


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob id) of a file, read once. The blob id is what `git hash-object` prints:
    sha1 over "blob <size>\\0" and the bytes."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(b"blob %d\0" % size)
        buffer = bytearray(1024 * 1024)
        view = memoryview(buffer)
        read = 0
        while n := f.readinto(buffer):
            sha256.update(view[:n])
            blob.update(view[:n])
            read += n
    if read != size:
        raise OSError(f"{path} changed size while it was read")
    return sha256.hexdigest(), blob.hexdigest()


class LocalCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def _object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def _run(self, spec_digest: str) -> Path:
        return self.root / "runs" / spec_digest[:2] / f"{spec_digest[2:]}.json"

    def has(self, sha256: str) -> bool:
        return self._object(sha256).is_file()

    def object_path(self, sha256: str) -> Path:
        return self._object(sha256)

    def staging_dir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=tmp))

    def put_file(self, path: Path) -> OutputInfo:
        """Move an image file into the store (hashing it); returns what the lock records of it."""
        from .images import image_info

        sha, git_blob = file_digests(path)
        try:
            info = image_info(path)
            width, height, fmt = info.size[0], info.size[1], info.format
        except ValueError:
            width = height = 0
            fmt = None
        size = path.stat().st_size
        dest = self._object(sha)
        if dest.exists():
            os.unlink(path)  # another build (or an earlier take) stored these very bytes
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as f:
                os.fsync(f.fileno())
            os.chmod(path, 0o444)
            os.replace(path, dest)
        return OutputInfo(sha, size, width, height, fmt, git_blob)

    def get_run(self, spec_digest: str) -> RunRecord | None:
        try:
            data = json.loads(self._run(spec_digest).read_bytes())
        except (OSError, ValueError):
            return None
        if data.get("version") != RUN_VERSION:
            return None
        try:
            outputs = [OutputInfo(**o) for o in data["outputs"]]
            record = RunRecord(outputs, data["provider"], data.get("cost_usd"), data.get("built_at", ""),
                               data.get("extra", {}))
        except (KeyError, TypeError):
            return None
        return record if all(self.has(o.sha256) for o in outputs) else None

    def put_run(self, spec_digest: str, record: RunRecord) -> None:
        data = {"version": RUN_VERSION, **asdict(record)}
        atomic_write(self._run(spec_digest), json.dumps(data, sort_keys=True, indent=1).encode())

    def touch(self, sha256: str) -> None:
        """Mark an object used now, so gc --older-than keeps what is in use."""
        try:
            os.utime(self._object(sha256))
        except OSError:
            pass

    # -- projects and gc ---------------------------------------------------------------------

    def register_project(self, root: Path) -> None:
        path = self.root / "projects.json"
        try:
            projects = json.loads(path.read_bytes())
        except (OSError, ValueError):
            projects = {}
        key = str(root.resolve())
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if projects.get(key) != today:
            projects[key] = today
            atomic_write(path, json.dumps(projects, sort_keys=True, indent=1).encode(), durable=False)

    def projects(self) -> list[Path]:
        try:
            return [Path(p) for p in json.loads((self.root / "projects.json").read_bytes())]
        except (OSError, ValueError):
            return []

    def gc(self, keep: Iterable[str], older_than_days: float) -> tuple[int, int]:
        """Delete objects not in ``keep`` and unused for ``older_than_days``, and the run entries
        that pointed at them. Returns (objects removed, bytes freed)."""
        keep = set(keep)
        cutoff = time.time() - older_than_days * 86400
        removed = freed = 0
        objects = self.root / "objects"
        for shard in sorted(objects.iterdir()) if objects.is_dir() else ():
            for obj in shard.iterdir():
                sha = shard.name + obj.name
                st = obj.stat()
                if sha not in keep and st.st_mtime <= cutoff:
                    obj.unlink()
                    removed += 1
                    freed += st.st_size
        runs = self.root / "runs"
        for shard in sorted(runs.iterdir()) if runs.is_dir() else ():
            for entry in shard.iterdir():
                if self.get_run(shard.name + entry.stem) is None:
                    entry.unlink()
        # Staging folders a killed build left behind; a day old, so never a running build's.
        tmp = self.root / "tmp"
        for stage in tmp.iterdir() if tmp.is_dir() else ():
            if stage.stat().st_mtime < time.time() - 86400:
                shutil.rmtree(stage, ignore_errors=True)
        return removed, freed
