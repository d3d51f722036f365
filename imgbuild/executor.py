"""Runs a plan: asyncio, dependency order, bounded concurrency, keep-going, budget, interrupts.

The executor schedules; each kind of target runs itself: a request (requesting.py), a derived
target (deriving.py), a restore from the cache (restoring.py). For every request the order is
fixed: the provider's files go into the cache, then the run cache records the spec, then the
outputs are written (atomically), then the lock (lockwriter.py). A crash at any point loses
nothing that was paid for: the next build restores it from the cache.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import copybatch
from .budget import check_budget  # noqa: F401 - re-exported: project.py and cli.py take it from here
from .deriving import Derives
from .errors import ImgbuildError
from .lockwriter import LockWriter, lock_entry, utc_now  # noqa: F401 - re-exported, as check_budget
from .plan import Action, Decision
from .providers.base import Provider
from .requesting import Requests
from .restoring import Restores
from .runbase import RunBase
from .summary import BuildOptions, Summary  # noqa: F401 - re-exported: the library's names

if TYPE_CHECKING:
    from .context import BuildContext
    from .plan import Planner
    from .remotecache import RemoteCache
    from .ui import Reporter


class Executor(RunBase):
    def __init__(self, project: BuildContext, planner: Planner, order: list[str], reporter: Reporter,
                 options: BuildOptions, open_provider: Callable[[], Provider]) -> None:
        super().__init__(project, planner, order, reporter, options)
        self.jobs = max(1, options.jobs or project.settings.concurrency)
        self.lock_writer = LockWriter(project)
        self.dirs = self.lock_writer.dirs
        self.restores = Restores(self)
        self.requests = Requests(self, open_provider)
        self.derives = Derives(self)

    # -- the run --------------------------------------------------------------------------------

    async def run(self) -> Summary:
        """Start targets in build order as their dependencies finish, at most ``jobs`` requests
        at once. Like ninja, one scheduler loop decides what starts next, so the order is the same
        on every run: after a request lands, its dependents start before unrelated targets."""
        loop = asyncio.get_running_loop()
        handled = _install_sigint(loop, self._on_sigint)
        notices = _Notices(self.reporter)
        provider_log = logging.getLogger("imgbuild.providers")
        provider_log.addHandler(notices)
        provider_log.setLevel(logging.INFO)
        order = self._with_work()
        index = {name: i for i, name in enumerate(order)}
        deps = {name: [d for d in self.project.deps[name] if d in index] for name in order}
        waiting = {name: len(ds) for name, ds in deps.items()}
        users: dict[str, list[str]] = {name: [] for name in order}
        for name, ds in deps.items():
            for d in ds:
                users[d].append(name)
        # Derived targets wait apart: they need no request slot, so they start while -j requests fly.
        local = [(index[n], n) for n, count in waiting.items() if count == 0 and self._local(n)]
        ready = [(index[n], n) for n, count in waiting.items() if count == 0 and not self._local(n)]
        heapq.heapify(ready)
        heapq.heapify(local)
        results: dict[str, bool] = {}
        running: dict[asyncio.Task[bool], str] = {}
        self.lock_writer.open()

        def complete(name: str, ok: bool) -> None:
            results[name] = ok
            for user in users[name]:
                waiting[user] -= 1
                if waiting[user] == 0:
                    heapq.heappush(local if self._local(user) else ready, (index[user], user))

        try:
            while ready or local or running:
                while (next_name := self._next_ready(ready, local, len(running))) is not None:
                    name = next_name
                    failed_deps = [d for d in deps[name] if not results[d]]
                    if failed_deps:
                        self.skip(name, f"depends on {', '.join(failed_deps)}, which was not built")
                        complete(name, False)
                        continue
                    try:
                        outcome = await self._start(name)
                    except Exception as exc:  # an OS error in one target must not lose the others
                        self.fail(name, exc)
                        outcome = False
                    if outcome is None:  # over the budget while requests are in flight: after they land
                        heapq.heappush(ready, (index[name], name))
                        break
                    if isinstance(outcome, asyncio.Task):
                        running[outcome] = name
                    else:
                        complete(name, outcome)
                if running:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        name = running.pop(task)
                        self.requests.landed(task)
                        self.restores.running.discard(task)
                        self.derives.running.discard(task)
                        if name in self.restores.not_fetched:  # decided again: a request, most likely
                            heapq.heappush(ready, (index[name], name))
                            continue
                        complete(name, self._outcome(name, task))
        finally:
            self.restores.shutdown()
            await self.derives.shutdown()
            self.requests.say_uncached()
            await self.lock_writer.flush()
            try:
                await asyncio.to_thread(self.project.stats.save)
            except OSError as exc:  # the lock and outputs are saved: the stat cache is a speed-up
                raise ImgbuildError(f"{self.project.stats.path.relative_to(self.project.root)}: cannot be saved "
                                    f"({exc.strerror or exc}); the images and the lock are: free space or "
                                    "make the folder writable") from exc
            await self.requests.aclose()
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            provider_log.removeHandler(notices)
        return self.summary

    def _local(self, name: str) -> bool:
        return self.project.targets[name].derived

    def _next_ready(self, ready: list[tuple[int, str]], local: list[tuple[int, str]], running: int) -> str | None:
        """The next target to start, in build order: a request target while fewer than ``jobs``
        requests are in flight, a derived one while the pool has room (it is never held behind
        requests), and neither while the restore pool is full."""
        restoring, deriving = len(self.restores.running), len(self.derives.running)
        if restoring >= copybatch.IN_FLIGHT:
            return None
        room = running - restoring - deriving < self.jobs
        if local and deriving < self.derives.slots() and (not room or not ready or local[0] < ready[0]):
            return heapq.heappop(local)[1]
        if ready and room:
            return heapq.heappop(ready)[1]
        return None

    def _outcome(self, name: str, task: asyncio.Task[bool]) -> bool:
        if task.cancelled():
            self.skip(name, "abandoned: interrupted")
            return False
        exc = task.exception()
        if exc is not None:
            self.fail(name, exc)
            return False
        return task.result()

    def _on_sigint(self) -> None:
        if self.interrupted(len(self.requests.running)):
            for task in list(self.requests.running):
                task.cancel()

    async def _start(self, name: str) -> bool | asyncio.Task[bool] | None:
        """Act on a target whose dependencies are done: True/False when finished here and now,
        the task that builds it, or None when it must wait for requests in flight."""
        decision = self.planner.decisions.get(name)
        restores = self.restores
        if decision is None or decision.action in (Action.WAIT, Action.REQUEST) or name in restores.not_fetched:
            # A request sends the inputs as they are now, and its spec must say what was sent: an
            # input saved since the plan (watch mode queues such saves) is hashed again here.
            restores.not_fetched.discard(name)  # what did not come from the remote counts as absent now
            decision = self.planner.decide(name)
            if decision.action is Action.REQUEST and self.planner.remote is not None and not restores.ask_later(decision):
                decision = await restores.from_remote(decision)
        settled = self._settled(name, decision)
        if settled is not None:
            return settled
        if decision.action is Action.REQUEST and restores.ask_later(decision):
            task = asyncio.create_task(restores.remote_or_request(decision))
        elif decision.action is Action.RESTORE:
            task = asyncio.create_task(restores.in_pool(decision))
        elif self.project.targets[name].derived:  # made locally, free: no budget, no provider
            task = asyncio.create_task(self.derives.derive(decision))
            self.derives.running.add(task)
            return task
        else:
            return self.requests.start(decision)
        restores.running.add(task)
        return task

    @property
    def remote(self) -> RemoteCache | None:
        """The remote layer the project gave the planner (planning sees only its answers)."""
        return cast("RemoteCache | None", self.planner.remote)

    def restore(self, decision: Decision, staged: dict[str, Path] | None = None) -> None:
        self.restores.restore(decision, staged)

    def _lock_changed(self) -> None:
        self.lock_writer.changed()


class _Notices(logging.Handler):
    """The provider's notices (a retry, a wait for Retry-After, fewer requests in flight) as
    warning lines: a build that waits should say why."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.warn(record.getMessage())


def _install_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> bool:
    if os.name != "posix":
        return False
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
        return True
    except (RuntimeError, ValueError):  # not the main thread (a library caller's worker)
        return False
