"""What the review page shows, gathered from the project: one :class:`Card` per target.

Read only: the states and reasons are the project's own plan (what ``status`` prints), the images
are the outputs on disk, the takes the lock records and the earlier entries of the build history,
each shown only while its bytes can still be had (on disk or in the cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..spec import InputRef, Spec, changed_fields
from ..takes import from_entry
from . import history

if TYPE_CHECKING:
    from ..plan import Decision
    from ..project import Project

Say = Callable[[dict[str, object], str], None]  # what review tells: (the JSON event, the plain line), the CLI picks one


@dataclass(frozen=True)
class Shown:
    """One image on the page: its bytes (sha256) and where they are."""

    sha256: str
    source: Path  # a file holding these bytes: the project's file, else the cache's object
    rel: str | None = None  # the project path when it is a project file (an output or an input)
    width: int = 0
    height: int = 0


@dataclass
class Earlier:
    spec: str
    changed: list[str]  # what differs from the spec of the image shown, in status's words
    built_at: str
    images: list[Shown]


@dataclass
class Card:
    name: str
    state: str
    reason: str
    prompt: str
    params: dict[str, Any]
    outputs: list[tuple[str, Shown | None]]  # (output path, what is there now)
    inputs: list[tuple[str, Shown | None]] = field(default_factory=list)
    takes: list[Shown | None] = field(default_factory=list)
    pick: int | None = None
    takes_line: str = ""  # status's words: `3 takes, none picked` / `take 2 of 3`
    cost_usd: float | None = None
    built_at: str = ""
    provider: str = ""
    earlier: list[Earlier] = field(default_factory=list)

    def shown(self) -> list[Shown]:
        """Every image on this card (for thumbnails, and the files the server may serve)."""
        found = [s for _, s in self.outputs if s] + [s for _, s in self.inputs if s] + [t for t in self.takes if t]
        return found + [s for e in self.earlier for s in e.images]


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def is_image(rel: str) -> bool:
    """An output shown as a picture; a sprite sheet's atlas (JSON) is a link instead."""
    return rel.lower().endswith(_IMAGE_SUFFIXES)


def cards(project: Project, decisions: list[Decision] | None = None) -> list[Card]:
    """One card per target, in the order ``status`` lists them."""
    decisions = project.status() if decisions is None else decisions
    past = history.by_target(project.state_dir)
    return [_card(project, d, past.get(d.name, [])) for d in decisions]


def _card(project: Project, decision: Decision, past: list[dict[str, Any]]) -> Card:
    target = project.targets[decision.name]
    entry = project.lock.get(decision.name) or {}
    locked = {o.get("path"): o for o in entry.get("outputs", []) if isinstance(o, dict)}
    outputs = []
    for rel in target.outputs:
        info = locked.get(rel, {})
        outputs.append((rel, _on_disk(project, rel, info) or _cached(project, info)))
    inputs = [(rel, _on_disk(project, rel, {})) for rel in (*target.images, *((target.mask,) if target.mask else ()))]
    recorded = from_entry(entry)  # the lock's takes, read as status reads them
    takes = [_cached(project, {"sha256": t.sha256, "width": t.width, "height": t.height})
             for t in (recorded.takes if recorded else ())]
    current = _spec_of_entry(entry) if entry.get("spec") else decision.spec
    earlier = []
    for line in past:
        if line["spec"] == entry.get("spec"):
            continue
        images = [_cached(project, o) for o in line["outputs"] if isinstance(o, dict) and is_image(str(o.get("path")))]
        images += [_cached(project, t) for t in line.get("takes", []) or [] if isinstance(t, dict)]
        kept = [s for s in images if s is not None]
        if not kept:
            continue  # gone from the cache (gc): nothing to show
        changed = changed_fields(line, current) if current is not None else []
        earlier.append(Earlier(line["spec"], changed, str(line.get("built_at", "")), kept))
    return Card(
        name=decision.name, state=str(decision.state), reason=decision.reason, prompt=target.prompt,
        params=dict(target.params), outputs=outputs, inputs=inputs, takes=takes,
        pick=recorded.pick if recorded else None, takes_line=recorded.line if recorded else "",
        cost_usd=entry.get("cost_usd"), built_at=str(entry.get("built_at", "")),
        provider=str(entry.get("provider", "")), earlier=earlier,
    )


def _on_disk(project: Project, rel: str, info: Mapping[str, Any]) -> Shown | None:
    sha = project.stats.digest(rel)
    if sha is None:
        return None
    same = info.get("sha256") == sha
    return Shown(sha, project.root / rel, rel, info.get("width", 0) if same else 0,
                 info.get("height", 0) if same else 0)


def _cached(project: Project, info: Mapping[str, Any]) -> Shown | None:
    sha = info.get("sha256")
    source = project.cache.viewable_path(sha) if isinstance(sha, str) else None
    if sha is None or source is None:
        return None
    return Shown(sha, source, None, _int(info.get("width")), _int(info.get("height")))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _spec_of_entry(entry: Mapping[str, Any]) -> Spec:
    """The spec a lock entry records, for comparing an older one with it as ``status`` does."""
    inputs = tuple(InputRef(str(i.get("role", "image")), str(i.get("path", "")), str(i.get("sha256", "")))
                   for i in entry.get("inputs", []) if isinstance(i, dict))
    return Spec(str(entry.get("model", "")), str(entry.get("prompt", "")), dict(entry.get("params", {})), inputs,
                _int(entry.get("revision", 0)), dict(entry.get("extra", {})))
