"""Outputs no target makes any more (an output renamed, a target removed): a build removes them,
as ``ninja -t cleandead`` does, so that the old file does not linger in the user's commit.

Only a file that still holds the bytes the lock recorded goes, and only once those bytes are in the
cache (nothing paid for is lost: a revert restores it for free). A file edited by hand is kept and
named. The paths come from the lock, a committed file: each must be an image inside the project,
reached without a symlink, and no input of any target.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lockfile import Lock
    from .context import BuildContext
    from .resolve import Target
    from .ui import Reporter

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
STATE_DIR = ".imgbuild"


@dataclass(frozen=True)
class Recorded:
    target: str  # the lock entry that records the file
    path: str
    sha256: str


def recorded_outputs(lock: Lock, names: Iterable[str]) -> list[Recorded]:
    """The outputs the lock records for ``names``; read before the build rewrites their entries."""
    found = []
    for name in names:
        for o in (lock.get(name) or {}).get("outputs", []):
            if isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("sha256"), str):
                found.append(Recorded(name, o["path"], o["sha256"]))
    return found


def dead(recorded: Iterable[Recorded], targets: Mapping[str, Target], root: Path) -> list[Recorded]:
    """Those no target makes or reads any more, at a path that is safe to delete."""
    # Case folded: on macOS and Windows `Hero.png` renamed to `hero.png` is the very same file.
    in_use = {p.casefold() for t in targets.values() for p in (*t.outputs, *t.inputs)}
    real_root = os.path.realpath(root)
    seen: set[str] = set()
    found = []
    for r in recorded:
        if os.path.normpath(r.path).casefold() in in_use:  # the usual case, and cheap: no stat
            continue
        rel = _confined(r.path, root, real_root)
        if rel is None or rel.casefold() in in_use or rel in seen:
            continue
        seen.add(rel)
        found.append(Recorded(r.target, rel, r.sha256))
    return found


def _confined(path: str, root: Path, real_root: str) -> str | None:
    """The normalised relative path of a regular image file inside the project, else None."""
    if not path or os.path.isabs(path) or "\\" in path or "\0" in path:
        return None
    rel = os.path.normpath(path)
    if rel.startswith("..") or rel == "." or rel.split(os.sep)[0] == STATE_DIR:
        return None
    if not rel.lower().endswith(IMAGE_EXTENSIONS):
        return None
    parent = os.path.realpath(os.path.join(root, os.path.dirname(rel)))
    if parent != real_root and not parent.startswith(real_root + os.sep):
        return None  # a folder on the way is a symlink out of the project
    try:
        st = os.lstat(os.path.join(root, rel))
    except OSError:
        return None  # gone already
    return rel if stat.S_ISREG(st.st_mode) else None  # never a symlink


def remove_dead(project: BuildContext, recorded: Iterable[Recorded], reporter: Reporter) -> list[str]:
    """Delete the dead outputs that hold their recorded bytes (cached first); warn about the
    others. Returns the paths removed."""
    removed = []
    for r in dead(recorded, project.targets, project.root):
        if project.stats.digest(r.path) != r.sha256:
            reporter.warn(f"{r.path} is no output of any target now (it was {r.target}'s) but was edited by "
                          "hand: kept; delete it if it is not needed")
            continue
        if not project.cache.has(r.sha256):
            project.cache_copy(r.path)
            if not project.cache.has(r.sha256):
                continue  # it changed while being copied: leave it
        os.unlink(project.root / r.path)
        project.stats.forget(r.path)
        removed.append(r.path)
        reporter.event("removed", r.target, f"{r.path}: no target makes it any more; the cache keeps it",
                       path=r.path)
    project.stats.save()
    return removed
