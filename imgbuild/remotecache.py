"""The remote cache as the engine sees it: the second layer of the cache, behind the local one.

Lookup order for a target that is not ok: the local run cache, then the remote one, then a
request. The planner decides synchronously and must never wait on a network, so the project
asks this layer first (:meth:`RemoteCache.look_up`: concurrent, bounded, with the store's short
timeouts) about the specs the local cache cannot answer and the objects a lock names but the
local cache lacks; the planner then reads the answers (:meth:`run_for`, :meth:`holds`) and says
``remote`` for those targets. Each such target's restore brings its objects into the local
cache first (:meth:`fetch`: streamed, checked against its sha256, made durable with the others
that arrive about then — one ``syncfs`` per batch — and renamed into place), and from there it is
restored like any cached image, while later objects are still coming down. What a request made is uploaded in the background
(:meth:`publish`), and the build waits for the uploads at its end, bounded (:meth:`drain`).

Only the local cache ever writes outputs: a remote object that does not match its sha256 never
reaches the local cache, so it can never reach an output either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tomllib
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import CacheStore, LocalCache, OutputInfo, RunRecord, Staging, decode_run, encode_run
from .plan import Action

if TYPE_CHECKING:
    from .lockfile import Lock
    from .plan import Decision
    from .remote import RemoteStore

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CACHE_HEADER = re.compile(r"^[ \t]*\[[ \t]*cache[ \t]*\][ \t]*(?:#[^\n]*)?$", re.M)
_NEXT_HEADER = re.compile(r"^[ \t]*\[", re.M)
DRAIN_TIMEOUT_S = 120.0  # at the end of a build: what is not up by then waits for a later build


def configured_url(manifest_data: bytes) -> str | None:
    """The remote cache's URL: ``$IMGBUILD_REMOTE_CACHE``, else the manifest's ``[cache] remote``
    (validated with the manifest; read again only now, when a build or status needs it)."""
    from .remote import REMOTE_ENV

    env = os.environ.get(REMOTE_ENV, "").strip()
    if env:
        return env
    if b"remote" not in manifest_data:
        return None
    try:
        text = manifest_data.decode("utf-8")
        header = None if "'''" in text or '"""' in text else _CACHE_HEADER.search(text)
        if header is not None:  # the usual spelling: parse that table alone, not 10,000 targets
            end = _NEXT_HEADER.search(text, header.end())
            table = tomllib.loads(text[header.end():end.start() if end else len(text)])
        else:  # cache.remote = …, cache = {remote = …}
            table = tomllib.loads(text).get("cache")  # type: ignore[assignment]  # checked below
    except (ValueError, UnicodeDecodeError):
        return None
    url = table.get("remote") if isinstance(table, dict) else None
    return url if isinstance(url, str) and url else None


def questions(decisions: Iterable[Decision], lock: Lock, forced: Container[str]) -> tuple[list[str], list[str]]:
    """What to ask the remote cache for the targets the plan would request: where the lock
    already records this very spec, its outputs by sha256 (a fresh clone restores by its lock:
    the lock is committed, so no entry needs to vouch for them); else their specs' run entries."""
    specs: list[str] = []
    shas: list[str] = []
    for d in decisions:
        if d.action is not Action.REQUEST or d.spec is None or d.name in forced:
            continue
        entry = lock.get(d.name)
        if entry is not None and entry.get("spec") == d.spec.digest:
            shas.extend(o.get("sha256", "") for o in entry.get("outputs", []))
        else:
            specs.append(d.spec.digest)
    return specs, shas


def open_layer(url: str | None, mode: str, cache: CacheStore,
               on_warning: Callable[[str], None] | None) -> RemoteCache | None:
    """The remote layer for ``url`` in ``mode`` over the local cache of ``cache``, or None when
    there is none (no URL, or off). Raises RemoteConfigError (exit 2) for a bad URL or mode;
    opens no connection."""
    local = cache.local if isinstance(cache, RemoteCache) else cache
    if not isinstance(local, LocalCache):
        raise TypeError(f"a remote cache layers over a LocalCache, not {type(local).__name__}")
    if not url or mode == "off":
        if mode not in ("readwrite", "read", "off"):
            from .remote import RemoteConfigError

            raise RemoteConfigError(f"--remote={mode} is unknown; use readwrite, read or off")
        return None
    from .remote import open_remote  # imported only when a remote is used: obstore is heavy

    from .remote._client import parse_location

    where = parse_location(url)  # a bad URL is a setting to fix (exit 2), obstore or not
    try:
        import obstore  # noqa: F401  # the optional extra: its absence costs a warning, not a build
    except ImportError:
        if on_warning is not None:
            on_warning(f"remote cache {where.url}: not used: it needs obstore (pip install 'imgbuild[remote]')")
        return None
    return RemoteCache(local, open_remote(url, mode, on_warning=on_warning))  # type: ignore[arg-type]


class RemoteCache:
    """One remote store for one run, beside the local cache it fills."""

    def __init__(self, local: LocalCache, store: RemoteStore) -> None:
        self.local = local
        self.store = store
        self._runs: dict[str, RunRecord] = {}  # spec digest → a record the remote can restore
        self._asked: set[str] = set()  # spec digests and objects already looked up
        self._objects: set[str] = set()  # objects the remote holds (or, in a build, is believed to)
        self._lost: set[str] = set()  # objects that did not come down this run: absent from now on
        self.restored = 0  # objects brought into the local cache this run
        self._coming: dict[str, asyncio.Future[bool]] = {}  # objects being fetched → whether they came
        self._arrivals: _Arrivals | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where it last ran: for the cache interface
        self._unpublished: list[tuple[str, RunRecord]] = []  # put with no loop running: up at drain
        self._entry_slots: asyncio.Semaphore | None = None  # run-entry lookups in flight (see _look_up_run)
        self._entries_pending = 0  # run-entry lookups asked for and not answered yet
        self._copying: set[asyncio.Future[None]] = set()  # remote entries being copied to the local run cache
        self._copied: set[str] = set()

    @property
    def url(self) -> str:
        return self.store.url

    # -- what the planner reads (synchronous, no network) --------------------------------------

    def run_for(self, spec_digest: str) -> RunRecord | None:
        record = self._runs.get(spec_digest)
        if record is None or not all(self.holds(o.sha256) for o in record.outputs):
            return None
        return record

    def holds(self, sha256: str) -> bool:
        return self.local.has(sha256) or (sha256 in self._objects and sha256 not in self._lost)

    def answered(self, spec_digest: str) -> bool:
        """Whether the remote was asked for this spec's run entry this run (whatever it said)."""
        return spec_digest in self._asked

    # -- lookups -------------------------------------------------------------------------------

    async def look_up(self, specs: Iterable[str], objects: Iterable[str], *, confirm: bool) -> bool:
        """Ask the remote about run entries (by spec digest) and objects (by sha256) not asked
        about before. With ``confirm``, every object is checked to be there (status); without
        (a build, which fetches them next and learns it then), the answer costs no extra request.
        True when it found anything."""
        specs = [s for s in dict.fromkeys(specs) if s not in self._asked]
        shas = [s for s in dict.fromkeys(objects) if _SHA256.fullmatch(s) and s not in self._asked
                and not self.local.has(s)]
        self._asked.update(specs)
        self._asked.update(shas)
        if not self.store.readable or not (specs or shas):
            return False
        before = (len(self._runs), len(self._objects))
        await asyncio.gather(*(self._look_up_run(s, confirm) for s in specs),
                             *(self._look_up_object(s, confirm) for s in shas))
        return (len(self._runs), len(self._objects)) != before

    async def _look_up_run(self, spec_digest: str, confirm: bool) -> None:
        # Fewer entry lookups in flight than the store has slots: in a build, each target asks
        # for its entry as it starts and then fetches its objects, and the fetches of the first
        # targets must get slots while later targets' entries are still being asked for.
        if self._entry_slots is None:
            self._entry_slots = asyncio.Semaphore(ENTRY_LOOKUPS)
        self._entries_pending += 1
        try:
            async with self._entry_slots:
                raw = await self.store.get_run(spec_digest)
        finally:
            self._entries_pending -= 1
        if raw is None:
            return
        record = decode_run(raw)
        if record is None:
            self.store.warn(f"remote cache {self.url}: run entry {spec_digest[:12]}… is not one imgbuild "
                             "can read; ignored")
            return
        wanted = [o.sha256 for o in record.outputs if not self.local.has(o.sha256)]
        if confirm:
            present = await asyncio.gather(*(self.store.has_object(s) for s in wanted))
            if not all(present):
                return
        self._objects.update(wanted)
        self._runs[spec_digest] = record

    async def _look_up_object(self, sha256: str, confirm: bool) -> None:
        if not confirm or await self.store.has_object(sha256):
            self._objects.add(sha256)

    # -- into the local cache ------------------------------------------------------------------

    async def fetch(self, outputs: Sequence[OutputInfo]) -> bool:
        """Bring the objects of ``outputs`` that the local cache lacks into it. False when any
        did not come (absent, altered, the remote down): those count as absent from now on."""
        self._loop = asyncio.get_running_loop()
        wanted = list(dict.fromkeys(o for o in outputs if not self.local.has(o.sha256)))
        results = await asyncio.gather(*(self._fetch_one(o) for o in wanted))
        return all(results)

    async def _fetch_one(self, info: OutputInfo) -> bool:
        """One object into the local cache, once however many targets ask for it at once."""
        sha = info.sha256
        if sha in self._lost:
            return False
        coming = self._coming.get(sha)
        if coming is None:
            coming = self._coming[sha] = asyncio.ensure_future(self._download(info))
            coming.add_done_callback(lambda _: self._coming.pop(sha, None))
        return await asyncio.shield(coming)

    async def _download(self, info: OutputInfo) -> bool:
        """Streamed and checked into a temp file in the cache, then made durable with others
        that arrive about then (:class:`_Arrivals`: one syncfs per batch, not an fsync each)."""
        if self._arrivals is None:
            self._arrivals = _Arrivals(self.local, self.store.warn, lambda: self._entries_pending > 0)
        arrivals = self._arrivals
        arrivals.downloading += 1
        try:
            temp = await asyncio.to_thread(self.local.incoming, info.sha256)
            ok = await self.store.get_object_unsynced(info.sha256, temp, expected_size=info.bytes or None)
        except OSError as exc:
            self.store.warn(f"local cache: cannot take images from the remote cache ({exc.strerror or exc})")
            ok = False
        finally:
            arrivals.downloading -= 1
        if ok:
            ok = await arrivals.admit(info.sha256, temp)
        else:
            arrivals.nudge()  # it was the last in flight: what waits need not wait for more
        if ok:
            self.restored += 1
        else:
            self._lost.add(info.sha256)
        return ok

    async def fetch_runs(self, runs: Iterable[tuple[str, RunRecord]]) -> bool:
        """Fetch the objects of ``runs`` (spec digest, record) into the local cache; True when
        every one came. A run that came from a remote entry is recorded in the local run cache
        too, so that every later build finds it there; one restored by the lock needs no entry."""

        async def one(spec_digest: str, record: RunRecord) -> bool:
            if not await self.fetch(record.outputs):
                return False
            if spec_digest in self._runs:
                self._copy_entry(spec_digest)
            return True

        return all(await asyncio.gather(*(one(s, r) for s, r in runs)))

    def _copy_entry(self, spec_digest: str) -> None:
        """The remote entry into the local run cache, in the background: the restore goes on at
        once, with the others whose objects came in the same batch (restores that start in one
        turn of the event loop share a sync). :meth:`drain` waits for these copies."""
        if spec_digest in self._copied:
            return
        self._copied.add(spec_digest)

        def copy() -> None:
            with contextlib.suppress(OSError):  # a later build asks the remote again: no harm
                self.local.put_run(spec_digest, self._runs[spec_digest], durable=False)

        work = asyncio.ensure_future(asyncio.to_thread(copy))
        self._copying.add(work)
        work.add_done_callback(self._copying.discard)

    # -- uploads -------------------------------------------------------------------------------

    def publish(self, spec_digest: str, record: RunRecord) -> None:
        """Upload a run's objects (from the local cache) and then its entry, in the background."""
        self._loop = asyncio.get_running_loop()
        self.store.publish(spec_digest, encode_run(record),
                           [(o.sha256, self.local.object_path(o.sha256)) for o in record.outputs])

    async def drain(self, timeout_s: float | None = DRAIN_TIMEOUT_S) -> int:
        """Wait (at most ``timeout_s``) for the uploads; the number of objects that went up."""
        unpublished, self._unpublished = self._unpublished, []
        for spec_digest, record in unpublished:
            self.publish(spec_digest, record)
        if self._copying:
            await asyncio.gather(*self._copying)
        return await self.store.drain(timeout_s if timeout_s is not None else 86400.0)

    # -- the cache interface (cache.CacheStore): local first, then the remote -----------------
    # What the local cache holds, or the remote was found to hold, is there; bytes are read from
    # the local cache, into which a remote object is fetched (checked) first; what is put goes
    # into the local cache, and a run entry up to the remote in the background as well.

    @property
    def where(self) -> str:
        return self.local.where

    def has(self, sha256: str) -> bool:
        return self.holds(sha256)

    def get_run(self, spec_digest: str) -> RunRecord | None:
        return self.local.get_run(spec_digest) or self.run_for(spec_digest)

    def put_run(self, spec_digest: str, record: RunRecord) -> None:
        self.local.put_run(spec_digest, record)
        self._upload_soon(spec_digest, record)

    def stage(self, *, need_bytes: int = 0, fallback: Path | None = None) -> Staging:
        return self.local.stage(need_bytes=need_bytes, fallback=fallback)

    def put_file(self, path: Path) -> OutputInfo:
        return self.local.put_file(path)

    def put_copy(self, path: Path) -> OutputInfo:
        return self.local.put_copy(path)

    def describe(self, path: Path) -> OutputInfo:
        return self.local.describe(path)

    def open_object(self, sha256: str) -> int:
        self._bring(sha256)
        return self.local.open_object(sha256)

    def copy_to(self, sha256: str, dest: Path) -> None:
        self._bring(sha256)
        self.local.copy_to(sha256, dest)

    def touch(self, sha256: str) -> None:
        self.local.touch(sha256)

    def recover(self, fallback: Path | None = None) -> int:
        return self.local.recover(fallback)

    def viewable_path(self, sha256: str) -> Path | None:
        return self.local.viewable_path(sha256)  # only bytes on this machine: review fetches nothing

    def register_project(self, root: Path) -> None:
        self.local.register_project(root)

    def _upload_soon(self, spec_digest: str, record: RunRecord) -> None:
        """Publish now on the event loop's thread; from a worker thread (the executor stores
        in threads), on the loop this layer last ran in; else at :meth:`drain`."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self.publish(spec_digest, record)
            return
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self.publish, spec_digest, record)
        else:
            self._unpublished.append((spec_digest, record))

    def _bring(self, sha256: str) -> None:
        """An object the remote holds and the local cache lacks: fetched (checked) into the local
        cache before it is read. From a worker thread, on the layer's event loop; with no loop
        running, in one of its own. On the loop's own thread it cannot wait: the caller fetches
        first (:meth:`fetch`), as the executor does for a target planned ``remote``."""
        if self.local.has(sha256) or not self.holds(sha256):
            return
        wanted = [OutputInfo(sha256, 0, 0, 0, None)]
        try:
            asyncio.get_running_loop()
            return
        except RuntimeError:
            pass
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.fetch(wanted), loop).result()
        else:
            asyncio.run(self.fetch(wanted))


# -- imgbuild cache push | pull ----------------------------------------------------------------

async def push(layer: RemoteCache, lock: Lock, names: Sequence[str]) -> tuple[int, int, int]:
    """Upload what the lock records for ``names``: their objects from the local cache, then their
    run entries where the local run cache has them (an image accepted by hand is this project's,
    restored by its lock, never offered to others as the answer to a spec). Returns (objects
    uploaded, objects the remote had already, objects not up: not in the local cache, or failed)."""
    local, store = layer.local, layer.store
    runs: dict[str, RunRecord] = {}
    objects: set[str] = set()
    lacking = 0
    for name in names:
        entry = lock.get(name)
        if entry is None:
            continue
        spec = entry.get("spec", "")
        record = local.get_run(spec) if isinstance(spec, str) and _SHA256.fullmatch(spec) else None
        if record is not None:
            runs[spec] = record
        for o in entry.get("outputs", []):
            sha = o.get("sha256", "")
            if isinstance(sha, str) and _SHA256.fullmatch(sha) and local.has(sha):
                objects.add(sha)
            else:
                lacking += 1
    for record in runs.values():
        objects.update(o.sha256 for o in record.outputs)
    shas = sorted(objects)
    held = dict(zip(shas, await asyncio.gather(*(store.put_object(sha, local.object_path(sha)) for sha in shas))))
    await asyncio.gather(*(store.put_run(spec, encode_run(record)) for spec, record in runs.items()
                           if all(held.get(o.sha256) for o in record.outputs)))
    uploaded = store.stats.objects_up
    return uploaded, sum(held.values()) - uploaded, lacking + len(held) - sum(held.values())


async def pull(layer: RemoteCache, lock: Lock, names: Sequence[str]) -> tuple[int, int, int]:
    """Fetch into the local cache what the lock records for ``names`` and the local cache lacks.
    Returns (fetched, already there, not to be had from the remote)."""
    wanted: dict[str, OutputInfo] = {}
    present = 0
    for name in names:
        entry = lock.get(name)
        for o in entry.get("outputs", []) if entry is not None else ():
            sha = o.get("sha256", "")
            if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
                continue
            if layer.local.has(sha):
                present += 1
            else:
                wanted[sha] = OutputInfo(sha, o.get("bytes", 0), 0, 0, None)
    await layer.fetch(list(wanted.values()))
    return layer.restored, present, len(wanted) - layer.restored


class _Arrivals:
    """Downloaded objects made durable in batches. Each verified temp file waits until
    :data:`ARRIVAL_BATCH` others have come, no download is left in flight nor about to start
    (a run entry being asked for is most likely a download to come), or :data:`ARRIVAL_WAIT_S`
    has passed; then the batch is synced once and renamed into the cache
    in a thread (:meth:`LocalCache.admit`) while the downloads go on. Only then does its fetch
    answer True, so an output is never copied from an object that is not durably in place."""

    def __init__(self, local: LocalCache, warn: Callable[[str], None], expecting: Callable[[], bool]) -> None:
        self.local = local
        self.warn = warn
        self.expecting = expecting
        self.downloading = 0
        self._waiting: list[tuple[str, Path, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def admit(self, sha256: str, temp: Path) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((sha256, temp, done))
        if len(self._waiting) >= ARRIVAL_BATCH or self._idle():
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(ARRIVAL_WAIT_S, self._flush)
        return await done

    def nudge(self) -> None:
        if self._idle() and self._waiting:
            self._flush()

    def _idle(self) -> bool:
        # Each syncfs writes back every dirty page of the file system, the outputs being
        # copied too: a lull between downloads must not sync them a few at a time.
        return self.downloading == 0 and not self.expecting()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        work = asyncio.get_running_loop().run_in_executor(None, self.local.admit, [(s, t) for s, t, _ in batch])

        def settle(work: asyncio.Future[None]) -> None:
            failure = work.exception() if not work.cancelled() else None
            if isinstance(failure, OSError):
                self.warn(f"local cache: cannot take images from the remote cache ({failure.strerror or failure})")
            for _, _, done in batch:
                if done.done():
                    continue
                if failure is not None and not isinstance(failure, OSError):
                    done.set_exception(failure)  # a bug: never passed off as a miss
                else:
                    done.set_result(failure is None and not work.cancelled())

        work.add_done_callback(settle)


ENTRY_LOOKUPS = 8  # run entries asked for at once, of the store's 16 slots: the rest fetch objects
ARRIVAL_BATCH = 32  # objects synced at once: most of a syncfs's cost is shared
ARRIVAL_WAIT_S = 0.25  # the longest a verified object waits for others before it is synced
