"""A few targets built one after another in this thread, without an event loop: the scoped path's
build (scoped.py) of a one-prompt change with the offline placeholder, where asyncio's import and
loop would cost more than the work (~0.04 s of a ~0.3 s change in 10,000 targets).

The steps are the executor's own: a request runs :meth:`requesting.Requests.steps`, a restore
:meth:`restoring.Restores.restore`; each finished target goes to the lock's journal as it does
there, the lock is rewritten at most once a second and at the end, and the events, summary and
errors are those of :class:`runbase.RunBase`. What needs concurrency (a provider over HTTP, the
remote cache, derived targets, a pool of restores) is the executor's alone: scoped.py comes here
only without them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .fsutil import DirSyncs
from .lockwriter import LockWriter
from .plan import Action
from .requesting import Generate, Requests, Steps
from .restoring import Restores
from .runbase import RunBase

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .context import BuildContext
    from .plan import Decision, Planner
    from .providers.placeholder import PlaceholderProvider
    from .remotecache import RemoteCache
    from .summary import BuildOptions, Summary
    from .ui import Reporter


class Sequential(RunBase):
    def __init__(self, project: BuildContext, planner: Planner, order: list[str], reporter: Reporter,
                 options: BuildOptions, open_provider: Callable[[], PlaceholderProvider]) -> None:
        super().__init__(project, planner, order, reporter, options)
        self.dirs = DirSyncs()
        self.restores = Restores(self)
        self.requests = Requests(self, open_provider)
        self._saved = 0.0
        self._in_flight = 0  # a request under way (between its start and its end)

    @property
    def remote(self) -> RemoteCache | None:
        return None

    def restore(self, decision: Decision, staged: dict[str, Path] | None = None) -> None:
        self.restores.restore(decision, staged)

    def run(self) -> Summary:
        """Each target in build order (its dependencies before it), as the executor would start
        them one at a time."""
        import signal
        import threading

        lock = self.project.lock
        lock.begin_journal()
        self._saved = time.monotonic()
        results: dict[str, bool] = {}
        handled = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._on_sigint) if handled else None
        try:
            for name in self._with_work():
                failed = [d for d in self.project.deps[name] if results.get(d) is False]
                if failed:
                    self.skip(name, f"depends on {', '.join(failed)}, which was not built")
                    results[name] = False
                    continue
                try:
                    results[name] = self._start(name)
                except Exception as exc:  # an OS error in one target must not lose the others
                    self.fail(name, exc)
                    results[name] = False
        finally:
            if handled:
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
            self.requests.say_uncached()
            self._save(json_copy=True)
            lock.end_journal()
            self.project.stats.save()
        return self.summary

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted(self._in_flight):
            raise KeyboardInterrupt  # into the request's steps, which keep what they can

    def _start(self, name: str) -> bool:
        """As the executor's ``_start``, for the kinds of decision scoped.py lets through."""
        decision = self.planner.decisions.get(name)
        if decision is None or decision.action in (Action.WAIT, Action.REQUEST):
            decision = self.planner.decide(name)  # the inputs as they are now (see the executor)
        settled = self._settled(name, decision)
        if settled is not None:
            return settled
        if decision.action is Action.RESTORE:
            self.restore(decision)
            self.summary.restored += 1
            self.reporter.event("restored", name, decision.reason, state=str(decision.state))
            self.finished(decision)
            return True
        ready = self.requests.prepare(decision)
        if not isinstance(ready, tuple):
            return bool(ready)  # None (wait for the requests in flight) cannot be: none are
        provider, request, _ = ready
        self._in_flight = 1
        try:
            return _drive(Steps(self.requests.steps(request, decision)), provider.generate_now)  # type: ignore[attr-defined]
        finally:
            self._in_flight = 0

    def _lock_changed(self) -> None:
        if time.monotonic() - self._saved >= LockWriter.INTERVAL_S:
            self._save(json_copy=False)

    def _save(self, *, json_copy: bool) -> None:
        self.dirs.flush()  # the outputs' folders, before the lock that names them
        self.project.lock.save(json_copy=json_copy)
        self._saved = time.monotonic()


def _drive(run: Steps, generate: Callable[..., Any]) -> bool:
    """Run a request's steps here, one after another (the executor's ``_call`` awaits them)."""
    while (step := run.next()) is not None:
        try:
            run.gave(generate(step.request, step.folder) if isinstance(step, Generate) else step())
        except BaseException as exc:  # raised in the steps, where they can keep what was paid for
            run.raised(exc)
    return run.built
