"""``imgbuild watch``: build, then rebuild what each change affects, as it happens.

One asyncio loop runs it all. watchfiles' ``awatch`` (a thread underneath) feeds a set of pending
paths; a debounce waits until the project has been quiet for ``debounce_ms``; then the project is
reloaded and :meth:`Project.abuild` is awaited in the same loop. While a build runs, changes keep
piling up in the pending set and are applied after it: a change never cancels a request in flight
(it is paid for).

Which targets a change affects is not decided here: every batch reloads the manifest and lets the
plan decide, exactly as ``build`` would. Watch only decides whether a batch is worth a reload: a
path no target reads or writes is dropped, and so is an output whose bytes are the ones the lock
records (the build's own write) — so a build never retriggers itself.

``-B`` forces the initial build only: a save is a change to react to, not a request to pay again
for everything.

Ctrl-C while idle ends the watch with exit code 0: leaving is a watch's normal end and nothing was
cut short. During a build the executor's own handler is in charge, as in ``build`` (the first
Ctrl-C starts nothing new and saves the requests in flight, the second abandons them); the watch
then ends with exit code 130.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from watchfiles import Change, DefaultFilter

from .errors import ImgbuildError, ManifestError, UsageError
from .executor import BuildOptions, Summary
from .fsutil import TEMP_PREFIX
from .project import STATE_DIR, Project
from .ui import LiveReporter, Reporter, make_reporter, money

# How often watchfiles' thread looks for new events. It hands over a batch once a step passes with
# no new event, so this adds at most two steps to the debounce; small steps keep the save-to-request
# latency low, and waking a sleeping thread every 20 ms costs nothing measurable.
STEP_MS = 20
# However busy the folder, a batch is built after this long: a tool rewriting a file every 100 ms
# must not hold the rebuild off for ever.
MAX_WAIT_S = 2.0


class WatchFilter:
    """Which raw filesystem events may matter: not imgbuild's state folder, its temp files (atomic
    writes), the lock, nor VCS folders and editor swap files (watchfiles' defaults). Paths are
    judged relative to the project root, so a root that itself sits under e.g. ``.venv`` works."""

    def __init__(self, root: Path, lock_name: str) -> None:
        self.root = root
        self.lock_name = lock_name
        self._ignore_dirs = {STATE_DIR, *DefaultFilter.ignore_dirs}
        self._ignore_names = DefaultFilter()  # its entity patterns: *.swp, *~, .DS_Store, ...

    def relative(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return None
        return rel.replace(os.sep, "/")

    def __call__(self, change: Change, path: str) -> bool:
        rel = self.relative(path)
        if rel is None or rel == self.lock_name:
            return False
        parts = rel.split("/")
        if any(p in self._ignore_dirs for p in parts[:-1]) or parts[-1] in self._ignore_dirs:
            return False
        if parts[-1].startswith(TEMP_PREFIX):
            return False
        return self._ignore_names(change, parts[-1])


class _Recorder(Reporter):
    """Passes a build's events on to the user's reporter and remembers them, for the one line per
    rebuild. Off JSON, that line replaces the per-target lines of built and restored targets; what
    needs attention (failed, skipped, warnings) is still shown as ``build`` shows it."""

    KINDS = ("built", "restored", "failed", "skipped")

    def __init__(self, inner: Reporter, *, json_lines: bool) -> None:
        super().__init__(out=inner.out, err=inner.err, quiet=inner.quiet)
        self.inner = inner
        self.json_lines = json_lines
        self.done: dict[str, list[str]] = {kind: [] for kind in self.KINDS}

    def event(self, kind: str, name: str, detail: str = "", **fields: Any) -> None:
        if kind in self.done:
            state = fields.get("state")
            self.done[kind].append(f"{name} ({state})" if kind == "skipped" and state else name)
        if self.json_lines or kind in ("failed", "skipped"):
            self.inner.event(kind, name, detail, **fields)
        elif isinstance(self.inner, LiveReporter):
            if kind == "started":
                self.inner.event(kind, name, detail, **fields)  # the in-flight view, not a line
            else:  # done: off the in-flight view, whose next paint must not show it
                self.inner.landed(name)

    def warn(self, message: str) -> None:
        self.inner.warn(message)


def _few(names: Sequence[str], shown: int = 4) -> str:
    more = f" +{len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def rebuild_line(changed: Sequence[str] | None, done: dict[str, list[str]], summary: Summary) -> str:
    """``changed prompts/a.md → built a (1 request, $0.00)``"""
    head = "initial build" if changed is None else f"changed {_few(changed)}"
    parts = [f"{kind} {_few(names)}" for kind, names in done.items() if names]
    what = "; ".join(parts) if parts else "up to date"
    plural = "" if summary.requests == 1 else "s"
    line = f"{head} → {what} ({summary.requests} request{plural}, {money(summary.cost_usd)})"
    return line + "; interrupted" if summary.interrupted else line


class WatchSession:
    """One watch of a project folder. :meth:`run` returns the exit code; :meth:`stop` ends it."""

    def __init__(self, root: Path, manifest: str, names: Sequence[str], options: BuildOptions,
                 reporter: Reporter, *, json_lines: bool = False, debounce_ms: int = 150,
                 provider: str | None = None, base_url: str | None = None,
                 initial_force: tuple[str, ...] | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.names = list(names)
        self.options = options
        self.reporter = reporter
        self.json_lines = json_lines
        self.debounce_s = max(0, debounce_ms) / 1000
        self.provider = provider
        self.base_url = base_url
        self.initial_force = initial_force
        self.filter = WatchFilter(root, Path(manifest).with_suffix(".lock").as_posix())
        self.project: Project | None = None  # the last one that loaded: the last good state
        self.broken: str | None = None  # the errors of the last reload, if it failed
        self.interrupted = False
        self._pending: set[str] = set()
        self._last_change = 0.0
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._watch_error: BaseException | None = None
        self._build: asyncio.Task[Summary] | None = None

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        # Reached while a build has no Ctrl-C handler of its own (e.g. it waits for another build's
        # run lock): nothing was started yet, so end it here rather than after the wait.
        if self._build is not None and not self._build.done():
            self._build.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if not (self.root / self.manifest).is_file():
            self._load()  # raises the manifest's "not found": nothing to watch, exit 2 as build does
        self._own_sigint(loop)
        watcher = asyncio.create_task(self._watch())
        # One turn of the loop lets awatch register its watches before the first build writes, so
        # that a save made while it runs is not missed.
        await asyncio.sleep(0)
        try:
            await self._rebuild(None, force=self.initial_force)
            if not self._stop.is_set():
                self._say({"event": "watching", "root": str(self.root), "debounce_ms": round(self.debounce_s * 1000)},
                          f"watching {self.root} for changes (Ctrl-C to stop)")
            while not self._stop.is_set():
                changed = await self._next_batch()
                if changed:
                    await self._rebuild(changed)
        finally:
            self.stop()
            await watcher
            if os.name == "posix":
                loop.remove_signal_handler(signal.SIGINT)
        if self._watch_error is not None:
            raise ImgbuildError(f"watching {self.root} failed: {self._watch_error}")
        return 130 if self.interrupted else 0

    # -- changes -------------------------------------------------------------------------------

    async def _watch(self) -> None:
        from watchfiles import awatch

        loop = asyncio.get_running_loop()
        try:
            async for changes in awatch(self.root, watch_filter=self.filter, debounce=int(MAX_WAIT_S * 1000),
                                        step=STEP_MS, stop_event=self._stop, recursive=True):
                for _, path in changes:
                    rel = self.filter.relative(path)
                    if rel is not None:
                        self._pending.add(rel)
                self._last_change = loop.time()
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - e.g. the folder was deleted: end the watch, say why
            self._watch_error = exc
            self.stop()

    async def _next_batch(self) -> list[str]:
        """Wait for changes and then for ``debounce_ms`` of quiet; the changed paths that can
        affect a build (empty once stopped)."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            while not self._pending and not self._stop.is_set():
                self._wake.clear()
                await self._wake.wait()
            first = loop.time()
            while not self._stop.is_set():
                now = loop.time()
                quiet_at = min(self._last_change + self.debounce_s, first + MAX_WAIT_S)
                if now >= quiet_at:
                    break
                try:
                    await asyncio.wait_for(self._stop.wait(), quiet_at - now)
                except TimeoutError:
                    pass
            if self._stop.is_set():
                break
            batch, self._pending = self._pending, set()
            worth = self._worth_a_build(batch)
            if worth:
                return worth
        return []

    def _worth_a_build(self, batch: set[str]) -> list[str]:
        """The manifest, what the last good project reads, its outputs unless they hold the bytes
        the lock records (the build's own writes), and, while the manifest is broken, the files its
        errors name (creating a missing input is the fix)."""
        project = self.project
        watched = {self.manifest}
        locked: dict[str, str | None] = {}
        if project is not None:
            watched.update(p for t in project.targets.values() for p in t.inputs)
            for name, target in project.targets.items():
                entry = project.lock.get(name) or {}
                recorded = {o.get("path"): o.get("sha256") for o in entry.get("outputs", [])}
                locked.update({out: recorded.get(out) for out in target.outputs})
        worth = []
        for rel in sorted(batch):
            if rel in locked:
                # The stat cache knows the files the build has just written: no hashing for those.
                if locked[rel] is None or project is None or project.stats.digest(rel) != locked[rel]:
                    worth.append(rel)
            elif rel in watched or (self.broken is not None and rel in self.broken):
                worth.append(rel)
        return worth

    # -- builds --------------------------------------------------------------------------------

    def _load(self) -> Project:
        return Project.load(self.root, self.manifest, provider=self.provider, base_url=self.base_url)

    async def _rebuild(self, changed: list[str] | None, *, force: tuple[str, ...] | None = None) -> None:
        self._say({"event": "watch", "changed": changed or [], "initial": changed is None}, None)
        try:
            project = self._load()
        except ImgbuildError as exc:
            if changed is None and not isinstance(exc, ManifestError):
                raise  # e.g. a lock this imgbuild cannot read: nothing sensible to watch
            self.broken = str(exc)
            self._error(exc)
            return
        self.project, self.broken = project, None
        recorder = _Recorder(self.reporter, json_lines=self.json_lines)
        loop = asyncio.get_running_loop()
        self._build = asyncio.create_task(project.abuild(self.names, replace(self.options, force=force), recorder))
        try:
            summary = await self._build
        except asyncio.CancelledError:
            self.interrupted = True
            return
        except UsageError as exc:
            if changed is None:
                raise  # an unknown TARGET on the command line: exit 2, as build does
            self._error(exc)
            return
        except ImgbuildError as exc:  # over --max-cost, a missing key, another build's lock
            self._error(exc)
            return
        finally:
            self._own_sigint(loop)  # the executor removes its own handler, leaving none
        if self.json_lines:
            self.reporter.summary(summary)
        else:
            self._say(None, rebuild_line(changed, recorder.done, summary))
        if summary.interrupted:
            self.interrupted = True
            self.stop()

    def _own_sigint(self, loop: asyncio.AbstractEventLoop) -> None:
        if os.name == "posix":
            loop.add_signal_handler(signal.SIGINT, self.stop)

    # -- output ----------------------------------------------------------------------------------

    def _say(self, event: dict[str, Any] | None, line: str | None) -> None:
        if self.json_lines:
            if event is not None:
                self.reporter.out.write(json.dumps(event, sort_keys=True) + "\n")
                self.reporter.out.flush()
        elif line is not None and not self.reporter.quiet:
            self.reporter.line(line)

    def _error(self, exc: ImgbuildError) -> None:
        """One line per problem, as ``build`` prints them; the watch goes on."""
        lines = str(exc).splitlines() if isinstance(exc, ManifestError) else [f"error: {exc}"]
        for line in lines:
            if self.json_lines:
                self._say({"event": "error", "message": line.removeprefix("error: ")}, None)
            else:
                self.reporter.line(line, error=True)


def watch(args: argparse.Namespace) -> int:
    """The ``imgbuild watch`` command: returns its exit code."""
    manifest_path = Path(args.directory).absolute() / args.manifest
    options = BuildOptions(jobs=args.jobs, keep_going=args.keep_going, max_cost_usd=args.max_cost,
                           remote=args.remote)
    reporter = make_reporter(json_lines=args.json, quiet=args.quiet)
    session = WatchSession(
        manifest_path.parent, manifest_path.name, args.targets, options, reporter,
        json_lines=args.json, debounce_ms=args.debounce_ms, provider=args.provider, base_url=args.base_url,
        initial_force=None if not args.force else tuple(args.targets),
    )
    try:
        return asyncio.run(session.run())
    finally:
        reporter.close()
