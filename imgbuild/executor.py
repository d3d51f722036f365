"""Runs a plan: asyncio, dependency order, bounded concurrency, keep-going, budget, interrupts.

For every request the order is fixed: the provider's files go into the cache, then the run cache
records the spec, then the outputs are written (atomically), then the lock. A crash at any point
loses nothing that was paid for: the next build restores it from the cache.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import copybatch, safekeep
from .cache import OutputInfo, RunRecord, Staging
from .copybatch import BatchedRestores, CopyBatch
from .errors import BudgetExceeded, ImgbuildError, ProviderError
from .plan import Action, Decision, State
from .pricing import ceiling_usd
from .providers.base import ImageRequest, Provider
from .review import history
from .summary import BuildOptions, Summary  # noqa: F401 - re-exported: the library's names
from .takes import choose, expected_images, images_asked, lock_fields

if TYPE_CHECKING:
    from .context import BuildContext
    from .plan import Planner
    from .remotecache import RemoteCache
    from .ui import Reporter


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
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
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
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        await asyncio.to_thread(self._save, True)
        self.project.lock.end_journal()


class Executor:
    def __init__(self, project: BuildContext, planner: Planner, order: list[str], reporter: Reporter,
                 options: BuildOptions, open_provider: Callable[[], Provider]) -> None:
        self.project = project
        self.planner = planner
        self.order = order
        self.reporter = reporter
        self.options = options
        self._open_provider = open_provider
        self._provider: Provider | None = None
        self.summary = Summary()
        self.stopping = False
        self.fatal: ProviderError | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self._sigints = 0
        self._in_flight_usd = 0.0
        self._estimates: dict[asyncio.Task[bool], float] = {}  # requests in flight → what they reserve
        self._ceilings: dict[str, float] = {}  # target → the most its request can cost by the prices
        self._overrun = 1.0  # the worst actual/ceiling ratio seen: later requests reserve that much more
        self.jobs = max(1, options.jobs or project.settings.concurrency)
        self.lock_writer = LockWriter(project)
        self._uncached: list[str] = []  # targets whose paid images the cache could not take
        self._cache_error: OSError | None = None
        self._restoring: set[asyncio.Task[Any]] = set()
        self._restore_pool: BatchedRestores | None = None
        self._not_fetched: set[str] = set()  # planned from the remote cache, but its objects did not come
        self._deriving: set[asyncio.Task[Any]] = set()
        self._derive_pool: Any = None  # imgbuild.derive.pool.DerivePool, imported at the first derived target

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
                        self._skip(name, f"depends on {', '.join(failed_deps)}, which was not built")
                        complete(name, False)
                        continue
                    try:
                        outcome = await self._start(name)
                    except Exception as exc:  # an OS error in one target must not lose the others
                        self._fail(name, exc)
                        outcome = False
                    if outcome is None:  # over the budget while requests are in flight: after they land
                        heapq.heappush(ready, (index[name], name))
                        break
                    if isinstance(outcome, asyncio.Task):
                        running[outcome] = name
                        if outcome not in self._restoring and outcome not in self._deriving:
                            self._requests.add(outcome)
                    else:
                        complete(name, outcome)
                if running:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        name = running.pop(task)
                        self._requests.discard(task)
                        self._restoring.discard(task)
                        self._deriving.discard(task)
                        if name in self._not_fetched:  # decided again: a request, most likely
                            heapq.heappush(ready, (index[name], name))
                            continue
                        complete(name, self._outcome(name, task))
        finally:
            if self._restore_pool is not None:
                self._restore_pool.shutdown()
            if self._derive_pool is not None:
                await asyncio.to_thread(self._derive_pool.shutdown)
            self._say_uncached()
            await self.lock_writer.flush()
            try:
                await asyncio.to_thread(self.project.stats.save)
            except OSError as exc:  # the lock and outputs are saved: the stat cache is a speed-up
                raise ImgbuildError(f"{self.project.stats.path.relative_to(self.project.root)}: cannot be saved "
                                    f"({exc.strerror or exc}); the images and the lock are: free space or "
                                    "make the folder writable") from exc
            if self._provider is not None:
                await self._provider.aclose()
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
        if len(self._restoring) >= copybatch.IN_FLIGHT:
            return None
        room = running - len(self._restoring) - len(self._deriving) < self.jobs
        if local and len(self._deriving) < self._derive_slots() and (not room or not ready or local[0] < ready[0]):
            return heapq.heappop(local)[1]
        if ready and room:
            return heapq.heappop(ready)[1]
        return None

    def _derive_slots(self) -> int:
        """Derived jobs handed to the pool at once: enough to keep every worker busy, few enough
        that the order stays the build order."""
        from .derive.pool import default_workers

        return 2 * (self._derive_pool.workers if self._derive_pool is not None else default_workers())

    def _with_work(self) -> list[str]:
        """The order without the targets planned up to date: they are final (nothing replaces
        their decision but their own build), done before the loop starts, and a one-target change
        in 10,000 must not walk the scheduler over the other 9,999. One that reads what a target
        with work makes stays: if that one fails, it is skipped, as before."""
        decisions, selected = self.planner.decisions, set(self.order)
        done: set[str] = set()
        order = []
        for name in self.order:  # in build order: a target's dependencies are decided first
            d = decisions.get(name)
            if (d is not None and d.action is Action.NOTHING
                    and all(p in done or p not in selected for p in self.project.deps[name])):
                done.add(name)
            else:
                order.append(name)
        self.summary.up_to_date += len(done)
        trace = os.environ.get("IMGBUILD_TRACE_SCHEDULED")
        if trace:  # for tests: which targets the scheduler walked, one line per build
            with open(trace, "a") as f:
                f.write(" ".join(order) + "\n")
        return order

    def _say_uncached(self) -> None:
        if not self._uncached:
            return
        exc = self._cache_error
        why = (exc.strerror or str(exc)) if exc is not None else "unknown"
        self.reporter.line(
            f"error: the cache cannot take paid images ({why}: {self.project.cache.where}); "
            f"{self.summary.uncached} went to their outputs "
            f"only ({', '.join(self._uncached)}), recorded in the lock: keep them (imgbuild clean caches "
            "them first), and make the cache writable or free space", error=True)

    def _outcome(self, name: str, task: asyncio.Task[bool]) -> bool:
        self._in_flight_usd -= self._estimates.pop(task, 0.0)
        if task.cancelled():
            self._skip(name, "abandoned: interrupted")
            return False
        exc = task.exception()
        if exc is not None:
            self._fail(name, exc)
            return False
        return task.result()

    def _on_sigint(self) -> None:
        self._sigints += 1
        if self._sigints == 1:
            self.stopping = True
            self.summary.interrupted = True
            n = len(self._requests)
            self.reporter.warn(
                f"interrupted: starting nothing new; waiting for {n} request(s) in flight to finish "
                "and be saved (Ctrl-C again to abandon them)" if n else "interrupted: starting nothing new"
            )
        else:
            self.reporter.warn("interrupted again: abandoning the requests in flight")
            for task in list(self._requests):
                task.cancel()

    async def _start(self, name: str) -> bool | asyncio.Task[bool] | None:
        """Act on a target whose dependencies are done: True/False when finished here and now,
        the task of the request it started, or None when it must wait for requests in flight."""
        decision = self.planner.decisions.get(name)
        if decision is None or decision.action in (Action.WAIT, Action.REQUEST) or name in self._not_fetched:
            # A request sends the inputs as they are now, and its spec must say what was sent: an
            # input saved since the plan (watch mode queues such saves) is hashed again here.
            self._not_fetched.discard(name)  # what did not come from the remote counts as absent now
            decision = self.planner.decide(name)
            if decision.action is Action.REQUEST and self.planner.remote is not None and not self._ask_later(decision):
                decision = await self._from_remote(decision)
        if decision.action is Action.NOTHING:
            self.summary.up_to_date += 1
            return True
        if decision.action is Action.SKIP:
            self.summary.skipped += 1
            self.reporter.event("skipped", name, decision.reason, state=str(decision.state))
            # A modified or pinned output still feeds its dependents as it is on disk.
            return all(p is not None for p in decision.promised)
        if decision.action is Action.FAIL:
            self._fail(name, decision.reason)
            return False
        if self.stopping:
            self._skip(name, "not started: the build is stopping", started=False)
            return False
        if decision.action is Action.REQUEST and self._ask_later(decision):
            task = asyncio.create_task(self._remote_or_request(decision))
            self._restoring.add(task)
            return task
        if decision.action is Action.RESTORE:
            task = asyncio.create_task(self._restore_in_pool(decision))
            self._restoring.add(task)
            return task
        if self.project.targets[name].derived:  # made locally, free: no budget, no provider
            task = asyncio.create_task(self._derive(decision))
            self._deriving.add(task)
            return task
        limit = self.options.max_cost_usd
        reserve = self._reserve(decision)
        if limit is not None and self.summary.cost_usd + self._in_flight_usd + reserve > limit:
            if self._estimates:
                return None  # they reserve their ceilings; what they really cost may leave room
            self._skip(name, f"not started: it could take spending past --max-cost ${_usd_text(limit, 6)}",
                       started=False)
            return False
        try:
            request = self._make_request(decision)
            provider = self._provider_now()
        except ProviderError as exc:
            self._request_failed(name, exc)
            return False
        except ValueError as exc:
            self._fail(name, exc)
            return False
        self._in_flight_usd += reserve
        self.summary.estimate_usd += decision.estimate_usd
        self.reporter.event("started", name, decision.reason, state=str(decision.state),
                            estimate_usd=decision.estimate_usd or None)
        task = asyncio.create_task(self._call(provider, request, decision))
        self._estimates[task] = reserve
        return task

    async def _from_remote(self, decision: Decision) -> Decision:
        """Before a request: the remote cache may have what a target that waited for others
        makes (its spec was unknown when the build looked the others up). Fetched into the local
        cache, it is restored from there; an object that does not come (altered, gone, the remote
        down) is absent, and the request goes ahead."""
        remote, spec = self._remote, decision.spec
        assert remote is not None and spec is not None
        if decision.name in self.planner.force:
            return decision  # -B: a new take, whatever any cache holds
        if not await remote.look_up([spec.digest], self._locked_objects(decision), confirm=False):
            return decision
        again = self.planner.decide(decision.name)
        if again.state is State.REMOTE and again.run is not None:
            await remote.fetch_runs([(spec.digest, again.run)])
            self.summary.fetched = remote.restored
            again = self.planner.decide(decision.name)
        return again

    def _locked_objects(self, decision: Decision) -> list[str]:
        """The objects the lock names for the target, if it records this very spec."""
        entry = self.project.lock.get(decision.name)
        spec = decision.spec
        if not entry or spec is None or entry.get("spec") != spec.digest:
            return []
        return [o.get("sha256", "") for o in entry.get("outputs", [])]

    def _ask_later(self, decision: Decision) -> bool:
        """A planned request whose run entry the remote cache was not asked for before the build
        (the project left them to the targets as they start): asked in a restore's slot."""
        remote = self._remote
        return (remote is not None and decision.spec is not None and decision.name not in self.planner.force
                and not remote.answered(decision.spec.digest))

    async def _remote_or_request(self, decision: Decision) -> bool:
        """Ask the remote cache for the target's run entry, and restore from it if it has one,
        while the scheduler starts others: restores begin with the first answer, not the last.
        Otherwise the target goes back to the scheduler, which decides it again: a request."""
        remote, spec = self._remote, decision.spec
        assert remote is not None and spec is not None
        await remote.look_up([spec.digest], self._locked_objects(decision), confirm=False)
        again = self.planner.decide(decision.name)
        if again.action is not Action.RESTORE:
            self._not_fetched.add(decision.name)
            return False
        return await self._restore_in_pool(again)

    def _reserve(self, decision: Decision) -> float:
        """What a request holds of the budget while in flight: the most it can cost by the prices
        (pricing.ceiling_usd), times the worst overrun a server has shown in this build."""
        if self.planner.free:
            return 0.0
        target = self.project.targets[decision.name]
        p = target.params
        ceiling = ceiling_usd(size=p["size"], quality=p["quality"], n=images_asked(p), prompt=target.prompt,
                              input_images=len(target.images), prices=self.planner.prices)
        self._ceilings[decision.name] = ceiling
        return ceiling * self._overrun

    def _spent(self, name: str, usd: float) -> None:
        self.summary.cost_usd += usd
        ceiling = self._ceilings.get(name, 0.0)
        if ceiling > 0 and usd > ceiling:
            # The server charges more than the prices say: hold what starts next to its price.
            self._overrun = max(self._overrun, usd / ceiling)

    def _finished(self, decision: Decision) -> None:
        self.planner.decisions[decision.name] = Decision(
            decision.name, State.OK, Action.NOTHING, [], decision.spec,
            promised=tuple(self.project.stats.digest(o) for o in self.project.targets[decision.name].outputs),
        )
        self.lock_writer.changed()

    def _skip(self, name: str, why: str, *, started: bool = True) -> None:
        self.summary.skipped += 1
        if not started:
            self.summary.not_started += 1
        self.reporter.event("skipped", name, why)

    def _fail(self, name: str, error: BaseException | str) -> None:
        self.summary.failed += 1
        text = str(error) or type(error).__name__
        message = text if isinstance(error, ProviderError) and error.target else f"{name}: {text}"
        self.summary.failures.append(message)
        self.reporter.event("failed", name, message)
        if not self.options.keep_going:
            self.stopping = True

    # -- restore -------------------------------------------------------------------------------

    async def _restore_in_pool(self, decision: Decision) -> bool:
        """Restores run side by side (copies and fsyncs wait on the disk, not the CPU), beside
        the requests in flight and not counted against ``jobs``."""
        if self._restore_pool is None:  # batches: one sync and one folder check for many files
            self._restore_pool = BatchedRestores(self._restore_into, self.lock_writer.dirs, _name_os_thread)
        if not await self._fetched(decision):
            self._not_fetched.add(decision.name)
            return False
        await self._restore_pool.restore(decision)
        self.summary.restored += 1
        self.reporter.event("restored", decision.name, decision.reason, state=str(decision.state))
        self._finished(decision)
        return True

    @property
    def _remote(self) -> RemoteCache | None:
        """The remote layer the project gave the planner (planning sees only its answers)."""
        return cast("RemoteCache | None", self.planner.remote)

    async def _fetched(self, decision: Decision) -> bool:
        """A target the remote cache restores: its objects into the local cache first (checked,
        durable). Fetched as each such restore starts, so that the first outputs are copied
        while later objects are still coming down. False if any did not come."""
        remote = self._remote
        if decision.state is not State.REMOTE or remote is None or decision.spec is None or decision.run is None:
            return True
        return await remote.fetch_runs([(decision.spec.digest, decision.run)])

    def _restore(self, decision: Decision, staged: dict[str, Path] | None = None) -> None:
        """Copy a run's outputs from the cache (or from ``staged`` files the cache could not take);
        record them in the lock under the decision's spec (a pinned target's missing outputs,
        restored with no spec, leave its lock entry alone)."""
        batch = CopyBatch(self.lock_writer.dirs)  # a batch of one
        batch.run(decision.name, lambda b: self._restore_into(decision, b, staged))
        error = batch.commit().get(decision.name)
        if error is not None:
            raise error

    def _restore_into(self, decision: Decision, batch: CopyBatch, staged: dict[str, Path] | None = None) -> None:
        """:meth:`_restore`, its copies and what follows them part of ``batch``."""
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

    # -- requests ------------------------------------------------------------------------------

    def _provider_now(self) -> Provider:
        if self._provider is None:
            self._provider = self._open_provider()
        return self._provider

    def _keep_paid_for(self, name: str, staging: Staging) -> bool:
        """Images a failed target did receive (e.g. 2 of aimlapi's 3 requests of one) go into the
        cache: they were paid for. ``gc`` prunes them once nothing needs them. Returns False when
        some could go nowhere: the staging folder must then stay for the next build."""
        kept, staged, _ = safekeep.store(self.project.cache, staging.files())
        if staged:
            folder = safekeep.rescue(self.project.state_dir, name, staged.values())
            self.reporter.warn(f"{name}: {len(staged)} paid image(s) that are not its outputs could not go into the "
                               f"cache; kept in {folder.relative_to(self.project.root) if folder else staging.folder}")
            if folder is None:
                return False
            kept = [k for k in kept if k.sha256 not in staged]
        if kept:
            self.reporter.warn(f"{name}: kept {len(kept)} image(s) that came back paid for but are not its "
                               f"outputs in the cache ({', '.join(k.sha256[:12] for k in kept)})")
        return True

    def _make_request(self, decision: Decision) -> ImageRequest:
        target = self.project.targets[decision.name]
        root = self.project.root
        p = target.params
        if target.mask and target.images[0] in self.project.producers:
            _check_mask_fits(root, target.mask, target.images[0])
        return ImageRequest(
            target=target.name, model=self.project.settings.model, prompt=target.prompt,
            size=p["size"], quality=p["quality"], output_format=p["output_format"],
            background=p["background"], moderation=p["moderation"],
            output_compression=p.get("output_compression"), n=images_asked(p),
            images=tuple(root / i for i in target.images),
            mask=root / target.mask if target.mask else None, extra=target.extra,
        )

    def _request_failed(self, name: str, exc: ProviderError) -> None:
        if exc.target is None:
            exc.target = name
        self._fail(name, exc)
        if exc.fatal and self.fatal is None:
            self.fatal = exc
            self.stopping = True

    async def _call(self, provider: Provider, request: ImageRequest, decision: Decision) -> bool:
        name = decision.name
        cache = self.project.cache
        assert decision.spec is not None
        staging = await asyncio.to_thread(safekeep.staging_for, cache, request, self.project.state_dir / "tmp")
        keep_staging = False
        started = time.monotonic()
        try:
            # Sent as copied and hashed here: a save of an input mid-upload changes neither.
            request = await asyncio.to_thread(safekeep.snapshot_inputs, request, decision.spec, staging.folder)
            try:
                result = await provider.generate(request, staging.folder)
            except ProviderError as exc:
                self.summary.requests += exc.requests
                self.summary.retries += exc.retries
                self._spent(name, exc.cost_usd or 0.0)  # paid for all the same
                self._request_failed(name, exc)
                keep_staging = not await asyncio.to_thread(self._keep_paid_for, name, staging)
                return False
            self.summary.requests += result.requests
            self.summary.retries += result.retries
            cost = result.cost_usd if result.cost_usd is not None else (
                None if self.planner.free else decision.estimate_usd)
            if cost:
                self._spent(name, cost)  # paid, whatever becomes of the images
            # Paid for: into the cache before anything else can go wrong (or, if it cannot take
            # them, kept where they are until they reach the outputs or the rescue folder).
            infos, staged, cache_error = await asyncio.to_thread(safekeep.store, cache, result.files)
            record = RunRecord(infos, self.project.settings.preset, cost, utc_now())
            target = self.project.targets[name]
            if len(infos) != expected_images(target):
                keep_staging = bool(staged) and not await asyncio.to_thread(self._rescue, name, staged)
                self._fail(name, f"asked for {expected_images(target)} image(s), the API returned {len(infos)} "
                                 "(kept in the cache)")
                return False
            if not staged:
                await asyncio.to_thread(cache.put_run, decision.spec.digest, record)
                if self._remote is not None:  # in the background: the next request does not wait
                    self._remote.publish(decision.spec.digest, record)
            for warning in result.warnings:
                self.reporter.warn(f"{name}: {warning}")
            chosen, takes = choose(target, self.project.lock.get(name), decision.spec.digest, record, fresh=True)
            assert chosen is not None  # as many images as the target asks for, checked above
            restored = Decision(name, decision.state, Action.RESTORE, decision.reasons, decision.spec,
                                chosen, takes=takes)
            try:
                await asyncio.to_thread(self._restore, restored, staged)
            except Exception:
                if not staged:
                    raise  # the cache has them: the next build restores them for free
                keep_staging = not await asyncio.to_thread(self._rescue, name, staged)
                raise
            for sha, f in staged.items():  # in the outputs now: not images left over for _keep_paid_for
                if any(o.sha256 == sha for o in chosen.outputs):  # (takes not picked are left over)
                    f.unlink()
            keep_staging = not await asyncio.to_thread(self._keep_paid_for, name, staging)
            if staged:
                self._uncached.append(name)
                self.summary.uncached += len(staged)
                self._cache_error = self._cache_error or cache_error
                if not self.options.keep_going:
                    self.stopping = True  # buy nothing more that the cache cannot keep
            self.summary.built += 1
            self.reporter.event("built", name, decision.reason, state=str(decision.state),
                                seconds=round(time.monotonic() - started, 2), cost_usd=cost)
            self._finished(decision)
            return True
        finally:
            if keep_staging:
                staging.keep()
            staging.close()

    async def _derive(self, decision: Decision) -> bool:
        """Make a derived target in the process pool; then it goes the way of a request's images:
        into the cache, the run cache, the outputs and the lock (a restore of what was just made)."""
        from .derive import DeriveError
        from .derive.pool import DerivePool, Job

        name = decision.name
        target = self.project.targets[name]
        cache = self.project.cache
        assert decision.spec is not None
        if self._derive_pool is None:
            self._derive_pool = DerivePool()
        started = time.monotonic()
        staging = await asyncio.to_thread(cache.stage)
        try:
            files = [staging.file(f"{i}{os.path.splitext(out)[1]}") for i, out in enumerate(target.outputs)]
            inputs = tuple((str(self.project.root / i.path), i.path, i.sha256) for i in decision.spec.inputs)
            job = Job(name, dict(target.params), inputs, tuple(str(f) for f in files))
            try:
                await self._derive_pool.run(job)
            except DeriveError as exc:
                self._fail(name, exc)
                return False
            infos = await asyncio.to_thread(lambda: [cache.put_file(f) for f in files])
            record = RunRecord(infos, "derive", None, utc_now())
            await asyncio.to_thread(cache.put_run, decision.spec.digest, record)
            made = Decision(name, decision.state, Action.RESTORE, decision.reasons, decision.spec, record)
            await asyncio.to_thread(self._restore, made)
        finally:
            staging.close()
        self.summary.built += 1
        self.reporter.event("built", name, decision.reason, state=str(decision.state),
                            seconds=round(time.monotonic() - started, 2))
        self._finished(decision)
        return True

    def _rescue(self, name: str, staged: dict[str, Path]) -> bool:
        """Paid images that reached neither the cache nor the outputs: into the rescue folder."""
        folder = safekeep.rescue(self.project.state_dir, name, staged.values())
        where = folder.relative_to(self.project.root) if folder else next(iter(staged.values())).parent
        self.summary.uncached += len(staged)
        self.reporter.line(f"error: {name}: {len(staged)} paid image(s) could go neither into the cache nor to "
                           f"the outputs; kept in {where}", error=True)
        return folder is not None


class _Notices(logging.Handler):
    """The provider's notices (a retry, a wait for Retry-After, fewer requests in flight) as
    warning lines: a build that waits should say why."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.warn(record.getMessage())


def _name_os_thread() -> None:
    """Name a restore thread where tools see it (`top -H`, /proc/PID/task/*/comm)."""
    if sys.platform == "linux":
        try:
            import ctypes

            ctypes.CDLL(None).prctl(15, b"imgbuild-restore", 0, 0, 0)  # PR_SET_NAME (15 bytes kept)
        except (OSError, AttributeError):
            pass


def _check_mask_fits(root: Path, mask: str, first: str) -> None:
    from .images import image_info

    m, f = image_info(root / mask), image_info(root / first)
    if m.size != f.size:
        raise ValueError(f"mask {mask} is {m.size[0]}x{m.size[1]} but its first input {first} came out "
                         f"{f.size[0]}x{f.size[1]}; the mask must match it")


def _install_sigint(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> bool:
    if os.name != "posix":
        return False
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
        return True
    except (RuntimeError, ValueError):  # not the main thread (a library caller's worker)
        return False


def check_budget(decisions: list[Decision], max_cost_usd: float | None) -> float:
    total = sum(d.estimate_usd for d in decisions if d.action in (Action.REQUEST, Action.WAIT))
    if max_cost_usd is not None and total > max_cost_usd:
        estimate, limit = _distinct_usd(total, max_cost_usd)
        raise BudgetExceeded(
            f"the estimate is {estimate}, over --max-cost {limit}: build fewer targets, or raise the limit"
        )
    return total


def _distinct_usd(amount: float, limit: float) -> tuple[str, str]:
    """Both in dollars, with as many decimals as it takes to see that they differ
    (``$0.0213`` over ``$0.02``, not ``$0.02`` over ``$0.02``)."""
    digits = 2
    while digits < 8 and f"{amount:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    if digits > 2:
        digits += 1  # one more than the first that differs: $0.0213, not $0.021
    return f"${amount:.{digits}f}", f"${_usd_text(limit, digits)}"


def _usd_text(usd: float, digits: int) -> str:
    """As written: ``0.02``, ``0.025``, at least two decimals and no trailing zeros beyond."""
    text = f"{usd:.{digits}f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"
