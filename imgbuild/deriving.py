"""How the executor builds a derived target: made in the process pool from its inputs (no request,
no budget, no provider), then it goes the way of a request's images: into the cache, the run
cache, the outputs and the lock (a restore of what was just made)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from .cache import RunRecord
from .lockwriter import utc_now
from .plan import Action, Decision

if TYPE_CHECKING:
    from .context import RunContext


class Derives:
    def __init__(self, executor: RunContext) -> None:
        self.ex = executor
        self.project = executor.project
        self.running: set[asyncio.Task[Any]] = set()
        self._pool: Any = None  # imgbuild.derive.pool.DerivePool, made for the first derived target

    def slots(self) -> int:
        """Jobs handed to the pool at once: enough to keep every worker busy, few enough that the
        order stays the build order."""
        from .derive.pool import default_workers

        return 2 * (self._pool.workers if self._pool is not None else default_workers())

    async def shutdown(self) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown)

    async def derive(self, decision: Decision) -> bool:
        from .derive import DeriveError
        from .derive.pool import DerivePool, Job

        name = decision.name
        target = self.project.targets[name]
        cache = self.project.cache
        assert decision.spec is not None
        if self._pool is None:
            self._pool = DerivePool()
        started = time.monotonic()
        staging = await asyncio.to_thread(cache.stage)
        try:
            files = [staging.file(f"{i}{os.path.splitext(out)[1]}") for i, out in enumerate(target.outputs)]
            inputs = tuple((str(self.project.root / i.path), i.path, i.sha256) for i in decision.spec.inputs)
            job = Job(name, dict(target.params), inputs, tuple(str(f) for f in files))
            try:
                await self._pool.run(job)
            except DeriveError as exc:
                self.ex.fail(name, exc)
                return False
            infos = await asyncio.to_thread(lambda: [cache.put_file(f) for f in files])
            record = RunRecord(infos, "derive", None, utc_now())
            await asyncio.to_thread(cache.put_run, decision.spec.digest, record)
            made = Decision(name, decision.state, Action.RESTORE, decision.reasons, decision.spec, record)
            await asyncio.to_thread(self.ex.restore, made)
        finally:
            staging.close()
        self.ex.summary.built += 1
        self.ex.reporter.event("built", name, decision.reason, state=str(decision.state),
                               seconds=round(time.monotonic() - started, 2))
        self.ex.finished(decision)
        return True
