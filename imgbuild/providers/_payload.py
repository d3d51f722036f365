"""What goes on the wire for one request, per dialect (API.md), and what comes back.

Only fields API.md allows for the dialect are sent: never ``response_format`` (openai rejects it
for GPT image models, and aimlapi's default, url, is what we handle), never ``output_compression``
with png, and always imgbuild's own defaults, so that the same target is the same request on every
provider. ``extra`` is merged as it is: it exists for fields this version does not know.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import pricing
from ._images import CONTENT_TYPES, sniff_format
from .base import ImageRequest

FileTuple = tuple[str, IO[bytes], str]


def fields(request: ImageRequest, *, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "size": request.size,
        "quality": request.quality,
        "output_format": request.output_format,
        "background": request.background,
        "moderation": request.moderation,
        "n": n,
    }
    if request.output_compression is not None and request.output_format != "png":
        body["output_compression"] = request.output_compression
    # The engine refuses an `extra` that overrides a named field; a direct caller gets the same.
    body.update({k: v for k, v in request.extra.items() if k not in body})
    return body


def form_value(value: Any) -> str:
    """Multipart fields are text: numbers as digits, booleans as JSON spells them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def open_edit_files(request: ImageRequest, stack: contextlib.ExitStack) -> list[tuple[str, FileTuple]]:
    """The file parts of an edit, as open files that httpx streams in 64 KiB chunks (it learns
    each length with fstat, so it still sends a Content-Length and never reads a file whole)."""
    name = "image" if len(request.images) == 1 else "image[]"
    parts = [(name, _file_part(path, stack)) for path in request.images]
    if request.mask is not None:
        parts.append(("mask", _file_part(request.mask, stack)))
    return parts


def _file_part(path: Path, stack: contextlib.ExitStack) -> FileTuple:
    f = stack.enter_context(open(path, "rb"))
    fmt = sniff_format(f.read(16))
    f.seek(0)
    return (path.name, f, CONTENT_TYPES.get(fmt or "", "application/octet-stream"))


@dataclass
class Spend:
    """Usage and cost added up over the HTTP requests of one target."""

    cost_usd: float | None = 0.0
    usage: dict[str, Any] | None = None
    priced: bool = field(default=False)

    def add(self, payload: Mapping[str, Any], prices: Mapping[str, Any]) -> None:
        meta = payload.get("meta")
        meta_usage = meta.get("usage") if isinstance(meta, Mapping) else None
        usage = payload.get("usage")
        cost: float | None = None
        if isinstance(meta_usage, Mapping):
            usage = meta_usage
            spent = meta_usage.get("usd_spent")
            if isinstance(spent, (int, float)) and not isinstance(spent, bool):
                cost = float(spent)
        elif isinstance(usage, Mapping):
            cost = pricing.usd_from_usage(usage, prices)
        if isinstance(usage, Mapping):
            self.usage = _sum(self.usage or {}, usage)
        # One response without a figure makes the total unknown, not smaller.
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost
        self.priced = True

    def result_cost(self) -> float | None:
        return self.cost_usd if self.priced else None


def _sum(total: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for key, value in more.items():
        if isinstance(value, Mapping):
            prev = out.get(key)
            out[key] = _sum(prev if isinstance(prev, Mapping) else {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            prev = out.get(key, 0)
            out[key] = (prev if isinstance(prev, (int, float)) else 0) + value
        else:
            out.setdefault(key, value)
    return out
