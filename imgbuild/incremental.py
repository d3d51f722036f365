"""A one-target change touches one target: only the ``[images.NAME]`` tables whose text changed
are parsed and validated again, with the targets that read what they write.

The manifest's text is cut at its table headers. Everything that is not an ``[images.NAME]`` table
(``out_dir``, ``[provider]``, ``[defaults]``, ``[vars]``, comments before the first table) is the
*global* text: when it changes, every target is validated again (the full path, in resolve.py).
A machine-local state file keeps, from the last build, the digest of the global text and of each
table's text, and the resolved targets. A changed table is parsed alone (tomllib) and checked by
:func:`imgbuild.tablecheck.plain_table`; on anything unusual — a header this cutter does not
know, a multi-line string that could hide one, a table that is not certainly valid, a problem
found — the answer is None and the caller validates the whole manifest with pydantic, whose
messages are complete and located. The result is the same targets the full path would give.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .resolve import Declared, Overrides, Resolved, Target
from .resolvecache import _signature  # one stat signature for both machine-local copies

STATE_VERSION = 1
FILE = "tables.marshal"
RACY_NS = 1_000_000_000  # as statcache: a file modified this close to the save is not trusted

_TARGET_HEADER = re.compile(r"\[images\.([A-Za-z0-9][A-Za-z0-9_-]*)\][ \t]*(?:#.*)?")
_GLOBAL_HEADER = re.compile(r"\[(?:provider|provider\.prices|defaults|defaults\.extra|vars|cache)\][ \t]*(?:#.*)?")
_LINE_START_BRACKET = re.compile(r"^[ \t]*\[", re.M)


@dataclass
class Split:
    """The manifest's text cut into its global part and one piece per target table."""

    global_digest: str
    tables: dict[str, str]  # name → the table's text, in manifest order
    _digests: dict[str, str] | None = None

    def digests(self) -> dict[str, str]:
        if self._digests is None:
            self._digests = {name: _digest(text) for name, text in self.tables.items()}
        return self._digests


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def split(text: str) -> Split | None:
    """The manifest cut at its table headers, or None when it cannot be cut safely."""
    if "'''" in text or '"""' in text:
        return None  # a multi-line string may hold a line that looks like a header
    glob: list[str] = []
    tables: dict[str, str] = {}
    starts = [m.start() for m in _LINE_START_BRACKET.finditer(text)]
    glob.append(text[: starts[0]] if starts else text)
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        newline = text.find("\n", start, end)
        header = text[start:newline if newline >= 0 else end].rstrip("\r")
        m = _TARGET_HEADER.fullmatch(header)
        if m is not None:
            if m.group(1) in tables:
                return None  # a duplicate table: the full path reports it
            tables[m.group(1)] = text[start:end]
        elif _GLOBAL_HEADER.fullmatch(header):
            glob.append(text[start:end])
        else:
            return None  # [images], [images.x.extra], [[...]], an array line at column 0, ...
    return Split(_digest("\0".join(glob)), tables)


def _overrides(overrides: Overrides) -> list[str | None]:
    return [overrides.provider, overrides.base_url, overrides.api_key_env]


def _load_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        state = marshal.loads((state_dir / FILE).read_bytes())
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or state.get("imgbuild") != __version__:
        return None
    return state


def _target(t: tuple[Any, ...]) -> Target:
    name, prompt, params, outputs, images, mask, prompt_file, revision, pinned, extra = t
    return Target(name, prompt, params, outputs, images, mask, prompt_file, revision, pinned, extra)


def _row(t: Target) -> tuple[Any, ...]:
    return (t.name, t.prompt, t.params, t.outputs, t.images, t.mask, t.prompt_file, t.revision, t.pinned, t.extra)


class Incremental:
    """What one load found: the resolved targets, and the state a build saves for the next one."""

    def __init__(self, state_dir: Path, cut: Split, overrides: Overrides) -> None:
        self.state_dir = state_dir
        self.cut = cut
        self.overrides = overrides
        self.revalidated: list[str] = []  # the targets validated again (for tests: which ones)
        # name → (its inputs' digests, its spec digest), from the last build, for targets unchanged
        # since: the planner need not hash their specs again.
        self.known_digests: dict[str, tuple[tuple[str, ...], str]] = {}
        self._rows: dict[str, tuple[Any, ...]] = {}  # the saved form of targets read from the state

    def save(self, resolved: Resolved, root: Path, globals_: dict[str, Any],
             digests: dict[str, tuple[tuple[str, ...], str]]) -> None:
        """Keep the state of a valid manifest (only a build calls this), with the spec digests
        its plan computed."""
        if list(self.cut.tables) != list(resolved.targets):
            return  # targets declared in a way the cutter does not see (dotted keys): no state
        outputs = {o for t in resolved.targets.values() for o in t.outputs}
        files = sorted({p for t in resolved.targets.values() for p in t.inputs if p not in outputs})
        state = {
            "version": STATE_VERSION, "imgbuild": __version__, "overrides": _overrides(self.overrides),
            "global": self.cut.global_digest, "tables": self.cut.digests(), "globals": globals_,
            "settings": {**asdict(resolved.settings), "prices": dict(resolved.settings.prices)},
            "files": [[rel, _signature(os.path.join(root, rel))] for rel in files],
            "targets": [self._rows.get(n) or _row(t) for n, t in resolved.targets.items()],
            "digests": digests,
            "saved_ns": time.time_ns(),
        }
        from .fsutil import atomic_write

        try:
            atomic_write(self.state_dir / FILE, marshal.dumps(state), durable=False)
        except (OSError, ValueError):
            pass  # only a speed-up


def trace_validated(names: list[str] | None) -> None:
    """IMGBUILD_TRACE_VALIDATION=FILE: one line per load that validated target tables, naming
    them ("*" for the whole manifest), for tests that check what a change validates again."""
    trace = os.environ.get("IMGBUILD_TRACE_VALIDATION")
    if trace:
        with open(trace, "a") as f:
            f.write(" ".join(names) + "\n" if names is not None else "*\n")


def globals_of(manifest: Any) -> dict[str, Any]:
    """The manifest-wide parts a target's resolution reads, from a validated ManifestFile."""
    return {"out_dir": manifest.out_dir, "vars": dict(manifest.vars),
            "defaults": manifest.defaults.model_dump(exclude_none=True)}


def begin(text: str, state_dir: Path, overrides: Overrides) -> Incremental | None:
    cut = split(text)
    return None if cut is None else Incremental(state_dir, cut, overrides)


def resolve_changed(inc: Incremental, root: Path) -> tuple[Resolved, dict[str, Any]] | None:
    """The manifest resolved from the last build's state and the tables that changed since, or
    None: validate it all (nothing saved, global text changed, anything unusual or wrong)."""
    state = _load_state(inc.state_dir)
    if state is None or state.get("overrides") != _overrides(inc.overrides) or state.get("global") != inc.cut.global_digest:
        return None
    from .providers import PRESETS
    from .providers.base import ProviderSettings

    try:
        before = {row[0]: row for row in state["targets"]}
        old_tables: dict[str, str] = state["tables"]
        globals_ = state["globals"]
        settings = ProviderSettings(**state["settings"])
        preset = PRESETS[settings.preset]
        files, saved_ns = state["files"], int(state["saved_ns"])
        known = state["digests"]
    except (KeyError, TypeError, ValueError):
        return None
    if set(before) != set(old_tables):
        return None
    now = inc.cut.digests()
    todo = {name for name, d in now.items() if old_tables.get(name) != d}
    removed = set(old_tables) - set(now)
    # Files resolving read (prompt files, committed inputs): their readers are validated again.
    changed_files = {rel for rel, sig in files
                     if (s := _signature(os.path.join(root, rel))) != sig or s is None or s[1] >= saved_ns - RACY_NS}
    if changed_files:
        todo |= {n for n, row in before.items() if n in now and _reads(row, changed_files)}
    # Targets that read what a changed or removed target wrote: what makes their inputs changed.
    moved = {o for n in todo | removed if n in before for o in before[n][3]}
    try:
        resolved = _resolve(inc, root, before, now, todo, moved, globals_, settings, preset, known)
    except (KeyError, TypeError, ValueError):
        return None  # a state of another layout (a development build of the same version)
    return None if resolved is None else (resolved, globals_)


def _reads(row: tuple[Any, ...], paths: set[str]) -> bool:
    """Whether the target of this row reads one of ``paths`` (images, mask, prompt file)."""
    return row[5] in paths or row[6] in paths or any(p in paths for p in row[4])


def _resolve(inc: Incremental, root: Path, before: dict[str, tuple[Any, ...]], now: dict[str, str],
             todo: set[str], moved: set[str], globals_: dict[str, Any], settings: Any, preset: Any,
             known: dict[str, tuple[tuple[str, ...], str]]) -> Resolved | None:
    import tomllib

    from .errors import Problem
    from .graph import producers_of
    from .resolve import _check_image, _check_mask, _TargetResolver
    from .tablecheck import PlainManifest, plain_table

    problems: list[Problem] = []
    model = PlainManifest(globals_["out_dir"], globals_["vars"], globals_["defaults"])
    resolver = _TargetResolver(model, root, preset.capabilities, problems)  # type: ignore[arg-type]
    fresh: dict[str, Target] = {}

    def resolve_one(name: str) -> bool:
        try:
            raw = tomllib.loads(inc.cut.tables[name])
        except tomllib.TOMLDecodeError:
            return False
        images = raw.get("images")
        if list(raw) != ["images"] or not isinstance(images, dict) or list(images) != [name]:
            return False
        table = plain_table(images[name])
        if table is None:
            return False
        target = resolver.resolve(name, table, set())  # type: ignore[arg-type]
        if target is None or problems:
            return False
        fresh[name] = target
        return True

    for name in sorted(todo):
        if not resolve_one(name):
            return None
    moved |= {o for t in fresh.values() for o in t.outputs}
    readers = {n for n, row in before.items() if n in now and n not in fresh and _reads(row, moved)}
    for name in sorted(readers):
        if not resolve_one(name):
            return None
    targets = {name: fresh[name] if name in fresh else _target(before[name]) for name in now}
    if any(t.params.get("derive") == "sheet" for t in targets.values()):
        return None  # a sheet's globs match declared outputs: any table may change its frames
    producers, clashes = producers_of(targets)
    if clashes:
        return None
    declared: dict[str, Declared] = {n: Declared(t.outputs, t.images, t.mask, t.params.get("size", "auto"))
                                     for n, t in targets.items() if n not in resolver.declared}
    declared.update(resolver.declared)
    caps = preset.capabilities
    for name in fresh:
        d = declared[name]
        for i, rel in enumerate(d.images):
            _check_image(root, rel, f"images.{name}.images[{i}]", producers, problems, caps.max_image_bytes)
        if d.mask:
            _check_mask(root, name, declared, producers, problems, caps.max_mask_bytes)
    if problems or _in_a_cycle(fresh, targets, producers):
        return None
    from .resolvecache import folders_inside

    if not folders_inside(root, targets.values()):  # a folder swapped for a link out: the full path says so
        return None
    inc.revalidated = sorted(fresh)
    inc.known_digests = {n: d for n, d in known.items() if n not in fresh and n in targets}
    inc._rows = {n: before[n] for n in targets if n not in fresh}
    return Resolved(None, targets, settings, preset)


def _in_a_cycle(fresh: dict[str, Target], targets: dict[str, Target], producers: dict[str, str]) -> bool:
    """Whether a target validated again now depends on itself. The last build's targets had no
    cycle, and only these targets' edges (or edges to what they write) changed, so a new cycle
    runs through one of them: search from them alone (the full path names the cycle)."""
    for start in fresh:
        seen: set[str] = set()
        todo = [producers[p] for p in targets[start].inputs if p in producers]
        while todo:
            name = todo.pop()
            if name == start:
                return True
            if name not in seen:
                seen.add(name)
                todo.extend(producers[p] for p in targets[name].inputs if p in producers)
    return False
