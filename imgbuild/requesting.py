"""How the executor builds a target by a request: within the budget, the inputs snapshotted as
sent, the provider's images into the cache before anything else can go wrong, the run cache, then
the outputs and the lock (a restore of what was just paid for). A failure keeps what was paid
for: in the cache, or in the rescue folder.

The steps are a generator (:meth:`Requests.steps`) that says what to run and gets its result
back: the executor runs each in a thread and awaits the provider (:meth:`Requests._call`);
sequential.py runs them one after another in its own thread. One order, two drivers.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import safekeep
from .budget import Budget, usd_text
from .cache import RunRecord, Staging
from .errors import ProviderError
from .lockwriter import utc_now
from .plan import Action, Decision
from .providers.base import ImageRequest, Provider
from .takes import choose, expected_images, images_asked

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Generator

    from .context import RunContext


class Requests:
    def __init__(self, executor: RunContext, open_provider: Callable[[], Provider]) -> None:
        self.ex = executor
        self.project = executor.project
        self.budget = Budget(executor.options.max_cost_usd, executor.planner, executor.project.targets,
                             executor.summary)
        self.running: set[asyncio.Task[bool]] = set()
        self.fatal: ProviderError | None = None
        self._open_provider = open_provider
        self._provider: Provider | None = None
        self._uncached: list[str] = []  # targets whose paid images the cache could not take
        self._cache_error: OSError | None = None

    def start(self, decision: Decision) -> bool | asyncio.Task[bool] | None:
        """The request's task; False when it cannot start; None when it must wait for the
        requests in flight (over the budget while they hold part of it)."""
        ready = self.prepare(decision)
        if not isinstance(ready, tuple):
            return ready
        import asyncio

        provider, request, reserve = ready
        task = asyncio.create_task(self._call(provider, request, decision))
        self.budget.hold(task, reserve)
        self.running.add(task)
        return task

    def prepare(self, decision: Decision) -> tuple[Provider, ImageRequest, float] | bool | None:
        """The provider, the request and what it holds of the budget, once its start is said; or
        False, or None, as :meth:`start` returns them."""
        name = decision.name
        reserve = self.budget.reserve(decision)
        if not self.budget.allows(reserve):
            if self.budget.in_flight:
                return None  # they hold their ceilings; what they really cost may leave room
            limit = self.budget.limit_usd
            assert limit is not None
            self.ex.skip(name, f"not started: it could take spending past --max-cost ${usd_text(limit, 6)}",
                         started=False)
            return False
        try:
            request = self._make_request(decision)
            provider = self._provider_now()
        except ProviderError as exc:
            self._failed(name, exc)
            return False
        except ValueError as exc:
            self.ex.fail(name, exc)
            return False
        self.ex.summary.estimate_usd += decision.estimate_usd
        self.ex.reporter.event("started", name, decision.reason, state=str(decision.state),
                               estimate_usd=decision.estimate_usd or None)
        return provider, request, reserve

    def landed(self, task: asyncio.Task[bool]) -> None:
        self.running.discard(task)
        self.budget.release(task)

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()

    def say_uncached(self) -> None:
        if not self._uncached:
            return
        exc = self._cache_error
        why = (exc.strerror or str(exc)) if exc is not None else "unknown"
        self.ex.reporter.line(
            f"error: the cache cannot take paid images ({why}: {self.project.cache.where}); "
            f"{self.ex.summary.uncached} went to their outputs "
            f"only ({', '.join(self._uncached)}), recorded in the lock: keep them (imgbuild clean caches "
            "them first), and make the cache writable or free space", error=True)

    def _provider_now(self) -> Provider:
        if self._provider is None:
            self._provider = self._open_provider()
        return self._provider

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

    def _failed(self, name: str, exc: ProviderError) -> None:
        if exc.target is None:
            exc.target = name
        self.ex.fail(name, exc)
        if exc.fatal and self.fatal is None:
            self.fatal = exc
            self.ex.stopping = True

    async def _call(self, provider: Provider, request: ImageRequest, decision: Decision) -> bool:
        """:meth:`steps`, each in a thread but the provider's, which is awaited."""
        import asyncio

        run = Steps(self.steps(request, decision))
        while (step := run.next()) is not None:
            try:
                run.gave(await provider.generate(step.request, step.folder) if isinstance(step, Generate)
                         else await asyncio.to_thread(step))
            except BaseException as exc:  # raised in the steps, as an await there would raise it
                run.raised(exc)
        return run.built

    def steps(self, request: ImageRequest, decision: Decision) -> Generator[Generate | Callable[[], Any], Any, bool]:
        """The request, from its staging folder to its outputs: yields what to run (a call, or
        the provider's :class:`Generate`) and is sent its result or thrown its error; returns
        whether the target was built."""
        name = decision.name
        cache = self.project.cache
        summary = self.ex.summary
        assert decision.spec is not None
        staging = yield partial(safekeep.staging_for, cache, request, self.project.state_dir / "tmp")
        keep_staging = False
        started = time.monotonic()
        try:
            # Sent as copied and hashed here: a save of an input mid-upload changes neither.
            request = yield partial(safekeep.snapshot_inputs, request, decision.spec, staging.folder)
            try:
                result = yield Generate(request, staging.folder)
            except ProviderError as exc:
                summary.requests += exc.requests
                summary.retries += exc.retries
                self.budget.spent(name, exc.cost_usd or 0.0)  # paid for all the same
                self._failed(name, exc)
                keep_staging = not (yield partial(self._keep_paid_for, name, staging))
                return False
            summary.requests += result.requests
            summary.retries += result.retries
            cost = result.cost_usd if result.cost_usd is not None else (
                None if self.ex.planner.free else decision.estimate_usd)
            if cost:
                self.budget.spent(name, cost)  # paid, whatever becomes of the images
            # Paid for: into the cache before anything else can go wrong (or, if it cannot take
            # them, kept where they are until they reach the outputs or the rescue folder).
            infos, staged, cache_error = yield partial(safekeep.store, cache, result.files)
            record = RunRecord(infos, self.project.settings.preset, cost, utc_now())
            target = self.project.targets[name]
            if len(infos) != expected_images(target):
                keep_staging = bool(staged) and not (yield partial(self._rescue, name, staged))
                self.ex.fail(name, f"asked for {expected_images(target)} image(s), the API returned {len(infos)} "
                                   "(kept in the cache)")
                return False
            if not staged:
                yield partial(cache.put_run, decision.spec.digest, record)
                remote = self.ex.remote
                if remote is not None:  # in the background: the next request does not wait
                    remote.publish(decision.spec.digest, record)
            for warning in result.warnings:
                self.ex.reporter.warn(f"{name}: {warning}")
            chosen, takes = choose(target, self.project.lock.get(name), decision.spec.digest, record, fresh=True)
            assert chosen is not None  # as many images as the target asks for, checked above
            restored = Decision(name, decision.state, Action.RESTORE, decision.reasons, decision.spec,
                                chosen, takes=takes)
            try:
                yield partial(self.ex.restore, restored, staged)
            except Exception:
                if not staged:
                    raise  # the cache has them: the next build restores them for free
                keep_staging = not (yield partial(self._rescue, name, staged))
                raise
            for sha, f in staged.items():  # in the outputs now: not images left over for _keep_paid_for
                if any(o.sha256 == sha for o in chosen.outputs):  # (takes not picked are left over)
                    f.unlink()
            keep_staging = not (yield partial(self._keep_paid_for, name, staging))
            if staged:
                self._uncached.append(name)
                summary.uncached += len(staged)
                self._cache_error = self._cache_error or cache_error
                if not self.ex.options.keep_going:
                    self.ex.stopping = True  # buy nothing more that the cache cannot keep
            summary.built += 1
            self.ex.reporter.event("built", name, decision.reason, state=str(decision.state),
                                   seconds=round(time.monotonic() - started, 2), cost_usd=cost)
            self.ex.finished(decision)
            return True
        finally:
            if keep_staging:
                staging.keep()
            staging.close()

    def _keep_paid_for(self, name: str, staging: Staging) -> bool:
        """Images a failed target did receive (e.g. 2 of aimlapi's 3 requests of one) go into the
        cache: they were paid for. ``gc`` prunes them once nothing needs them. Returns False when
        some could go nowhere: the staging folder must then stay for the next build."""
        kept, staged, _ = safekeep.store(self.project.cache, staging.files())
        if staged:
            folder = safekeep.rescue(self.project.state_dir, name, staged.values())
            self.ex.reporter.warn(f"{name}: {len(staged)} paid image(s) that are not its outputs could not go "
                                  f"into the cache; kept in "
                                  f"{folder.relative_to(self.project.root) if folder else staging.folder}")
            if folder is None:
                return False
            kept = [k for k in kept if k.sha256 not in staged]
        if kept:
            self.ex.reporter.warn(f"{name}: kept {len(kept)} image(s) that came back paid for but are not its "
                                  f"outputs in the cache ({', '.join(k.sha256[:12] for k in kept)})")
        return True

    def _rescue(self, name: str, staged: dict[str, Path]) -> bool:
        """Paid images that reached neither the cache nor the outputs: into the rescue folder."""
        folder = safekeep.rescue(self.project.state_dir, name, staged.values())
        where = folder.relative_to(self.project.root) if folder else next(iter(staged.values())).parent
        self.ex.summary.uncached += len(staged)
        self.ex.reporter.line(f"error: {name}: {len(staged)} paid image(s) could go neither into the cache nor "
                              f"to the outputs; kept in {where}", error=True)
        return folder is not None


class Steps:
    """A request's steps as a driver takes them: :meth:`next` is the next thing to run (None once
    they are done: :attr:`built` says how), given what the last one gave or raised."""

    def __init__(self, steps: Generator[Generate | Callable[[], Any], Any, bool]) -> None:
        self._steps = steps
        self._sent: Any = None
        self._thrown: BaseException | None = None
        self.built = False

    def next(self) -> Generate | Callable[[], Any] | None:
        sent, thrown, self._sent, self._thrown = self._sent, self._thrown, None, None
        try:
            return self._steps.throw(thrown) if thrown is not None else self._steps.send(sent)
        except StopIteration as done:
            self.built = bool(done.value)
            return None

    def gave(self, value: Any) -> None:
        self._sent = value

    def raised(self, exc: BaseException) -> None:
        self._thrown = exc


class Generate:
    """A step of :meth:`Requests.steps`: the provider's images for ``request``, into ``folder``."""

    __slots__ = ("request", "folder")

    def __init__(self, request: ImageRequest, folder: Path) -> None:
        self.request, self.folder = request, folder


def _check_mask_fits(root: Path, mask: str, first: str) -> None:
    from .images import image_info

    m, f = image_info(root / mask), image_info(root / first)
    if m.size != f.size:
        raise ValueError(f"mask {mask} is {m.size[0]}x{m.size[1]} but its first input {first} came out "
                         f"{f.size[0]}x{f.size[1]}; the mask must match it")
