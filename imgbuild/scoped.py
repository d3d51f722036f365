"""The scoped path: a change to a few ``[images.X]`` tables built without loading the project.

After a full run found every target ``ok``, the no-op fast path keeps its state (fastpath.py);
:func:`record` keeps beside it what a change needs: the manifest's bytes and where each table
starts, the resolved targets, the manifest-wide settings and who reads whose outputs. The next
``build`` (:func:`build`) compares the manifest with those bytes (common prefix and suffix, at
memcmp speed), so that only the tables the edit touched are cut out, parsed and validated
(tablecheck, no pydantic). When every other file still has its recorded state (one stat each, as
the fast path checks) and the edit keeps each table's outputs and inputs, only those targets and
the ones that read their outputs can have work: they are planned and built by the same planner and
executor as ever, their lock entries are spliced into the lock's text (the others' text is copied,
not parsed), and the states are spliced for the next run. The rest are up to date.

Anything else — a header, a global table or many tables edited, a table added, removed or made
invalid, an output or input renamed, a mask, a derived target, candidates, a remote cache, a busy
project, a journal to replay, a lock not written by imgbuild — returns None before anything is
written, and the full path runs: it is the reference, and this path must give its lock bytes,
outputs, messages and exit code (tests/test_scoped.py compares the two).
"""

from __future__ import annotations

import bisect
import marshal
from itertools import accumulate
import os
import re
import time
from typing import TYPE_CHECKING, Any

from . import __version__, fastpath
from .lockfile import Lock
from .statcache import StatCache

if TYPE_CHECKING:
    import argparse

    from .project import Project
    from .target import Target

FORMAT = 2
FILE = "change.marshal"
MAX_TABLES = 16  # tables edited at once beyond which the full path (which validates them in bulk) runs
_SECTION = re.compile(rb"^[ \t]*\[", re.M)
_TARGET_HEADER = re.compile(rb"\[images\.([A-Za-z0-9][A-Za-z0-9_-]*)\][ \t]*(?:#.*)?")
_GLOBAL_HEADER = re.compile(rb"\[(?:provider|provider\.prices|defaults|defaults\.extra|vars)\][ \t]*(?:#.*)?")
_ENTRY_HEADER = re.compile(rb'\n\[targets\.(?:[A-Za-z0-9_-]+|"[^"\n]*")\]\n')


def _trace(line: str) -> None:
    """IMGBUILD_TRACE_SCOPED=FILE: one line per build that tried this path: ``scoped NAMES`` when
    it built them, ``full: WHY`` when it left the build to the full path."""
    trace = os.environ.get("IMGBUILD_TRACE_SCOPED")
    if trace:
        with open(trace, "a") as f:
            f.write(line + "\n")


def _cut(data: bytes) -> list[tuple[int, str]] | None:
    """(start, name) of each table, name "" for a manifest-wide one; None where incremental.split
    would not cut either (a header it does not know, a duplicate table, ``[cache]``)."""
    sections: list[tuple[int, str]] = []
    seen: set[str] = set()
    for m in _SECTION.finditer(data):
        start = m.start()
        newline = data.find(b"\n", start)
        header = data[start:newline if newline >= 0 else len(data)].rstrip(b"\r").lstrip(b" \t")
        target = _TARGET_HEADER.fullmatch(header)
        if target is not None:
            name = target.group(1).decode()
            if name in seen:
                return None
            seen.add(name)
            sections.append((start, name))
        elif _GLOBAL_HEADER.fullmatch(header):
            sections.append((start, ""))
        else:
            return None
    return sections


# -- recording, by the full path ----------------------------------------------------------------

def record(project: Project, overrides: tuple[str | None, str | None], manifest_digest: bytes,
           lock_sig: tuple[int, int, int] | None) -> None:
    """Beside the no-op state (same manifest digest): what the next one-table change needs. No
    state at all where this path would not be sure of itself."""
    path = project.state_dir / FILE
    try:
        state = _state(project, overrides, manifest_digest, lock_sig)
        if state is None:
            _discard(path)
            return
        from .fsutil import atomic_write

        atomic_write(path, marshal.dumps(state), durable=False)
    except (OSError, ValueError, KeyError, TypeError):
        _discard(path)


def _discard(path: Any) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
    sections = _cut(data)
    if sections is None or [n for _, n in sections if n] != list(project.targets):
        return None
    inc = incremental._load_state(project.state_dir)
    cut = incremental.split(data.decode("utf-8"))
    if inc is None or cut is None or inc.get("global") != cut.global_digest or \
            inc.get("overrides") != incremental._overrides(Overrides.from_env(*overrides)):
        return None  # the manifest-wide values are taken from incremental's state: it must be of this text
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
            os.environ.get("IMGBUILD_API_KEY_ENV"), inc["globals"], settings, tuple(map(tuple, users)), lock_sig)


def _canonical(lock: bytes, head: str, names: list[str], project: Project) -> bool:
    """Whether the lock is as imgbuild writes it: the full path would then copy every entry it
    does not replace as its text, which is what splicing does."""
    if set(project.lock.targets) != set(names) or not lock.startswith(head.encode()):
        return False
    found = [m.group()[10:-2].decode() for m in _ENTRY_HEADER.finditer(lock)]
    first = _ENTRY_HEADER.search(lock)
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
        import shutil

        staging = self.cache.staging_dir()
        try:
            copy = staging / "copy"
            shutil.copyfile(self.root / rel, copy)
            self.cache.put_file(copy)
        finally:
            self.cache.discard_staging(staging)


class _Found:
    """What preparing found: the state, the new manifest, and the scoped targets in build order."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def build(args: argparse.Namespace) -> int | None:
    """Build a change to a few target tables and return the exit code, or return None (having
    written nothing) for the full path."""
    try:
        found = _prepare(args)
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        found = f"{type(exc).__name__}"
    if isinstance(found, str):
        _trace(f"full: {found}")
        return None
    return _run(found, args)


def _prepare(args: argparse.Namespace) -> _Found | str:
    if os.environ.get("IMGBUILD_REMOTE_CACHE", "").strip():
        return "a remote cache"
    root, manifest_path = fastpath._paths(args.directory, args.manifest)
    state_dir = os.path.join(root, fastpath.STATE_DIR)
    with open(os.path.join(state_dir, fastpath.FILE), "rb") as f:
        noop = marshal.loads(f.read())
    if (noop[0] != fastpath.FORMAT or noop[1] != __version__ or noop[2] != os.path.basename(manifest_path)
            or noop[4] != fastpath._overrides(args.provider, args.base_url) or not noop[7]):
        return "no-op state of another run"
    with open(os.path.join(state_dir, FILE), "rb") as f:
        state = marshal.loads(f.read())
    (fmt, version, old_digest, old, (head, sizes), names, key_env, globals_, settings, users, lock_sig) = state
    if (fmt != FORMAT or version != __version__ or old_digest != noop[3] or lock_sig != noop[6]
            or key_env != os.environ.get("IMGBUILD_API_KEY_ENV")):
        return "change state of another run"
    with open(manifest_path, "rb") as f:
        new = f.read()
    starts = list(accumulate(sizes, initial=head))  # where each table starts, and the end
    changed = _changed_tables(old, new, starts, sizes, names)
    if isinstance(changed, str):
        return changed
    if not fastpath.unchanged(noop, root):
        return "a file changed"
    if os.path.exists(os.path.join(state_dir, "lock.journal")):
        return "a journal to replay"
    tables, new_sizes = changed
    new_starts = list(accumulate(new_sizes, initial=head))
    resolver = _Resolver(root, globals_, settings, noop[5])
    fresh: dict[str, Target] = {}
    for name, text in tables.items():
        before = resolver.resolve(name, _table(old, starts, names, name))
        target = resolver.resolve(name, text)
        if isinstance(before, str) or isinstance(target, str):
            return target if isinstance(target, str) else before
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
        target = fresh.get(name) or resolver.resolve(name, _table(new, new_starts, names, name))
        if isinstance(target, str):
            return target
        targets[name] = target
    if any(t.mask or t.derived or "candidates" in t.params or t.pinned for t in targets.values()):
        return "a mask, derived target, candidates or pin in the scope"
    deps_of = marshal.loads(noop[9])
    deps = {order[i]: [order[d] for d in deps_of[i]] for i in sorted(scope)}
    lock_path = os.path.join(root, noop[5])
    with open(lock_path, "rb") as f:
        lock = f.read()  # as unchanged() found it (its bytes were imgbuild's when recorded)
    return _Found(root=root, manifest_path=manifest_path, state_dir=state_dir, noop=noop, state=state, new=new,
                  new_sizes=new_sizes, fresh=fresh, targets=targets, deps=deps, lock=lock,
                  lock_path=lock_path, settings=settings, count=len(order))


def _table(data: bytes, starts: list[int], names: tuple[str, ...], name: str) -> bytes:
    k = names.index(name)
    return data[starts[k]:starts[k + 1]]


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix: block compares, then a bisection in one block."""
    n = min(len(a), len(b))
    i, step = 0, 1 << 16
    while i < n:
        j = min(i + step, n)
        if a[i:j] != b[i:j]:
            break
        i = j
    else:
        return n
    lo, hi = i, min(i + step, n)  # a[:lo] == b[:lo], and they differ before hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo if a[lo] != b[lo] else hi


def _common_suffix(a: bytes, b: bytes) -> int:
    """The length of the longest common suffix, as :func:`_common_prefix` finds a prefix."""
    n = min(len(a), len(b))
    la, lb = len(a), len(b)
    i, step = 0, 1 << 16
    while i < n:
        j = min(i + step, n)
        if a[la - j:la - i] != b[lb - j:lb - i]:
            break
        i = j
    else:
        return n
    lo, hi = i, min(i + step, n)  # the last lo bytes are equal; they differ within the last hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid
    return lo if a[la - lo - 1] != b[lb - lo - 1] else hi


def _changed_tables(old: bytes, new: bytes, starts: list[int], sizes: tuple[int, ...], names: tuple[str, ...]
                    ) -> tuple[dict[str, bytes], tuple[int, ...]] | str:
    """(name → its new text for each table whose text changed, the length of each table in the new
    text), or why the edit is not one this path takes. ``starts``: where each table starts in the
    old text, and its end."""
    if old == new:
        return "the same manifest"
    if b"'''" in new or b'"""' in new:
        return "a multi-line string"
    prefix = _common_prefix(old, new)
    suffix = min(_common_suffix(old, new), len(old) - prefix, len(new) - prefix)
    old_end = len(old) - suffix  # old[prefix:old_end] became new[prefix:len(new) - suffix]
    # The tables around the edit, one character wider on each side: an edit that touches a header
    # line, or the line break before one, is seen by both tables at that boundary.
    first = bisect.bisect_right(starts, max(prefix - 1, 0)) - 1
    last = min(bisect.bisect_right(starts, old_end) - 1, len(sizes) - 1)
    if first < 0 or not sizes or prefix == 0:
        return "the text before the first table"
    if last - first >= MAX_TABLES:
        return "many tables"
    if any(not names[i] for i in range(first, last + 1)):
        return "a manifest-wide table"
    delta = len(new) - len(old)
    piece = new[starts[first]:starts[last + 1] + delta]
    sections = _cut(piece)
    if sections is None or [n for _, n in sections] != list(names[first:last + 1]) or (sections and sections[0][0]):
        return "tables added, removed or renamed"
    bounds = [s for s, _ in sections] + [len(piece)]
    changed: dict[str, bytes] = {}
    for k, (start, name) in enumerate(sections):
        text = piece[start:bounds[k + 1]]
        i = first + k
        before = old[starts[i]:starts[i + 1]]
        if text != before:
            changed[name] = text
    return changed, sizes[:first] + tuple(b - a for a, b in zip(bounds, bounds[1:])) + sizes[last + 1:]


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


def _run(found: _Found, args: argparse.Namespace) -> int | None:
    import asyncio
    from pathlib import Path

    from .cache import LocalCache
    from .executor import BuildOptions, Executor, check_budget
    from .plan import Action, Planner
    from .providers import PRESETS
    from .providers.base import ProviderSettings

    settings = ProviderSettings(**found.settings)
    preset = PRESETS[settings.preset]
    root, state_dir = Path(found.root), Path(found.state_dir)
    lock = _SplicedLock(Path(found.lock_path), state_dir, found.lock, list(found.targets))
    if isinstance(lock.problem, str):
        _trace(f"full: {lock.problem}")
        return None
    stats = _Stats(root)
    context = _Context(root, state_dir, found.targets, found.deps, settings, lock, stats, LocalCache(None))
    planner = Planner(found.targets, context.producers, preset.canonical_model(settings.model), settings.preset,
                      settings.prices, lock, context.cache, stats)  # type: ignore[arg-type]
    order = list(found.targets)
    decisions = planner.decide_all(order)
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
        from .cli import _collect_garbage_from_now, _reporter

        options = BuildOptions(jobs=args.jobs, keep_going=args.keep_going, max_cost_usd=args.max_cost,
                               remote=args.remote)
        reporter = _reporter(args)
        try:
            check_budget(decisions, options.max_cost_usd)
            _collect_garbage_from_now()
            summary = asyncio.run(_build(context, planner, order, reporter, options, decisions))
        finally:
            reporter.close()
        summary.up_to_date += found.count - len(order)
        reporter.summary(summary)
        done = summary.complete and not (summary.failed or summary.skipped) and all(
            planner.decisions[n].action is Action.NOTHING for n in order)
        _save_states(found, lock, stats, done)
    finally:
        os.close(run_lock)
    if summary.interrupted:
        return 130
    return 0 if summary.complete else 1


async def _build(context: _Context, planner: Any, order: list[str], reporter: Any, options: Any,
                 decisions: list[Any]) -> Any:
    import asyncio
    import contextlib
    import dataclasses

    from .executor import Executor, Summary
    from .fsutil import allow_writes_under, remove_leftovers
    from .plan import Action

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

    def leftovers() -> None:  # as Project._take_leftovers, for the folders of these targets
        context.cache.adopt_leftovers()
        context.cache.adopt_leftovers(context.state_dir / "tmp")
        parts = {out.rpartition("/")[0] for t in context.targets.values() for out in t.outputs}
        remove_leftovers([context.state_dir, context.lock.path.parent, *(context.root / p for p in sorted(parts))])

    await asyncio.to_thread(leftovers)
    return await Executor(context, planner, order, reporter, options, open_provider).run()  # type: ignore[arg-type]


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


# -- the lock, spliced --------------------------------------------------------------------------

class _Stats(StatCache):
    """The stat cache without its file: the scoped targets' files are hashed (a few), and the
    10,000-entry file is neither read nor written (the full path hashes again what changed)."""

    def __init__(self, root: Any) -> None:  # noqa: super().__init__ would read the file
        self.root = root
        self.path = root / fastpath.STATE_DIR / "stat.json"
        self.entries = {}
        self.saved_ns = 0
        self.dirty = False
        self._fresh = set()
        self.vouch = None

    def save(self) -> None:
        pass


class _SplicedLock(Lock):
    """The lock with the scoped targets' entries only: parsed from their text, and written back by
    replacing that text in the lock's bytes (the other entries' text is copied as it is)."""

    def __init__(self, path: Any, state_dir: Any, data: bytes, names: list[str]) -> None:
        import hashlib
        import tomllib

        from .lockfile import _toml_key, entry_problem

        super().__init__(path, state_dir)
        self.problem: str | None = None
        self._data = data
        self._spans: dict[str, tuple[int, int]] = {}
        for name in names:
            start = data.find(f"\n[targets.{_toml_key(name)}]\n".encode())
            if start < 0:
                self.problem = "a target the lock lacks"
                return
            end_match = _ENTRY_HEADER.search(data, start + 1)
            end = end_match.start() if end_match else len(data)
            try:
                entry = tomllib.loads(data[start + 1:end].decode("utf-8"))["targets"][name]
            except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError):
                self.problem = "a lock entry that does not parse"
                return
            if entry_problem(entry) is not None:
                self.problem = "a lock entry of the wrong shape"
                return
            self.targets[name] = entry
            self._spans[name] = (start + 1, end)
        self._original = dict(self.targets)
        self._saved_digest = self._read_digest = hashlib.sha256(data).hexdigest()
        self.written = data

    def dumps(self, snapshot: dict[str, dict[str, Any]] | None = None) -> bytes:
        import tomli_w

        from .lockfile import _sorted

        snapshot = dict(self.targets) if snapshot is None else snapshot
        parts: list[bytes] = []
        at = 0
        for name, (start, end) in sorted(self._spans.items(), key=lambda item: item[1]):
            entry = snapshot[name]
            if entry is self._original[name]:
                continue
            parts += [self._data[at:start], tomli_w.dumps({"targets": {name: _sorted(entry)}}).encode()]
            at = end
        parts.append(self._data[at:])
        self.written = b"".join(parts)
        return self.written

    def saved_digest(self) -> str:
        if self._saved_digest is None:
            raise OSError("no lock written")
        return self._saved_digest

    def _write_json_copy(self, digest: str) -> None:
        """The lock's machine-local copy: its delta grows by these entries (lockfile's format)."""
        from .fsutil import atomic_write
        from .lockfile import COPY_FILE, DELTA_FILE, DELTA_MAX, LOCK_VERSION

        old = self._read_digest
        try:
            try:
                delta = marshal.loads((self.state_dir / DELTA_FILE).read_bytes())
            except OSError:
                delta = None
            if isinstance(delta, dict) and delta.get("sha256") == old:
                base, entries, removed = delta["base"], dict(delta["set"]), list(delta["removed"])
            else:
                with open(self.state_dir / COPY_FILE, "rb") as f:
                    head = f.read(256)
                if old.encode() not in head:
                    return  # no copy of the lock this one extends: the full path writes one
                base, entries, removed = old, {}, []
            entries.update({n: e for n, e in self.targets.items() if e is not self._original[n]})
            if len(entries) + len(removed) > DELTA_MAX:
                _discard(self.state_dir / DELTA_FILE)  # the full path writes the whole copy again
                return
            atomic_write(self.state_dir / DELTA_FILE, marshal.dumps(
                {"version": LOCK_VERSION, "base": base, "sha256": digest, "set": entries, "removed": removed}),
                durable=False)
            self._json_digest = digest
        except (OSError, ValueError, EOFError, TypeError, KeyError):
            pass  # only a speed-up


# -- the states, spliced for the next run -------------------------------------------------------

def _written(root: str, rel: str, stats: _Stats) -> list[int]:
    """The (size, mtime, inode) of an output as the build wrote it (the executor records each
    output's signature and digest as it writes it); OSError if the file changed since."""
    st = os.lstat(os.path.join(root, rel))
    sig = [st.st_size, st.st_mtime_ns, st.st_ino]
    entry = stats.entries.get(rel)
    if entry is None or list(entry[:3]) != sig:
        raise OSError(f"{rel} changed since it was written")
    return sig


def _racy_digest(root: str, rel: str, stats: _Stats) -> str:
    """The sha256 of an output the build wrote, from the bytes on disk, which must be the very
    bytes the build wrote."""
    import hashlib

    with open(os.path.join(root, rel), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != stats.entries[rel][3]:
        raise OSError(f"{rel} changed since it was written")
    return digest


def _save_states(found: _Found, lock: _SplicedLock, stats: _Stats, done: bool) -> None:
    """After a scoped build that left every target ``ok``: the no-op state and this one, as a full
    run would record them. Otherwise both go (the next run takes the full path)."""
    from .fsutil import atomic_write
    from pathlib import Path

    state_dir = Path(found.state_dir)
    try:
        if not done:
            raise OSError("not every target is ok")
        noop = list(found.noop)
        now = time.time_ns()
        files = f"\0{noop[10]}\0"
        sigs = list(noop[11])
        racy = {rel: d for rel, d in (noop[15] if len(noop) > 15 else ())}
        for t in found.targets.values():
            for rel in t.outputs:
                i = files.count("\0", 0, files.index(f"\0{rel}\0"))  # its place in the recorded list
                sigs[3 * i:3 * i + 3] = _written(found.root, rel, stats)
                racy.pop(rel, None)
                if sigs[3 * i + 1] >= now - fastpath.RACY_NS:  # racily clean: trusted by its bytes
                    racy[rel] = _racy_digest(found.root, rel, stats)
        lock_name = noop[5]
        noop[6] = fastpath._signature(found.lock_path)
        racy.pop(lock_name, None)
        if noop[6] is not None and noop[6][1] >= now - fastpath.RACY_NS:
            racy[lock_name] = lock.saved_digest()  # the sha256 of what it wrote, taken as it wrote it
        manifest_digest = fastpath.digest_of(found.new)
        noop[3], noop[11] = manifest_digest, tuple(sigs)
        noop[15:] = [tuple(sorted(racy.items()))]
        state = list(found.state)
        state[2], state[3], state[4], state[10] = manifest_digest, found.new, (state[4][0], found.new_sizes), noop[6]
        atomic_write(state_dir / FILE, marshal.dumps(tuple(state)), durable=False)
        atomic_write(state_dir / fastpath.FILE, marshal.dumps(tuple(noop)), durable=False)
    except (OSError, ValueError, IndexError, KeyError):
        _discard(os.path.join(state_dir, fastpath.FILE))
        _discard(os.path.join(state_dir, FILE))
