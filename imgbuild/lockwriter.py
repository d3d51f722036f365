"""The lock as a build writes it: each finished target's entry (:func:`lock_entry`), and a writer
that keeps ``images.lock`` up to date without work proportional to the project per target."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .takes import lock_fields

if TYPE_CHECKING:
    from .cache import OutputInfo
    from .context import BuildContext
    from .plan import Decision


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def lock_entry(decision: Decision, outputs: list[tuple[str, OutputInfo]], provider: str,
               cost_usd: float | None, built_at: str) -> dict[str, Any]:
    assert decision.spec is not None
    entry: dict[str, Any] = {"spec": decision.spec.digest, "provider": provider, "built_at": built_at}
    entry.update(decision.spec.readable())
    if cost_usd is not None:
        entry["cost_usd"] = round(cost_usd, 6)
    entry["outputs"] = [
        {"path": path, "sha256": o.sha256, "bytes": o.bytes, "width": o.width, "height": o.height,
         **({"git_blob": o.git_blob} if o.git_blob else {})}
        for path, o in outputs
    ]
    if decision.takes is not None and outputs:
        entry.update(lock_fields(decision.takes, decision.spec.digest, outputs[0][1].sha256))
    return entry


class LockWriter:
    """Keeps the lock up to date without work proportional to the project per finished target.
    Each finished target is appended to the lock's journal as it is recorded (:meth:`Lock.set`);
    the whole lock is rewritten at most once every ``INTERVAL_S`` and at the end, in a thread,
    after the folders of the outputs it names are synced (once each, however many were written)."""

    INTERVAL_S = 1.0

    def __init__(self, project: BuildContext) -> None:
        import asyncio

        from .fsutil import DirSyncs

        self.project = project
        self.dirs = DirSyncs()
        self._dirty = False
        self._closing = False
        self._wake = asyncio.Event()
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        self.project.lock.begin_journal()
        self._last = time.monotonic()  # the first rewrite a second in: at most one per second, plus the last

    def changed(self) -> None:
        import asyncio

        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        import asyncio

        try:
            while self._dirty and not self._closing:
                wait = self._last + self.INTERVAL_S - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except TimeoutError:
                        pass
                    if self._closing:
                        return  # flush writes the last one
                self._dirty = False
                self._last = time.monotonic()
                await asyncio.to_thread(self._save, False)
        except OSError:
            # Not left in the task: the next change starts a new one, and an exception nobody
            # retrieves is a raw traceback at exit. flush writes again, and raises if it still fails.
            pass

    def _save(self, json_copy: bool) -> None:
        self.dirs.flush()
        self.project.lock.save(json_copy=json_copy)

    async def flush(self) -> None:
        import asyncio

        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        await asyncio.to_thread(self._save, True)
        self.project.lock.end_journal()
