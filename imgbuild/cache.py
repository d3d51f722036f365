"""The cache: content-addressed image objects and a run cache (spec digest → output digests).

Every image the API returned is put here before anything else is done with it. The store sits
behind a small interface (:class:`CacheStore`) so that a remote cache can stand beside the local one.
Layout, sharded like DVC's::

    <cache>/objects/ab/abcdef…     image bytes, read-only, named by sha256
    <cache>/runs/ab/abcdef….json   {"version": 1, "outputs": [...], ...} by spec digest
    <cache>/tmp/stage-…/           staging for provider results (same filesystem: renames are free)
    <cache>/projects.json          projects that used this cache, for gc (merged under a file lock)

A build holds an exclusive ``flock`` on each staging folder it uses; a folder nobody holds is a
killed build's, and its images were paid for: the next build moves them into the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # Windows: staging folders are not locked, and leftovers wait for gc
    fcntl = None  # type: ignore[assignment]

from .errors import StateFileError
from .fsutil import TEMP_PREFIX, allow_writes_under, atomic_copy, atomic_write, move_into, open_folder

RUN_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


class Staging:
    """A scratch folder for incoming bytes: a provider streams its answer into it, a derivation
    writes its image there, a project file is copied there for the cache to take
    (:meth:`CacheStore.put_file`). Locked for this process while open; closed, it is deleted,
    unless :meth:`keep` was called (paid images that could go nowhere): then the next build's
    :meth:`CacheStore.recover` takes them. Callers write only where it tells them."""

    def __init__(self, folder: Path, release: Callable[[Path, bool], None]) -> None:
        self._folder = folder
        self._release = release
        self._keep = False
        self._closed = False

    @property
    def folder(self) -> Path:
        """The place to write (handed to a provider, which names its own files in it)."""
        return self._folder

    def file(self, name: str) -> Path:
        """A path for a new file ``name`` in this staging folder."""
        return self._folder / name

    def files(self) -> list[Path]:
        """The files written here, by name (not those in subfolders: a request's input copies)."""
        return sorted(f for f in self._folder.iterdir() if f.is_file())

    def keep(self) -> None:
        """Leave the folder in place when closed, for the next build to recover."""
        self._keep = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release(self._folder, self._keep)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CacheStore(Protocol):
    """What the engine needs of a cache, by content only: objects by sha256, run-cache entries by
    spec digest, and a staging place for incoming bytes. :class:`LocalCache` (a folder) is one
    implementation; :class:`~imgbuild.remotecache.RemoteCache` (local first, then a remote
    store) is another. Nothing outside the cache layer knows how either lays out its bytes."""

    @property
    def where(self) -> str:
        """Where the cache is, for messages."""
        ...

    def has(self, sha256: str) -> bool: ...
    def get_run(self, spec_digest: str) -> RunRecord | None: ...
    def put_run(self, spec_digest: str, record: RunRecord) -> None: ...

    def stage(self, *, need_bytes: int = 0, fallback: Path | None = None) -> Staging:
        """A new staging place; in ``fallback`` (a folder of the project) when the cache has not
        ``need_bytes`` free or cannot be written. Raises OSError when neither can be had."""
        ...

    def put_file(self, path: Path) -> OutputInfo:
        """Admit a staged file (it is moved, not copied)."""
        ...

    def put_copy(self, path: Path) -> OutputInfo:
        """Admit a copy of a file that stays where it is (a project file)."""
        ...

    def describe(self, path: Path) -> OutputInfo: ...

    def open_object(self, sha256: str) -> int:
        """A read-only descriptor of the object's bytes; the caller closes it. OSError if absent."""
        ...

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the object's bytes to ``dest``, atomically and durably."""
        ...

    def touch(self, sha256: str) -> None: ...

    def recover(self, fallback: Path | None = None) -> int:
        """Take in what killed builds left in staging (here, and in ``fallback``); how many images."""
        ...

    def viewable_path(self, sha256: str) -> Path | None:
        """A read-only file of the object a browser can open (the review page only), or None when
        its bytes are not on this machine. Never to be written through."""
        ...

    def register_project(self, root: Path) -> None: ...


def has_room(folder: Path, need_bytes: int) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # not made yet, or Windows: try, and handle failure later
        return True
    return st.f_bavail * st.f_frsize >= need_bytes


def encode_run(record: RunRecord) -> bytes:
    """A run record as stored, in the local run cache and in a remote one alike."""
    data = {"version": RUN_VERSION, **asdict(record)}
    return json.dumps(data, sort_keys=True, indent=1).encode()


def decode_run(raw: bytes) -> RunRecord | None:
    """The record :func:`encode_run` wrote; None for anything else (another version, a
    malformed or foreign file: a remote entry is read as untrusted input)."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != RUN_VERSION:
            return None
        outputs = [OutputInfo(**o) for o in data["outputs"]]
        record = RunRecord(outputs, data["provider"], data.get("cost_usd"), data.get("built_at", ""),
                           data.get("extra", {}))
    except (ValueError, KeyError, TypeError):
        return None
    good = all(isinstance(o.sha256, str) and _SHA256.fullmatch(o.sha256) and isinstance(o.bytes, int)
               for o in outputs)
    return record if good else None


def default_cache_dir() -> Path:
    env = os.environ.get("IMGBUILD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("imgbuild", appauthor=False))


def _read_projects(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
    """The cache folder on this machine: a :class:`CacheStore`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()
        allow_writes_under(self.root)
        self._held: dict[Path, int] = {}  # staging folders in use → their locked descriptors

    def _object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def _run(self, spec_digest: str) -> Path:
        return self.root / "runs" / spec_digest[:2] / f"{spec_digest[2:]}.json"

    def has(self, sha256: str) -> bool:
        return self._object(sha256).is_file()

    def object_path(self, sha256: str) -> Path:
        return self._object(sha256)

    @property
    def where(self) -> str:
        return str(self.root)

    def stage(self, *, need_bytes: int = 0, fallback: Path | None = None) -> Staging:
        if fallback is None or has_room(self.root, need_bytes):
            try:
                return Staging(self.staging_dir(), self._release)
            except OSError:
                if fallback is None:
                    raise
        return Staging(self.staging_dir(fallback), self._release)

    def _release(self, folder: Path, keep: bool) -> None:
        self.discard_staging(folder, keep=keep)

    def put_copy(self, path: Path) -> OutputInfo:
        with self.stage() as staging:
            copy = staging.file("copy")
            import shutil

            shutil.copyfile(path, copy)
            return self.put_file(copy)

    def open_object(self, sha256: str) -> int:
        return os.open(self._object(sha256), os.O_RDONLY)

    def copy_to(self, sha256: str, dest: Path) -> None:
        atomic_copy(self._object(sha256), dest)

    def viewable_path(self, sha256: str) -> Path | None:
        path = self._object(sha256)
        return path if path.is_file() else None

    def recover(self, fallback: Path | None = None) -> int:
        kept = self.adopt_leftovers()
        return kept + (self.adopt_leftovers(fallback) if fallback is not None else 0)

    def staging_dir(self, under: Path | None = None) -> Path:
        """A new staging folder, locked for this process until :meth:`discard_staging`; in the
        cache's ``tmp/`` unless ``under`` names another (the project's, when the cache is full)."""
        tmp = under or self.root / "tmp"
        new = tmp / ".new"
        with open_folder(new):
            pass
        made = _new_folder(new, "stage-")
        if fcntl is None:
            return made
        # Locked before it appears under tmp/, so that no sweep ever sees it unlocked.
        fd = os.open(made, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = tmp / made.name
        os.rename(made, path)
        self._held[path] = fd
        return path

    def discard_staging(self, path: Path, *, keep: bool = False) -> None:
        """Delete a staging folder; with ``keep``, only unlock it (the next build adopts it)."""
        if not keep:
            _rmtree(path)
        fd = self._held.pop(path, None)
        if fd is not None:
            os.close(fd)

    def adopt_leftovers(self, under: Path | None = None) -> int:
        """Move the images of staging folders killed builds left (in the cache's ``tmp/``, or
        ``under``) into the cache: they were paid for. Then delete those folders. Returns how many
        images were kept."""
        tmp = under or self.root / "tmp"
        kept = 0
        if fcntl is None:
            return kept
        for stage in sorted(tmp.glob("stage-*")):
            try:
                fd = os.open(stage, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a running build's
            try:
                for f in sorted(stage.iterdir()):
                    if f.is_file() and not f.is_symlink() and f.stat().st_size:
                        self.put_file(f)
                        kept += 1
                _rmtree(stage)
            except OSError:
                continue  # the cache cannot take them now (full, read-only): they wait for a later build
            finally:
                os.close(fd)
        for made in (tmp / ".new").glob("stage-*"):  # killed between mkdtemp and the rename: empty
            with contextlib.suppress(OSError):
                if made.stat().st_mtime < time.time() - 3600:
                    _rmtree(made)
        return kept

    def put_file(self, path: Path) -> OutputInfo:
        """Move an image file into the store (hashing it); returns what the lock records of it."""
        info = self.describe(path)
        sha = info.sha256
        dest = self._object(sha)
        if dest.exists():
            os.unlink(path)  # another build (or an earlier take) stored these very bytes
        else:
            with path.open("rb") as f:
                os.fsync(f.fileno())
            os.chmod(path, 0o444)
            move_into(path, dest)  # a staging folder in the project (the cache was full) is a copy
        return info

    def incoming(self, sha256: str) -> Path:
        """A path for a new temp file that will become object ``sha256`` (:meth:`admit`): beside
        its place, so that the rename is free; named so that a killed writer's is swept."""
        folder = self._object(sha256).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"

    def admit(self, arrived: list[tuple[str, Path]]) -> None:
        """Make the verified temp files of ``arrived`` (sha256, :meth:`incoming` path) durable
        together (one syncfs for the batch, as restores do), then rename each into place. The
        data are on disk before a name points at them: a power cut leaves no object whose bytes
        are not its name's. Raises OSError (then no temp file is left)."""
        from .copybatch import sync_files

        fds: list[int] = []
        folders: dict[Path, int] = {}
        try:
            for _, temp in arrived:
                fds.append(os.open(temp, os.O_RDONLY))
                if temp.parent not in folders:
                    folders[temp.parent] = os.open(temp.parent, os.O_RDONLY)
            sync_files(fds, list(folders.values()))
            for sha, temp in arrived:
                os.chmod(temp, 0o444)
                os.replace(temp, self._object(sha))
        finally:
            for fd in [*fds, *folders.values()]:
                os.close(fd)
            for _, temp in arrived:
                with contextlib.suppress(OSError):
                    os.unlink(temp)  # only those not renamed: a failed batch leaves nothing

    @staticmethod
    def describe(path: Path) -> OutputInfo:
        """What the lock records of an image file (its git blob id too), without storing it."""
        from .images import image_info

        sha, git_blob = file_digests(path)
        try:
            image = image_info(path)
            width, height, fmt = image.size[0], image.size[1], image.format
        except ValueError:
            width = height = 0
            fmt = None
        return OutputInfo(sha, path.stat().st_size, width, height, fmt, git_blob)

    def get_run(self, spec_digest: str) -> RunRecord | None:
        try:
            record = decode_run(self._run(spec_digest).read_bytes())
        except OSError:
            return None
        return record if record is not None and all(self.has(o.sha256) for o in record.outputs) else None

    def put_run(self, spec_digest: str, record: RunRecord, *, durable: bool = True) -> None:
        """Record what a spec produced. ``durable=False`` for a copy of an entry the remote cache
        holds: one lost in a power cut is read as absent (a torn file does not decode) and the
        lock still restores its outputs; an fsync each would cost more than the download."""
        atomic_write(self._run(spec_digest), encode_run(record), durable=durable)

    def touch(self, sha256: str) -> None:
        """Mark an object used now, so gc --older-than keeps what is in use."""
        try:
            os.utime(self._object(sha256))
        except OSError:
            pass

    # -- projects and gc ---------------------------------------------------------------------

    def register_project(self, root: Path) -> None:
        """Record that ``root`` uses this cache today. Read, merged and written under a file lock:
        builds of many projects at once each add their entry, none is lost."""
        path = self.root / "projects.json"
        key = str(root.resolve())
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if _read_projects(path).get(key) == today:
            return  # the usual case: no lock, no write (nor filelock's import, ~20 ms)
        from filelock import FileLock

        with open_folder(self.root):
            pass
        with FileLock(str(self.root / "projects.json.lock"), thread_local=False):
            projects = _read_projects(path)
            if projects.get(key) != today:
                projects[key] = today
                atomic_write(path, json.dumps(projects, sort_keys=True, indent=1).encode())

    def projects(self) -> list[Path]:
        """The projects that used this cache. Raises StateFileError if the registry is unreadable:
        gc must not guess what no lock needs."""
        path = self.root / "projects.json"
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_bytes())
            if not isinstance(data, dict):
                raise ValueError("not a table")
        except (OSError, ValueError) as exc:
            raise StateFileError(f"{path}: the cache's project registry cannot be read ({exc}); gc removed "
                                 "nothing: delete the file and build each project once to register it again") from None
        return [Path(p) for p in data]

    def gc(self, keep: Iterable[str], older_than_days: float) -> tuple[int, int]:
        """Delete objects not in ``keep`` and unused for ``older_than_days``, and the run entries
        that pointed at them. Returns (objects removed, bytes freed)."""
        keep = set(keep)
        self.adopt_leftovers()  # a killed build's paid images first: gc then judges them like any
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
        if fcntl is None:  # unlocked staging folders: a day old is never a running build's
            tmp = self.root / "tmp"
            for stage in tmp.glob("stage-*"):
                if stage.stat().st_mtime < time.time() - 86400:
                    _rmtree(stage)
        return removed, freed


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new folder of this process's only (mode 0700), as tempfile.mkdtemp makes one (whose
    import brings shutil's and random's: ~4 ms of a one-prompt change)."""
    for _ in range(100):
        made = parent / f"{prefix}{os.urandom(8).hex()}"
        try:
            os.mkdir(made, 0o700)
        except FileExistsError:
            continue
        return made
    raise FileExistsError(f"{parent}: no new folder name found")


def _rmtree(path: Path) -> None:
    """Remove a folder and what it holds, if it can (a staging folder is empty, mostly)."""
    try:
        os.rmdir(path)
        return
    except OSError:
        pass
    import shutil

    shutil.rmtree(path, ignore_errors=True)
