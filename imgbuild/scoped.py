"""The scoped path: a change to a few ``[images.X]`` tables built without loading the project.

After a full run found every target ``ok``, the no-op fast path keeps its state (fastpath.py);
:func:`record` keeps beside it what a change needs: the manifest's bytes and where each table
starts, the resolved targets, the manifest-wide settings and who reads whose outputs. The next
``build`` (:func:`build`) compares the manifest with those bytes (common prefix and suffix, at
memcmp speed), so that only the tables the edit touched are cut out, parsed and validated
(tablecheck, no pydantic). When every other file still has its recorded state (one stat each, as
the fast path checks; at scale taken by a helper process while this one loads the build:
fastpath.StatCheck) and the edit keeps each table's outputs and inputs, only those targets and
the ones that read their outputs can have work: they are planned by the same planner and built by
the executor's steps (with the placeholder one after another, without an event loop:
sequential.py), their lock entries are spliced into the lock's text (the others' text is copied,
not parsed), and the states are spliced for the next run. The rest are up to date.

Anything else — a header, a global table or many tables edited, a table added, removed or made
invalid, an output or input renamed, a mask, a derived target, candidates, a remote cache, a busy
project, a journal to replay, a lock not written by imgbuild — returns None before anything is
written, and the full path runs: it is the reference, and this path must give its lock bytes,
outputs, messages and exit code (tests/test_scoped.py compares the two).
"""

from __future__ import annotations

import marshal
import os
import re
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from . import __version__, fastpath
from .changestate import FILE, FORMAT, change_state_parts, load_change_state
from .tablediff import changed_tables, cut, table_text

if TYPE_CHECKING:  # splice.py (the lock, the writes) is loaded once the helper's stats are under way
    import argparse
    from collections.abc import Callable

    from .project import Project
    from .splice import Found
    from .target import Target
    from .ui import Reporter



def _trace(line: str) -> None:
    """IMGBUILD_TRACE_SCOPED=FILE: one line per build that tried this path: ``scoped NAMES`` when
    it built them, ``full: WHY`` when it left the build to the full path."""
    trace = os.environ.get("IMGBUILD_TRACE_SCOPED")
    if trace:
        with open(trace, "a") as f:
            f.write(line + "\n")


# -- recording, by the full path ----------------------------------------------------------------

def record(project: Project, overrides: tuple[str | None, str | None], manifest_digest: bytes,
           lock_sig: tuple[int, int, int] | None) -> None:
    """Beside the no-op state (same manifest digest): what the next one-table change needs. No
    state at all where this path would not be sure of itself."""
    from .splice import discard

    path = project.state_dir / FILE
    try:
        state = _state(project, overrides, manifest_digest, lock_sig)
        if state is None:
            discard(path)
            return
        from .fsutil import rewrite_cache_file

        rewrite_cache_file(path, change_state_parts(state))
    except (OSError, ValueError, KeyError, TypeError):
        discard(path)


def _state(project: Project, overrides: tuple[str | None, str | None], manifest_digest: bytes,
           recorded_sig: tuple[int, int, int] | None) -> tuple[Any, ...] | None:
    from dataclasses import asdict

    from . import incremental
    from .lockfile import HEADER, LOCK_VERSION
    from .resolve import Overrides

    data = project._manifest_data
    if (b"'''" in data or b'"""' in data or fastpath._digest(data) != manifest_digest or project.warnings
            or re.search(rb"^[ \t]*\[cache\]", data, re.M)):
        return None  # a multi-line string (may hide a header), another manifest, a remote cache
    sections = cut(data)
    if sections is None or [n for _, n in sections if n] != list(project.targets):
        return None
    inc = incremental._load_state(project.state_dir)
    whole = incremental.split(data.decode("utf-8"))
    if inc is None or whole is None or inc.get("global") != whole.global_digest or \
            inc.get("overrides") != incremental._overrides(Overrides.from_env(*overrides)):
        return None  # the manifest-wide values are taken from incremental's state: it must be of this text
    import hashlib

    lock = project.lock.path.read_bytes()
    lock_sig = fastpath._signature(str(project.lock.path))  # after the read: a rewrite since shows
    head = HEADER + f"version = {LOCK_VERSION}\n"
    if (lock_sig != recorded_sig or (project.state_dir / "lock.journal").exists()
            or not _canonical(lock, head, sorted(project.targets), project)):
        return None
    order = list(project.order)
    index = {name: i for i, name in enumerate(order)}
    users: list[list[int]] = [[] for _ in order]
    for name in order:
        for dep in project.deps[name]:
            users[index[dep]].append(index[name])
    settings = {**asdict(project.settings), "prices": dict(project.settings.prices)}
    starts = [s for s, _ in sections] + [len(data)]
    sizes = tuple(b - a for a, b in zip(starts, starts[1:]))  # offsets move with every edit; sizes do not
    return (FORMAT, __version__, manifest_digest, data, (starts[0], sizes), tuple(n for _, n in sections),
            os.environ.get("IMGBUILD_API_KEY_ENV"), inc["globals"], settings, tuple(map(tuple, users)), lock_sig,
            hashlib.sha256(lock).hexdigest())


def _canonical(lock: bytes, head: str, names: list[str], project: Project) -> bool:
    """Whether the lock is as imgbuild writes it: the full path would then copy every entry it
    does not replace as its text, which is what splicing does."""
    from .splice import ENTRY_HEADER

    if set(project.lock.targets) != set(names) or not lock.startswith(head.encode()):
        return False
    found = [m.group()[10:-2].decode() for m in ENTRY_HEADER.finditer(lock)]
    first = ENTRY_HEADER.search(lock)
    return found == names and first is not None and first.start() == len(head)


# -- the scoped build ---------------------------------------------------------------------------

class _Context:
    """What the executor needs of a project (context.BuildContext), for the scoped targets."""

    def __init__(self, root: Any, state_dir: Any, targets: dict[str, Target], deps: dict[str, list[str]],
                 settings: Any, lock: Any, stats: Any, cache: Any) -> None:
        self.root = root
        self.state_dir = state_dir
        self.targets = targets
        self.deps = deps
        self.producers = {o: t.name for t in targets.values() for o in t.outputs}
        self.settings = settings
        self.lock = lock
        self.stats = stats
        self.cache = cache

    def cache_copy(self, rel: str) -> None:
        self.cache.put_copy(self.root / rel)  # as Project.cache_copy: the cache takes a copy


def build(args: argparse.Namespace, reporter_for: Callable[[argparse.Namespace], Reporter],
          collect_garbage: Callable[[], None]) -> int | None:
    """Build a change to a few target tables and return the exit code, or return None (having
    written nothing) for the full path. The command line gives its reporter and its garbage
    collector's setting for a build (this module does not import cli.py, which imports it)."""
    try:
        found = _prepare(args)
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        found = f"{type(exc).__name__}"
    if isinstance(found, str):
        _trace(f"full: {found}")
        return None
    try:
        return _run(found, args, reporter_for, collect_garbage)
    finally:
        found.check.abandon()  # when it returned before the check's answer was needed


def _prepare(args: argparse.Namespace) -> Found | str:
    if os.environ.get("IMGBUILD_REMOTE_CACHE", "").strip():
        return "a remote cache"
    root, manifest_path = fastpath._paths(args.directory, args.manifest)
    state_dir = os.path.join(root, fastpath.STATE_DIR)
    noop = fastpath.read_state(os.path.join(state_dir, fastpath.FILE))
    if (noop[0] != fastpath.FORMAT or noop[1] != __version__ or noop[2] != os.path.basename(manifest_path)
            or noop[4] != fastpath._overrides(args.provider, args.base_url) or not noop[7]):
        return "no-op state of another run"
    with open(os.path.join(state_dir, FILE), "rb") as f:
        state = load_change_state(f.read())
    if state[:2] != (FORMAT, __version__):
        return "change state of another version"
    (_, _, old_digest, old, (head, sizes), names, key_env, *_, lock_sig, _) = state
    if (old_digest != noop[3] or lock_sig != noop[6]
            or key_env != os.environ.get("IMGBUILD_API_KEY_ENV")):
        return "change state of another run"
    new = fastpath.read_manifest(manifest_path)
    starts = list(accumulate(sizes, initial=head))  # where each table starts, and the end
    changed = changed_tables(old, new, starts, sizes, names)
    if isinstance(changed, str):
        return changed
    if os.path.exists(os.path.join(state_dir, "lock.journal")):
        return "a journal to replay"
    check = fastpath.StatCheck(os.path.join(state_dir, fastpath.FILE), noop, root)
    try:
        lock_path = os.path.join(root, noop[5])
        with open(lock_path, "rb") as f:
            lock = f.read()  # read once: checked (if it is racily clean) with the stats, then spliced
        check.given({noop[5]: lock})
        found = _resolve(root, manifest_path, state_dir, noop, state, new, changed, lock, lock_path)
    except BaseException:
        check.abandon()
        raise
    if isinstance(found, str):
        check.abandon()
        return found
    found.check = check  # answered before anything is written (_run)
    return found


def _resolve(root: str, manifest_path: str, state_dir: str, noop: tuple[Any, ...],
             state: tuple[Any, ...], new: bytes, changed: tuple[dict[str, bytes], tuple[int, ...]], lock: bytes,
             lock_path: str) -> Found | str:
    """The edited tables and their readers resolved (while the stat check runs)."""
    from .splice import Found

    (_, _, _, old, (head, sizes), names, _, globals_, settings, users, _, lock_digest) = state
    starts = list(accumulate(sizes, initial=head))
    tables, new_sizes = changed
    new_starts = list(accumulate(new_sizes, initial=head))
    resolver = _Resolver(root, globals_, settings, noop[5])
    fresh: dict[str, Target] = {}
    for name, text in tables.items():
        before = resolver.resolve(name, table_text(old, starts, names, name))
        target = resolver.resolve(name, text)
        if isinstance(target, str):
            return target
        if isinstance(before, str):
            return before
        if (target.outputs, target.images, target.mask, target.prompt_file) != (
                before.outputs, before.images, before.mask, before.prompt_file):
            return "outputs or inputs changed"
        fresh[name] = target
    # The targets that read what the changed ones write, and so on: their inputs change.
    order = noop[8].split("\0")
    scope: set[int] = set()
    todo = [order.index(n) for n in fresh]
    while todo:
        i = todo.pop()
        if i not in scope:
            scope.add(i)
            todo.extend(users[i])
    targets: dict[str, Target] = {}
    for i in sorted(scope):  # in build order
        name = order[i]
        target = fresh.get(name) or resolver.resolve(name, table_text(new, new_starts, names, name))
        if isinstance(target, str):
            return target
        targets[name] = target
    if any(t.mask or t.derived or "candidates" in t.params or t.pinned for t in targets.values()):
        return "a mask, derived target, candidates or pin in the scope"
    deps_of = marshal.loads(noop[9])
    deps = {order[i]: [order[d] for d in deps_of[i]] for i in sorted(scope)}
    return Found(root=root, manifest_path=manifest_path, state_dir=state_dir, noop=noop, state=state, new=new,
                  new_sizes=new_sizes, fresh=fresh, targets=targets, deps=deps, lock=lock,
                  lock_digest=lock_digest, lock_path=lock_path, settings=settings, count=len(order))


class _Resolver:
    """A table resolved alone, as incremental.py resolves a changed one (tomllib, tablecheck, the
    resolver with the manifest-wide values of the last full run); on any doubt, why not (the full
    path validates the whole manifest and says what is wrong)."""

    def __init__(self, root: str, globals_: dict[str, Any], settings: dict[str, Any], lock_name: str) -> None:
        from pathlib import Path

        from .errors import Problem
        from .providers import PRESETS
        from .resolve import _TargetResolver
        from .tablecheck import PlainManifest

        self.problems: list[Problem] = []
        model = PlainManifest(globals_["out_dir"], globals_["vars"], globals_["defaults"])
        caps = PRESETS[settings["preset"]].capabilities
        self._resolver = _TargetResolver(model, Path(root), caps, self.problems,  # type: ignore[arg-type]
                                         lock_name=lock_name)

    def resolve(self, name: str, text: bytes) -> Target | str:
        import tomllib

        from .tablecheck import plain_table

        try:
            raw = tomllib.loads(text.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return "a table that does not parse"
        images = raw.get("images")
        if list(raw) != ["images"] or not isinstance(images, dict) or list(images) != [name]:
            return "a table of another shape"
        table = plain_table(images[name])
        if table is None:
            return "a table tablecheck is not sure of"
        target = self._resolver.resolve(name, table, set())  # type: ignore[arg-type]
        if target is None or self.problems:
            return "a problem in a table"
        return target


def _run(found: Found, args: argparse.Namespace, reporter_for: Callable[[argparse.Namespace], Reporter],
         collect_garbage: Callable[[], None]) -> int | None:
    from pathlib import Path

    from .budget import check_budget
    from .cache import LocalCache
    from .plan import Action, Planner
    from .providers import PRESETS
    from .providers.base import ProviderSettings
    from .splice import SplicedLock, Stats, save_states
    from .summary import BuildOptions

    settings = ProviderSettings(**found.settings)
    preset = PRESETS[settings.preset]
    root, state_dir = Path(found.root), Path(found.state_dir)
    lock = SplicedLock(Path(found.lock_path), state_dir, found.lock, found.lock_digest, list(found.targets))
    if isinstance(lock.problem, str):
        _trace(f"full: {lock.problem}")
        return None
    stats = Stats(root)  # the scoped targets' files (a few), read only until the check below says
    context = _Context(root, state_dir, found.targets, found.deps, settings, lock, stats, LocalCache(None))
    planner = Planner(found.targets, context.producers, preset.canonical_model(settings.model), settings.preset,
                      settings.prices, lock, context.cache, stats)  # type: ignore[arg-type]
    order = list(found.targets)
    decisions = planner.decide_all(order)
    if settings.preset == "placeholder" and any(d.action is Action.REQUEST for d in decisions):
        from .providers.placeholder import load_renderer

        load_renderer()  # Pillow (~0.02 s), while the stats are still being taken
    # Every other file as recorded: its stats, taken while the above ran.
    if not found.check.result():
        _trace("full: a file changed")
        return None
    if any(d.action not in (Action.NOTHING, Action.REQUEST, Action.WAIT, Action.RESTORE) for d in decisions):
        _trace("full: a target to skip or fail")
        return None
    estimate = sum(d.estimate_usd for d in decisions if d.action in (Action.REQUEST, Action.WAIT))
    if estimate > settings.confirm_above_usd and not args.yes:
        _trace("full: a confirmation")
        return None  # the full path asks (or not), as it always does
    run_lock = _take_run_lock(state_dir)
    if run_lock is None:
        _trace("full: busy")
        return None
    try:
        if fastpath._signature(found.lock_path) != found.noop[6]:
            _trace("full: the lock changed")
            return None
        _trace("scoped " + " ".join(sorted(found.fresh)))
        if os.environ.get("IMGBUILD_TRACE_VALIDATION"):
            from .incremental import trace_validated

            trace_validated(sorted(found.targets))  # as a load that validated these tables again says it
        options = BuildOptions(jobs=args.jobs, keep_going=args.keep_going, max_cost_usd=args.max_cost,
                               remote=args.remote)
        reporter = reporter_for(args)
        try:
            check_budget(decisions, options.max_cost_usd)
            collect_garbage()
            summary = _build(context, planner, order, reporter, options, decisions)
        finally:
            reporter.close()
        summary.up_to_date += found.count - len(order)
        reporter.summary(summary)
        done = summary.complete and not (summary.failed or summary.skipped) and all(
            planner.decisions[n].action is Action.NOTHING for n in order)
        save_states(found, lock, stats, done)
    finally:
        os.close(run_lock)
    if summary.interrupted:
        return 130
    return 0 if summary.complete else 1


def _build(context: _Context, planner: Any, order: list[str], reporter: Any, options: Any,
           decisions: list[Any]) -> Any:
    """The scoped targets built: with the placeholder, one after another in this thread
    (sequential.py: no event loop to load); else by the executor, as the full path builds."""
    import contextlib
    import dataclasses

    from .fsutil import allow_writes_under, remove_leftovers
    from .plan import Action
    from .summary import Summary

    if not any(d.action is not Action.NOTHING for d in decisions):
        return Summary(up_to_date=len(decisions))
    allow_writes_under(context.root)
    jobs = options.jobs or context.settings.concurrency
    provider = None

    def open_provider() -> Any:
        nonlocal provider
        if provider is None:
            from .providers import open_provider as opened

            provider = opened(dataclasses.replace(context.settings, concurrency=jobs))
        return provider

    if any(d.action is Action.REQUEST for d in decisions):
        open_provider()  # a missing key is one line, before anything is done
    with contextlib.suppress(OSError):
        context.cache.register_project(context.root)

    # As Project._take_leftovers, but not the outputs' folders (10,000 names to list): a build
    # writes there only while its lock journal is open, so one killed there sends the next build
    # to the full path, which removes them. (Another command's, as after a no-op, wait for the
    # next full build: junk, never read.)
    context.cache.recover(context.state_dir / "tmp")
    remove_leftovers([context.state_dir, context.lock.path.parent])
    if context.settings.preset == "placeholder":
        from .sequential import Sequential

        return Sequential(context, planner, order, reporter, options, open_provider).run()  # type: ignore[arg-type]
    import asyncio

    from .executor import Executor

    return asyncio.run(Executor(context, planner, order, reporter, options, open_provider).run())  # type: ignore[arg-type]


def _take_run_lock(state_dir: Any) -> int | None:
    """The project's run lock, if it is free: ``flock`` on ``.imgbuild/run.lock``, the primitive
    filelock's Unix lock uses on that file (Project takes it with filelock, whose import alone costs
    a tenth of this path). Released by closing the descriptor. None: busy, or no flock here."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(state_dir / "run.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
