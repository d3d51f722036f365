"""The scoped path's state file (``.imgbuild/change.marshal``, scoped.py): its name, format and
layout, read by scoped.py before anything heavy is loaded and written by it and by splice.py."""

from __future__ import annotations

import marshal
from typing import Any

FORMAT = 4
FILE = "change.marshal"


def change_state_parts(state: tuple[Any, ...]) -> list[bytes]:
    """The scoped path's state as written: its marshal, with the manifest's length in place of
    its bytes, then those bytes as they are (2.5 MB at 10,000 targets, neither copied into the
    marshal nor out of it)."""
    manifest = state[3]
    return [marshal.dumps((*state[:3], len(manifest), *state[4:])), manifest]


def load_change_state(data: bytes) -> tuple[Any, ...]:
    """What :func:`change_state_parts` wrote (marshal.loads reads its object and ignores the rest)."""
    state = marshal.loads(data)
    size = state[3]
    if not isinstance(size, int) or not 0 <= size <= len(data):
        raise ValueError("a change state of another layout")
    return (*state[:3], data[len(data) - size:], *state[4:])
