"""A target table checked without pydantic, for the common case of a valid one.

Importing pydantic and building the manifest's models costs more than a one-target change is
allowed to take. :func:`plain_table` accepts a ``[images.NAME]`` table only when it is certainly
what :class:`imgbuild.manifest.TargetTable` accepts (strict types, known fields, the same ranges and
choices), and returns None on any doubt: the caller then validates with pydantic, whose messages
say what is wrong and where. ``tests/test_incremental.py`` holds this module to the model's fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_NAME = re.compile(TARGET_NAME_PATTERN)  # fullmatch: `$` also matches before a final newline

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


_UNSET = dict.fromkeys(FIELDS)


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

    def __init__(self, given: dict[str, Any]) -> None:
        # One update, not a setattr per field: a fresh clone's check makes one per target.
        self.__dict__.update(_UNSET)
        self.__dict__.update(given)  # plain_table() let only FIELDS through
        self._given = given

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


# -- the whole manifest ------------------------------------------------------------------------
# A `check` of a fresh clone validates every table: importing pydantic and building the models
# would be a third of its time. plain_manifest() accepts a manifest only when every part of it is
# certainly what ManifestFile accepts; else None, and pydantic validates it (tests/test_check_fast.py
# holds these to the models).

PRESET_NAMES = ("openai", "aimlapi", "compatible", "placeholder")
PARAMS_FIELDS = FIELDS[:10]  # the fields [defaults] shares with a target (Params)
_KEY_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP = re.compile(r"https?://")
_TOP = frozenset({"out_dir", "provider", "defaults", "vars", "cache", "images"})


def _number(value: Any) -> bool:
    """A number pydantic's lax float takes as it is (an int of any size would be a doubt)."""
    return (type(value) is float and math.isfinite(value)) or (type(value) is int and abs(value) <= 2**53)


# [provider] field → whether a value is certainly valid for it (ProviderTable; prices not here)
_PROVIDER_SURE: dict[str, Callable[[Any], bool]] = {
    "name": lambda v: type(v) is str and v in PRESET_NAMES,
    "model": lambda v: type(v) is str and len(v) >= 1,
    "api_key_env": lambda v: type(v) is str and _KEY_ENV.fullmatch(v) is not None,
    "base_url": lambda v: type(v) is str and _HTTP.match(v) is not None,
    "concurrency": lambda v: type(v) is int and 1 <= v <= 64,
    "timeout": lambda v: _number(v) and v > 0,
    "max_retries": lambda v: type(v) is int and 0 <= v <= 20,
    "confirm_above": lambda v: _number(v) and v >= 0,
}


class PlainPrices:
    def model_dump(self) -> dict[str, Any]:
        return {}  # no price overridden: the preset's own


class PlainProvider:
    """A valid ``[provider]`` without ``prices``, with the attributes resolve_settings reads of a
    :class:`~imgbuild.manifest.ProviderTable` (and its defaults)."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.name: str = given.get("name", "openai")
        self.model: str | None = given.get("model")
        self.api_key_env: str | None = given.get("api_key_env")
        self.base_url: str | None = given.get("base_url")
        self.concurrency: int = given.get("concurrency", 4)
        self.timeout: float = float(given.get("timeout", 600))
        self.max_retries: int = given.get("max_retries", 4)
        self.confirm_above: float = float(given.get("confirm_above", 1.0))
        self.prices = PlainPrices()


def plain_manifest(raw: Any) -> tuple[PlainManifest, PlainProvider, dict[str, PlainTable]] | None:
    """(manifest-wide parts, provider, target tables) of a manifest that is certainly valid; else
    None (validate it with pydantic)."""
    if type(raw) is not dict or not _TOP.issuperset(raw):
        return None
    out_dir = raw.get("out_dir", "build/images")
    provider = raw.get("provider", {})
    defaults = raw.get("defaults", {})
    variables = raw.get("vars", {})
    images = raw.get("images", {})
    if (type(out_dir) is not str or type(provider) is not dict or type(defaults) is not dict
            or type(variables) is not dict or type(images) is not dict or raw.get("cache", {}) != {}):
        return None  # [cache] remote: its URL is checked by the model
    if not all(key in _PROVIDER_SURE and _PROVIDER_SURE[key](value) for key, value in provider.items()):
        return None
    if not all(key in PARAMS_FIELDS and _sure(key, value) for key, value in defaults.items()):
        return None
    if not all(type(value) is str for value in variables.values()):
        return None
    tables = {}
    for name, table in images.items():
        plain = plain_table(table) if _NAME.fullmatch(name) else None
        if plain is None:
            return None
        tables[name] = plain
    dumped = {k: (dict(defaults[k]) if k == "extra" else defaults[k]) for k in PARAMS_FIELDS if k in defaults}
    return PlainManifest(out_dir, dict(variables), dumped), PlainProvider(provider), tables
