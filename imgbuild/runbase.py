"""What every runner of a plan shares (executor.py, sequential.py): the build's summary and
options, and how a target ends — finished, skipped or failed — said the same way by both."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import ProviderError
from .plan import Action, Decision, State
from .summary import Summary

if TYPE_CHECKING:
    from .context import BuildContext
    from .plan import Planner
    from .summary import BuildOptions
    from .ui import Reporter


class RunBase:
    def __init__(self, project: BuildContext, planner: Planner, order: list[str], reporter: Reporter,
                 options: BuildOptions) -> None:
        self.project = project
        self.planner = planner
        self.order = order
        self.reporter = reporter
        self.options = options
        self.summary = Summary()
        self.stopping = False
        self._sigints = 0

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

    def _settled(self, name: str, decision: Decision) -> bool | None:
        """How a target that needs no work ends (up to date, skipped, failed, or not started by a
        stopping build): whether its dependents may go on; None when it is to be built."""
        if decision.action is Action.NOTHING:
            self.summary.up_to_date += 1
            return True
        if decision.action is Action.SKIP:
            self.summary.skipped += 1
            self.reporter.event("skipped", name, decision.reason, state=str(decision.state))
            # A modified or pinned output still feeds its dependents as it is on disk.
            return all(p is not None for p in decision.promised)
        if decision.action is Action.FAIL:
            self.fail(name, decision.reason)
            return False
        if self.stopping:
            self.skip(name, "not started: the build is stopping", started=False)
            return False
        return None

    def interrupted(self, in_flight: int) -> bool:
        """Ctrl-C: the first starts nothing new and lets the requests in flight finish and be
        saved; the second abandons them (the caller does, when this returns True)."""
        self._sigints += 1
        if self._sigints == 1:
            self.stopping = True
            self.summary.interrupted = True
            self.reporter.warn(
                f"interrupted: starting nothing new; waiting for {in_flight} request(s) in flight to finish "
                "and be saved (Ctrl-C again to abandon them)" if in_flight else "interrupted: starting nothing new"
            )
            return False
        self.reporter.warn("interrupted again: abandoning the requests in flight")
        return True

    def _lock_changed(self) -> None:
        """A finished target's entry is in the lock (and its journal): the runner saves it in time."""

    def finished(self, decision: Decision) -> None:
        self.planner.decisions[decision.name] = Decision(
            decision.name, State.OK, Action.NOTHING, [], decision.spec,
            promised=tuple(self.project.stats.digest(o) for o in self.project.targets[decision.name].outputs),
        )
        self._lock_changed()

    def skip(self, name: str, why: str, *, started: bool = True) -> None:
        self.summary.skipped += 1
        if not started:
            self.summary.not_started += 1
        self.reporter.event("skipped", name, why)

    def fail(self, name: str, error: BaseException | str) -> None:
        self.summary.failed += 1
        text = str(error) or type(error).__name__
        message = text if isinstance(error, ProviderError) and error.target else f"{name}: {text}"
        self.summary.failures.append(message)
        self.reporter.event("failed", name, message)
        if not self.options.keep_going:
            self.stopping = True
