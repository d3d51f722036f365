"""The remote store: has / get / put of objects by sha256 and of run entries by spec digest.

Every operation answers "absent" / ``False`` rather than raise when the remote misbehaves; see
the package docstring for the failure policy. Only programming errors (a malformed digest, a
record that is not UTF-8) raise.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..fsutil import TEMP_PREFIX
from ._client import (
    REMOTE_MODES,
    Location,
    RemoteConfigError,
    RemoteMode,
    RemoteOptions,
    build_store,
    describe,
    parse_location,
)
from ._trust import KEY_ENV, EntryRejected, open_entry, redact, seal_entry

if TYPE_CHECKING:
    from obstore.store import ObjectStore

T = TypeVar("T")
WarningSink = Callable[[str], None]
_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAX_ENTRY_BYTES = 1 << 20      # a run entry is a few hundred bytes; more is not one of ours
_CHUNK_BYTES = 1 << 20


def object_key(sha256: str) -> str:
    """Where an object lives under the prefix, as in the local cache: ``objects/ab/abcd…``."""
    return f"objects/{_checked(sha256)[:2]}/{sha256[2:]}"


def run_key(spec_digest: str) -> str:
    """Where a run entry lives under the prefix: ``runs/ab/abcd….json``."""
    return f"runs/{_checked(spec_digest)[:2]}/{spec_digest[2:]}.json"


def _checked(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {digest[:80]!r}")
    return digest


@dataclass
class RemoteStats:
    """What this store moved during the run, for the build's summary line."""

    objects_down: int = 0
    objects_up: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    runs_down: int = 0
    runs_up: int = 0


def open_remote(url: str | None, mode: RemoteMode = "readwrite", *,
                options: RemoteOptions | None = None, on_warning: WarningSink | None = None,
                key: str | None = None) -> RemoteStore:
    """Open the remote cache at ``url`` (``None``: no remote, as with ``mode="off"``).

    Raises :class:`RemoteConfigError` for a bad URL or mode, and nothing else: no connection is
    made here, and with ``mode="off"`` none is ever made. The signing key is ``key``, else
    ``$IMGBUILD_CACHE_KEY``; credentials are the store's own environment variables.
    """
    if mode not in REMOTE_MODES:
        raise RemoteConfigError(f"remote cache mode {mode!r} is unknown; use one of "
                                + ", ".join(REMOTE_MODES))
    location = parse_location(url) if url else None
    secret = key if key is not None else os.environ.get(KEY_ENV)
    return RemoteStore(location, mode, options or RemoteOptions(), on_warning,
                       secret.encode("utf-8") if secret else None)


class RemoteStore:
    """One remote cache for one run. Async; safe to share between the tasks of one event loop."""

    def __init__(self, location: Location | None, mode: RemoteMode, options: RemoteOptions,
                 on_warning: WarningSink | None, key: bytes | None) -> None:
        self.url = location.url if location else ""
        self.mode: RemoteMode = mode if location else "off"
        self.options = options
        self.stats = RemoteStats()
        self.warnings: list[str] = []
        self.signed = key is not None
        self._key = key
        self._on_warning = on_warning
        self._store: ObjectStore | None = None
        self._errors: tuple[type[BaseException], ...] = ()
        if location and self.mode != "off":
            from obstore.exceptions import BaseError

            self._store = build_store(location, options)
            self._errors = (BaseError, OSError, TimeoutError)
        self._down = self._store is None
        self._writes_off = self._down or self.mode != "readwrite"
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r}, mode={self.mode!r})"

    @property
    def readable(self) -> bool:
        """False when off, or once the remote failed this run: nothing more is asked of it."""
        return not self._down

    @property
    def writable(self) -> bool:
        return not self._down and not self._writes_off

    # -- objects -----------------------------------------------------------------------------

    async def has_object(self, sha256: str) -> bool:
        key = object_key(sha256)
        meta = await self._call("lookup", False, self.options.request_timeout_s,
                                lambda: self._obstore().head_async(key))
        return meta is not None

    async def get_object(self, sha256: str, dest: Path, *, expected_size: int | None = None,
                         file_mode: int = 0o644) -> bool:
        """Download an object to ``dest``: streamed to a temp file beside it, checked against
        its sha256 (and ``expected_size`` when given), then renamed into place. On any
        mismatch or failure ``dest`` is left as it was and the answer is ``False``."""
        return await self._fetch(sha256, dest, expected_size, file_mode)

    async def get_object_unsynced(self, sha256: str, temp: Path, *, expected_size: int | None = None) -> bool:
        """Download an object into the new file ``temp``, checked as :meth:`get_object` checks
        it, but neither synced nor renamed: the caller makes many such files durable at once and
        renames them. On any mismatch or failure no file is left at ``temp``."""
        return await self._fetch(sha256, temp, expected_size, None)

    async def _fetch(self, sha256: str, dest: Path, expected_size: int | None, file_mode: int | None) -> bool:
        """One checked download (see :meth:`_download`; ``file_mode`` None: neither synced nor
        renamed), counted, with one warning for bytes that are not what their name says."""
        key = object_key(sha256)
        outcome = await self._call(
            "download", False, self.options.transfer_timeout_s,
            lambda: self._download(key, sha256, dest, expected_size, file_mode))
        if outcome is None:
            return False
        if outcome < 0:
            self._warn(f"remote cache {self.url}: object {sha256[:12]}… does not match its "
                       "sha256; ignored (a request or the local cache is used instead)")
            return False
        self.stats.objects_down += 1
        self.stats.bytes_down += outcome
        return True

    async def put_object(self, sha256: str, path: Path) -> bool:
        """Upload the file at ``path`` as object ``sha256`` unless the remote has it already.
        True when the remote holds the object afterwards."""
        key = object_key(sha256)
        if not self.writable:
            return False
        if await self.has_object(sha256):
            return True
        try:
            actual, size = await asyncio.to_thread(_hash_file, path)
        except OSError as exc:
            self._warn(f"remote cache {self.url}: cannot read {path.name} to upload it "
                       f"({exc.strerror}); not uploaded")
            return False
        if actual != sha256:
            self._warn(f"remote cache {self.url}: {path.name} no longer matches sha256 "
                       f"{sha256[:12]}…; not uploaded")
            return False
        done = await self._call("upload", True, self.options.transfer_timeout_s,
                                lambda: self._obstore().put_async(key, path))
        if done is None:
            return False
        self.stats.objects_up += 1
        self.stats.bytes_up += size
        return True

    # -- run entries -------------------------------------------------------------------------

    async def get_run(self, spec_digest: str) -> bytes | None:
        """The record stored for ``spec_digest``, exactly as it was put; ``None`` when absent,
        unreadable, or (with a key) unsigned or badly signed."""
        key = run_key(spec_digest)
        data = await self._call("run lookup", False, self.options.request_timeout_s,
                                lambda: self._get_small(key))
        if data is None:
            return None
        try:
            record = open_entry(data, spec_digest, self._key)
        except EntryRejected as exc:
            self._warn(f"remote cache {self.url}: run entry {spec_digest[:12]}… ignored: {exc}")
            return None
        self.stats.runs_down += 1
        return record

    async def put_run(self, spec_digest: str, record: bytes) -> bool:
        """Store ``record`` for ``spec_digest`` (signed with the key, if any). Put the objects
        it names first: a reader that finds the entry will look for them."""
        key = run_key(spec_digest)
        if not self.writable:
            return False
        data = seal_entry(spec_digest, record, self._key)
        done = await self._call("upload", True, self.options.request_timeout_s,
                                lambda: self._obstore().put_async(key, data))
        if done is None:
            return False
        self.stats.runs_up += 1
        return True

    # -- background uploads ------------------------------------------------------------------

    def publish(self, spec_digest: str, record: bytes, objects: Sequence[tuple[str, Path]]) -> None:
        """Upload ``objects`` (sha256, path) and then the run entry, in the background: the
        caller goes on at once. :meth:`drain` waits for them at the end of the build."""
        if not self.writable:
            return
        task = asyncio.get_running_loop().create_task(self._publish(spec_digest, record, objects))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish(self, spec_digest: str, record: bytes,
                       objects: Sequence[tuple[str, Path]]) -> None:
        stored = await asyncio.gather(*(self.put_object(sha, path) for sha, path in objects))
        if all(stored):
            await self.put_run(spec_digest, record)

    async def drain(self, timeout_s: float) -> int:
        """Wait at most ``timeout_s`` for the background uploads; what is left is cancelled
        (a later build uploads it). Returns the number of objects uploaded this run."""
        pending = set(self._background)
        if pending:
            done, left = await asyncio.wait(pending, timeout=timeout_s)
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            if left:
                self._warn(f"remote cache {self.url}: {len(left)} uploads not finished after "
                           f"{timeout_s:g} s; left for a later build")
            for task in done:
                task.result()  # a bug in a background upload must not pass silently
        return self.stats.objects_up

    # -- the one place where remote failures are caught ----------------------------------------

    async def _call(self, op: str, write: bool, timeout_s: float,
                    work: Callable[[], Awaitable[T]]) -> T | None:
        if self._down or (write and self._writes_off):
            return None
        async with self._slots_here():
            if self._down or (write and self._writes_off):
                return None  # it failed while this operation waited for a slot
            try:
                return await asyncio.wait_for(work(), timeout_s)
            except FileNotFoundError:
                return None  # a plain miss
            except self._errors as exc:
                self._failed(op, exc, write, timeout_s)
                return None

    def _failed(self, op: str, exc: BaseException, write: bool, timeout_s: float) -> None:
        failure = describe(exc, timeout_s)
        if write and not failure.unreachable:
            # Refused or full: reads may still work (read-only credentials, a full bucket).
            if not self._writes_off:
                self._writes_off = True
                self._warn(f"remote cache {self.url}: {op} failed: {failure.reason}; "
                           "no more uploads this run")
            return
        if not self._down:
            self._down = self._writes_off = True
            self._warn(f"remote cache {self.url}: {op} failed: {failure.reason}; "
                       "going on without the remote cache for the rest of this run")

    def warn(self, message: str) -> None:
        """One warning line about this store (redacted, and said once per run)."""
        self._warn(message)

    def _warn(self, message: str) -> None:
        line = redact(" ".join(message.split()))
        if line in self.warnings:
            return
        self.warnings.append(line)
        if self._on_warning is not None:
            self._on_warning(line)

    def _slots_here(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.options.concurrency), loop
        return self._slots

    def _obstore(self) -> Any:
        assert self._store is not None  # _call never runs work while the store is off
        return self._store

    async def _get_small(self, key: str) -> bytes:
        result = await self._obstore().get_async(key)
        if result.meta["size"] > _MAX_ENTRY_BYTES:
            return b""  # read as unreadable: a run entry is never this large
        return bytes(await result.bytes_async())

    async def _download(self, key: str, sha256: str, dest: Path, expected_size: int | None,
                        file_mode: int | None) -> int:
        """The object's size once it is in place at ``dest``; -1 if its bytes are not the
        ones named (then no file is left behind). With no ``file_mode``, ``dest`` is itself the
        new temp file, left unsynced and unrenamed for the caller."""
        result = await self._obstore().get_async(key)
        if file_mode is None:
            fd, tmp = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), str(dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest.parent)
        placed = False
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                # Written and hashed in the loop's thread: a cancelled download must never
                # leave a worker thread writing to a file that is being closed.
                async for chunk in result.stream(min_chunk_size=_CHUNK_BYTES):
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        return -1
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if digest.hexdigest() != sha256 or (expected_size or 0) > size:
                    return -1
                if file_mode is None:
                    placed = True  # verified: the caller's to sync and rename
                    return size
                if self.options.durable:
                    await asyncio.to_thread(os.fsync, out.fileno())
            os.chmod(tmp, file_mode)
            os.replace(tmp, dest)
            placed = True
            return size
        finally:
            if not placed:
                _unlink(tmp)


def _hash_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
