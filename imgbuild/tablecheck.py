"""A target table checked without pydantic, for the common case of a valid one.

Importing pydantic and building the manifest's models costs more than a one-target change is
allowed to take. :func:`plain_table` accepts a ``[images.NAME]`` table only when it is certainly
what :class:`imgbuild.manifest.TargetTable` accepts (strict types, known fields, the same ranges and
choices), and returns None on any doubt: the caller then validates with pydantic, whose messages
say what is wrong and where. ``tests/test_incremental.py`` holds this module to the model's fields.
"""

from __future__ import annotations

from typing import Any

TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# imgbuild's own defaults: always part of the spec and always sent (SPEC §1).
BUILTIN_DEFAULTS: dict[str, Any] = {
    "size": "1024x1024",
    "quality": "medium",
    "output_format": "png",
    "background": "auto",
    "moderation": "auto",
    "n": 1,
}
DEFAULT_COMPRESSION = 100

_CHOICES = {
    "quality": ("low", "medium", "high", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "background": ("transparent", "opaque", "auto"),
    "moderation": ("low", "auto"),
}
_RANGES = {"output_compression": (0, 100), "n": (1, 10), "revision": (0, None), "candidates": (2, 10)}
_STRINGS = ("size", "prompt", "prompt_file", "output", "mask")
# TargetTable's fields, in the model's order (model_dump's order).
FIELDS = ("size", "quality", "output_format", "background", "moderation", "output_compression", "n",
          "revision", "pinned", "extra", "prompt", "prompt_file", "output", "images", "mask", "candidates",
          # A derived target's (imgbuild.derive): never "sure" here, such a table goes to pydantic.
          "from_", "sheet", "crop", "trim", "padding", "resize", "fit", "matte", "lossless", "columns", "atlas")


def _sure(key: str, value: Any) -> bool:
    if key in _STRINGS:
        return type(value) is str
    if key in _CHOICES:
        return type(value) is str and value in _CHOICES[key]
    if key in _RANGES:
        low, high = _RANGES[key]
        return type(value) is int and value >= low and (high is None or value <= high)
    if key == "pinned":
        return type(value) is bool
    if key == "extra":
        return type(value) is dict
    if key == "images":
        return type(value) is list and 1 <= len(value) <= 16 and all(type(v) is str for v in value)
    return False  # an unknown field: pydantic says so


class PlainTable:
    """A valid target table with the attributes and ``model_dump`` the resolver reads of a
    :class:`~imgbuild.manifest.TargetTable`."""

    __slots__ = ("_given", *FIELDS)

    def __init__(self, given: dict[str, Any]) -> None:
        self._given = given
        for key in FIELDS:
            setattr(self, key, given.get(key))

    def model_dump(self, *, exclude_none: bool = True) -> dict[str, Any]:
        given = self._given
        return {k: (list(given[k]) if k == "images" else dict(given[k]) if k == "extra" else given[k])
                for k in FIELDS if k in given}


def plain_table(table: Any) -> PlainTable | None:
    """The table, when it is certainly valid; else None (validate it with pydantic)."""
    if type(table) is not dict:
        return None
    for key, value in table.items():
        if not _sure(key, value):
            return None
    return PlainTable(table)


class PlainDefaults:
    """``[defaults]`` as the resolver reads it, rebuilt from its ``model_dump``."""

    def __init__(self, dumped: dict[str, Any]) -> None:
        self._dumped = dumped

    def model_dump(self, *, exclude_none: bool = True) -> dict[str, Any]:
        return dict(self._dumped)


class PlainManifest:
    """The manifest-wide parts the resolver reads (out_dir, vars, defaults), without the models."""

    def __init__(self, out_dir: str, variables: dict[str, str], defaults: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.vars = variables
        self.defaults = PlainDefaults(defaults)
