"""What each target was built as before: an append-only ``.imgbuild/history.jsonl``.

The lock holds only the current entry of a target; the cache keeps every image ever made, but
by digest, not by target. The review page shows "earlier images of this target under older
specs", so the build appends one line per lock entry it writes: the target, the entry's spec
digest and readable fields (the very shape of a lock entry, so that ``spec.changed_fields``, the
code ``status`` uses, can say what changed), its outputs (and takes), and when it was built.

Machine-local and best effort, like the stat cache: a line that cannot be written or read is
skipped, never an error of the build. One ``write`` per line on a file opened ``O_APPEND``, so
that restores in parallel threads never interleave within a line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
HISTORY_VERSION = 1
# The fields of a lock entry a history line keeps: enough to show the images and say what changed.
KEPT = ("spec", "model", "prompt", "params", "revision", "inputs", "extra", "outputs", "takes", "pick",
        "provider", "built_at", "cost_usd")


def record(state_dir: Path, name: str, entry: Mapping[str, Any]) -> None:
    """Append the lock entry ``entry`` of target ``name`` (called as the build writes it)."""
    line = {"v": HISTORY_VERSION, "target": name, **{k: entry[k] for k in KEPT if k in entry}}
    data = (json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    try:
        fd = os.open(state_dir / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:
        return  # only the review page's memory: the build goes on without it
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def read(state_dir: Path) -> Iterator[dict[str, Any]]:
    """Every readable line, oldest first; a torn or foreign line is skipped."""
    try:
        fd = os.open(state_dir / HISTORY_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("v") == HISTORY_VERSION and isinstance(line.get("target"), str) \
                    and isinstance(line.get("spec"), str) and isinstance(line.get("outputs"), list):
                yield line


def by_target(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each target's earlier entries, newest first, one per spec digest (its latest)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for line in read(state_dir):
        specs = found.setdefault(line["target"], {})
        specs.pop(line["spec"], None)  # re-inserted: the dict's order is the order last seen
        specs[line["spec"]] = line
    return {name: list(reversed(specs.values())) for name, specs in found.items()}
