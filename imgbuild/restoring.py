"""How the executor restores a target: its outputs copied from the cache (fetched first from the
remote cache where that has them), in batches beside the requests in flight, then recorded in
the lock. A request's images take the same way once they are in the cache."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .copybatch import BatchedRestores, CopyBatch
from .errors import ImgbuildError
from .lockwriter import lock_entry, utc_now
from .plan import Action, Decision, State
from .review import history

if TYPE_CHECKING:
    import asyncio

    from .context import RunContext
    from .remotecache import RemoteCache


class Restores:
    def __init__(self, executor: RunContext) -> None:
        self.ex = executor
        self.project = executor.project
        self.running: set[asyncio.Task[Any]] = set()
        self.not_fetched: set[str] = set()  # planned from the remote cache, but its objects did not come
        self._pool: BatchedRestores | None = None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    async def in_pool(self, decision: Decision) -> bool:
        """Restores run side by side (copies and fsyncs wait on the disk, not the CPU), beside
        the requests in flight and not counted against ``jobs``."""
        if self._pool is None:  # batches: one sync and one folder check for many files
            self._pool = BatchedRestores(self._restore_into, self.ex.dirs, _name_os_thread)
        if not await self._fetched(decision):
            self.not_fetched.add(decision.name)
            return False
        await self._pool.restore(decision)
        self.ex.summary.restored += 1
        self.ex.reporter.event("restored", decision.name, decision.reason, state=str(decision.state))
        self.ex.finished(decision)
        return True

    def restore(self, decision: Decision, staged: dict[str, Path] | None = None) -> None:
        """Copy a run's outputs from the cache (or from ``staged`` files the cache could not take);
        record them in the lock under the decision's spec (a pinned target's missing outputs,
        restored with no spec, leave its lock entry alone)."""
        batch = CopyBatch(self.ex.dirs)  # a batch of one
        batch.run(decision.name, lambda b: self._restore_into(decision, b, staged))
        error = batch.commit().get(decision.name)
        if error is not None:
            raise error

    def _restore_into(self, decision: Decision, batch: CopyBatch, staged: dict[str, Path] | None = None) -> None:
        """:meth:`restore`, its copies and what follows them part of ``batch``."""
        assert decision.run is not None
        target = self.project.targets[decision.name]
        if decision.sources:
            self._cache_sources(decision.sources)
        outputs = []
        copied: list[tuple[str, str]] = []
        for rel, info in zip(target.outputs, decision.run.outputs):
            if self.project.stats.digest(rel) != info.sha256:
                file = (staged or {}).get(info.sha256)  # a paid image the cache could not take
                source = (partial(os.open, file, os.O_RDONLY) if file is not None
                          else partial(self.project.cache.open_object, info.sha256))
                hint = "" if file is not None else "; its image is in the cache: the next build restores it"

                def error(exc: OSError, rel: str = rel, hint: str = hint) -> ImgbuildError:
                    return ImgbuildError(f"{rel}: cannot be written ({exc.strerror or exc}){hint}")

                batch.copy(source, self.project.root / rel, error)
                copied.append((rel, info.sha256))
            self.project.cache.touch(info.sha256)
            outputs.append((rel, info))
        batch.then(lambda: self._restored(decision, copied, outputs))

    def _restored(self, decision: Decision, copied: list[tuple[str, str]], outputs: list[Any]) -> None:
        """After a restore's copies are in place: their digests, and the lock entry."""
        assert decision.run is not None
        for rel, sha in copied:
            self.project.stats.record(rel, sha)
        if decision.spec is None:
            return
        run = decision.run
        entry = lock_entry(decision, outputs, run.provider, run.cost_usd, run.built_at or utc_now())
        if self.project.lock.get(decision.name) != entry:  # the review page's earlier images
            history.record(self.project.state_dir, decision.name, entry)
        self.project.lock.set(decision.name, entry)

    def _cache_sources(self, sources: dict[str, str]) -> None:
        for sha, rel in sources.items():
            if not self.project.cache.has(sha):
                if self.project.cache.put_copy(self.project.root / rel).sha256 != sha:
                    raise ValueError(f"{rel} changed while it was being restored from; build again")

    # -- the remote cache ---------------------------------------------------------------------------

    @property
    def remote(self) -> RemoteCache | None:
        return self.ex.remote

    async def _fetched(self, decision: Decision) -> bool:
        """A target the remote cache restores: its objects into the local cache first (checked,
        durable). Fetched as each such restore starts, so that the first outputs are copied
        while later objects are still coming down. False if any did not come."""
        remote = self.remote
        if decision.state is not State.REMOTE or remote is None or decision.spec is None or decision.run is None:
            return True
        return await remote.fetch_runs([(decision.spec.digest, decision.run)])

    async def from_remote(self, decision: Decision) -> Decision:
        """Before a request: the remote cache may have what a target that waited for others
        makes (its spec was unknown when the build looked the others up). Fetched into the local
        cache, it is restored from there; an object that does not come (altered, gone, the remote
        down) is absent, and the request goes ahead."""
        remote, spec, planner = self.remote, decision.spec, self.ex.planner
        assert remote is not None and spec is not None
        if decision.name in planner.force:
            return decision  # -B: a new take, whatever any cache holds
        if not await remote.look_up([spec.digest], self._locked_objects(decision), confirm=False):
            return decision
        again = planner.decide(decision.name)
        if again.state is State.REMOTE and again.run is not None:
            await remote.fetch_runs([(spec.digest, again.run)])
            self.ex.summary.fetched = remote.restored
            again = planner.decide(decision.name)
        return again

    def _locked_objects(self, decision: Decision) -> list[str]:
        """The objects the lock names for the target, if it records this very spec."""
        entry = self.project.lock.get(decision.name)
        spec = decision.spec
        if not entry or spec is None or entry.get("spec") != spec.digest:
            return []
        return [o.get("sha256", "") for o in entry.get("outputs", [])]

    def ask_later(self, decision: Decision) -> bool:
        """A planned request whose run entry the remote cache was not asked for before the build
        (the project left them to the targets as they start): asked in a restore's slot."""
        remote = self.remote
        return (remote is not None and decision.spec is not None and decision.name not in self.ex.planner.force
                and not remote.answered(decision.spec.digest))

    async def remote_or_request(self, decision: Decision) -> bool:
        """Ask the remote cache for the target's run entry, and restore from it if it has one,
        while the scheduler starts others: restores begin with the first answer, not the last.
        Otherwise the target goes back to the scheduler, which decides it again: a request."""
        remote, spec = self.remote, decision.spec
        assert remote is not None and spec is not None
        await remote.look_up([spec.digest], self._locked_objects(decision), confirm=False)
        again = self.ex.planner.decide(decision.name)
        if again.action is not Action.RESTORE:
            self.not_fetched.add(decision.name)
            return False
        return await self.in_pool(again)


def _name_os_thread() -> None:
    """Name a restore thread where tools see it (`top -H`, /proc/PID/task/*/comm)."""
    if sys.platform == "linux":
        try:
            import ctypes

            ctypes.CDLL(None).prctl(15, b"imgbuild-restore", 0, 0, 0)  # PR_SET_NAME (15 bytes kept)
        except (OSError, AttributeError):
            pass
