"""Readable words for pydantic's findings: places in one style, a suggestion for a misspelt field.

``images.knight.backgorund: unknown field (did you mean background?)``, as ``imgbuild build
knigt`` already suggests ``knight``; ``images.a.images[1]``, never ``images.a.images.1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The models (pydantic) are imported where a problem is worded, never on the path of a valid manifest.


def place(loc: Sequence[Any]) -> str:
    """A pydantic location as the manifest's own path: ``images.a.images[1]``."""
    where = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
    return where


def _fields_at(loc: Sequence[Any]) -> Sequence[str]:
    """The field names the table at ``loc`` accepts."""
    from .manifest import ManifestFile, Params, Prices, ProviderTable, TargetTable

    parts = [p for p in loc if p != "[key]"]
    if not parts:
        return tuple(ManifestFile.model_fields)
    if parts[0] == "images" and len(parts) == 2:
        return tuple(TargetTable.model_fields)
    if parts == ["defaults"]:
        return tuple(Params.model_fields)
    if parts == ["provider"]:
        return tuple(ProviderTable.model_fields)
    if parts == ["provider", "prices"]:
        return tuple(Prices.model_fields)
    return ()


def unknown_field(loc: Sequence[Any]) -> str:
    """The message for a field no model declares, with the nearest field when there is one."""
    *table, name = [p for p in loc if p != "[key]"] or [""]
    name = str(name)
    if table == ["defaults"] and name in _target_only():
        return f"unknown field: {name} belongs to a target ([images.NAME]); [defaults] holds what targets share"
    import difflib  # for a message only

    close = difflib.get_close_matches(name, _fields_at(table), n=1, cutoff=0.6)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


def length_message(err: dict[str, Any], field: str) -> str | None:
    """pydantic's raw ``List should have at least 1 item after validation, not 0``, in our words."""
    ctx = err.get("ctx") or {}
    actual = ctx.get("actual_length")
    if err["type"] == "too_short":
        if field == "images" and actual == 0:
            return "an empty list: an edit takes 1 to 16 input images (leave images out for a generation)"
        return f"{actual} item(s); at least {ctx.get('min_length')}"
    if err["type"] == "too_long":
        return f"{actual} item(s); at most {ctx.get('max_length')}"
    return None


def _target_only() -> tuple[str, ...]:
    """Fields a target has and [defaults] cannot: each belongs to one image."""
    from .manifest import Params, TargetTable

    return tuple(sorted(set(TargetTable.model_fields) - set(Params.model_fields)))
