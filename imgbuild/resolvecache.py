"""A machine-local copy of the resolved manifest, so that a no-op build neither parses TOML nor
validates 10,000 targets again (ninja keeps its parsed state for the same reason).

The copy is keyed by the manifest's sha256, the provider overrides and imgbuild's version, and is
valid while every file resolving read — prompt files, input images, masks — keeps its (size,
mtime, inode). Only a valid manifest is ever copied, and only a build writes the copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from . import __version__
from .fsutil import atomic_write, is_inside
from .providers import PRESETS
from .providers.base import ProviderSettings
from .resolve import Overrides, Resolved, Target
from .statcache import RACY_NS

CACHE_VERSION = 2
FILE = "manifest.json"
_FIELDS = fields(Target)


def key_of(data: bytes, overrides: Overrides) -> str:
    h = hashlib.sha256(data)
    h.update(f"\0{overrides.provider}\0{overrides.base_url}\0{overrides.api_key_env}\0{__version__}\0{CACHE_VERSION}".encode())
    return h.hexdigest()


def _signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def files_read(resolved: Resolved) -> list[str]:
    """The files resolving read besides the manifest: prompt files, and inputs no target makes."""
    outputs = {o for t in resolved.targets.values() for o in t.outputs}
    files: set[str] = set()
    for t in resolved.targets.values():
        files.update(p for p in t.inputs if p not in outputs)
    return sorted(files)


def load(state_dir: Path, key: str, root: Path) -> Resolved | None:
    try:
        raw = (state_dir / FILE).read_bytes()
        if key.encode() not in raw[:256]:
            return None  # another manifest's copy: not worth parsing megabytes to find out
        data = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("key") != key:
        return None
    try:
        # As the stat cache does: a file modified within a timestamp tick of the resolve that read
        # it may have been rewritten since at the same size and mtime ("racily clean").
        trusted_before = int(data["read_ns"]) - RACY_NS
        for rel, sig in data["files"]:
            if _signature(os.path.join(root, rel)) != sig or sig[1] >= trusted_before:
                return None
        targets = {t["name"]: _target(t) for t in data["targets"]}
        if not folders_inside(root, targets.values()):
            return None  # the full checks say which path leads out
        settings = ProviderSettings(**data["settings"])
        return Resolved(None, targets, settings, PRESETS[settings.preset])
    except (KeyError, TypeError, ValueError):
        return None  # a copy from another version of the code: start over


def folders_inside(root: Path, targets: Iterable[Target]) -> bool:
    """Every folder an output or input is in still lies inside the project. One realpath per
    folder, not per file: a folder swapped for a symlink since the copy was made is caught."""
    real_root = os.path.realpath(root)
    folders: set[str] = set()
    for t in targets:  # plain loops and rpartition: 10,000 targets in a few milliseconds
        for p in t.outputs:
            folders.add(p.rpartition("/")[0])
        for p in t.images:
            folders.add(p.rpartition("/")[0])
        for extra in (t.mask, t.prompt_file):
            if extra:
                folders.add(extra.rpartition("/")[0])
    return all(is_inside(os.path.realpath(os.path.join(root, f)), real_root) for f in folders)


def _target(t: dict[str, Any]) -> Target:
    t["outputs"] = tuple(t["outputs"])
    t["images"] = tuple(t["images"])
    return Target(**t)


def save(state_dir: Path, key: str, resolved: Resolved, root: Path, read_ns: int) -> None:
    """``read_ns``: a time before resolving read any file (see :func:`load`)."""
    files = [[rel, _signature(os.path.join(root, rel))] for rel in files_read(resolved)]
    payload = {
        "version": CACHE_VERSION,
        "key": key,
        "read_ns": read_ns,
        "files": files,
        "settings": {**asdict(resolved.settings), "prices": dict(resolved.settings.prices)},
        "targets": [{f.name: getattr(t, f.name) for f in _FIELDS} for t in resolved.targets.values()],
    }
    try:
        atomic_write(state_dir / FILE, json.dumps(payload, separators=(",", ":")).encode(), durable=False)
    except OSError:
        pass  # only a speed-up
