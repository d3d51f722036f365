"""The spec of a target — its canonical request — and the spec digest that decides staleness.

The digest covers what changes the image the API would return: model, resolved prompt, every
parameter after defaults, the ordered content digests of the inputs and mask, revision and extra.
It does not cover output paths, input paths, the endpoint, the key or the manifest's formatting.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InputRef:
    role: str  # "image" or "mask"
    path: str
    sha256: str


@dataclass(frozen=True)
class Spec:
    model: str
    prompt: str
    params: Mapping[str, Any]
    inputs: tuple[InputRef, ...]
    revision: int
    extra: Mapping[str, Any]

    @functools.cached_property
    def digest(self) -> str:
        canonical = {
            "model": self.model,
            "prompt": self.prompt,
            "params": self.params,
            "images": [i.sha256 for i in self.inputs if i.role == "image"],
            "mask": next((i.sha256 for i in self.inputs if i.role == "mask"), None),
            "revision": self.revision,
            "extra": self.extra,
        }
        data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()

    def known_digest(self, digest: str) -> Spec:
        """This spec, its digest given: an earlier run computed it from the very same fields."""
        self.__dict__["digest"] = digest
        return self

    def readable(self) -> dict[str, Any]:
        """The fields the lock records so that status can say what changed."""
        entry: dict[str, Any] = {
            "model": self.model,
            "prompt": self.prompt,
            "params": dict(self.params),
            "revision": self.revision,
            "inputs": [{"role": i.role, "path": i.path, "sha256": i.sha256} for i in self.inputs],
        }
        if self.extra:
            entry["extra"] = dict(self.extra)
        return entry


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def changed_fields(old: Mapping[str, Any], new: Spec) -> list[str]:
    """Why ``new`` differs from the spec recorded in a lock entry, field by field."""
    reasons = []
    if old.get("model") != new.model:
        reasons.append(f"model: {old.get('model')} → {new.model}")
    if old.get("prompt") != new.prompt:
        reasons.append("prompt")
    old_params = old.get("params", {})
    for key in sorted(set(old_params) | set(new.params)):
        a, b = old_params.get(key), new.params.get(key)
        if a != b:
            reasons.append(f"{key}: {_short(a) if a is not None else '—'} → {_short(b) if b is not None else '—'}")
    old_inputs = [(i.get("role"), i.get("path"), i.get("sha256")) for i in old.get("inputs", [])]
    new_inputs = [(i.role, i.path, i.sha256) for i in new.inputs]
    for role in ("image", "mask"):
        a = [i for i in old_inputs if i[0] == role]
        b = [i for i in new_inputs if i[0] == role]
        if len(a) != len(b):
            reasons.append(f"{role}s: {len(a)} → {len(b)}" if role == "image" else ("mask added" if b else "mask removed"))
            continue
        for (_, pa, da), (_, pb, db) in zip(a, b):
            if da != db:
                reasons.append(f"input {pb}" if pa == pb else f"input {pa} → {pb}")
    if old.get("revision", 0) != new.revision:
        reasons.append(f"revision: {old.get('revision', 0)} → {new.revision}")
    if dict(old.get("extra", {})) != dict(new.extra):
        reasons.append("extra")
    return reasons or ["spec"]
