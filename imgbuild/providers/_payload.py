"""What goes on the wire for one request, per dialect (API.md), and what comes back.

Only fields API.md allows for the dialect are sent: never ``response_format`` (openai rejects it
for GPT image models, and aimlapi's default, url, is what we handle), never ``output_compression``
with png, never ``moderation`` with an edit (its endpoint does not define it), and always
imgbuild's own defaults, so that the same target is the same request on every provider. ``extra``
is merged as it is, apart from fields the other endpoint defines (:mod:`.schema`): it exists for
fields this version does not know.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import pricing
from . import schema
from ._images import CONTENT_TYPES, sniff_format
from .base import ImageRequest

FileTuple = tuple[str, IO[bytes], str]
log = logging.getLogger("imgbuild.providers")
# Fields the request carries from ImageRequest's own attributes and files, never from `extra`.
OWN_FIELDS = frozenset({"model", "prompt", "size", "quality", "output_format", "background",
                        "moderation", "output_compression", "n", "image", "image[]", "mask"})


def fields(request: ImageRequest, *, n: int) -> dict[str, Any]:
    """The fields of one request to the endpoint ``request`` goes to: images/edits when it has
    input images, else images/generations."""
    edit = request.is_edit
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "size": request.size,
        "quality": request.quality,
        "output_format": request.output_format,
        "background": request.background,
        "n": n,
    }
    if not edit:
        body["moderation"] = request.moderation
    if request.output_compression is not None and request.output_format != "png":
        body["output_compression"] = request.output_compression
    # The engine refuses an `extra` that overrides a named field or changes the answer's shape,
    # and leaves out of a target's spec the fields of the other endpoint; a direct caller gets
    # the same request.
    body.update({k: v for k, v in request.extra.items()
                 if k not in body and k not in OWN_FIELDS and k not in schema.ANSWER_SHAPE_FIELDS
                 and not schema.defined_elsewhere(k, edit=edit)})
    return body


def _loads(text: bytes | bytearray) -> Any:
    if len(text) > MAX_JSON_BYTES:
        raise AnswerTooLarge(f"the answer's JSON besides its images is {len(text):,} bytes, over the "
                             f"{MAX_JSON_BYTES:,} byte cap")
    return json.loads(text)


def form_value(value: Any) -> str:
    """Multipart fields are text: numbers as digits, booleans as JSON spells them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def open_edit_files(request: ImageRequest,
                    stack: contextlib.ExitStack) -> list[tuple[str, FileTuple]]:
    """The file parts of an edit, as open files that httpx streams in 64 KiB chunks (it learns
    each length with fstat, so it still sends a Content-Length and never reads a file whole)."""
    name = "image" if len(request.images) == 1 else "image[]"
    parts = [(name, _file_part(path, stack)) for path in request.images]
    if request.mask is not None:
        parts.append(("mask", _file_part(request.mask, stack)))
    return parts


def _file_part(path: Path, stack: contextlib.ExitStack) -> FileTuple:
    f = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the caller's stack
    fmt = sniff_format(f.read(16))
    f.seek(0)
    return (path.name, f, CONTENT_TYPES.get(fmt or "", "application/octet-stream"))


_B64_VALUE = re.compile(rb'"b64_json"\s*:\s*"')
_SLOT = "@image:"  # every b64_json value is replaced, so no real value can be mistaken
# An answer's JSON besides its base64 images is a few KB from a real server. More is refused before
# it is parsed: json.loads of 256 MB of `[0,0,…]` would build gigabytes of objects.
MAX_JSON_BYTES = 8 * 2**20


class AnswerTooLarge(ValueError):
    """The JSON of an answer, its images aside, is over MAX_JSON_BYTES."""


def parse_response(body: bytes | bytearray) -> Any:
    """The JSON of an answer, with each ``b64_json`` value left as a memoryview into ``body``.

    A 2048x2048 PNG comes as 8 MB of base64; ``json.loads`` would decode the whole body to a str
    and copy the base64 out of it again, twice the memory and half the client's CPU per image.
    The base64 alphabet has no quote and no backslash, so its end is the next quote (``\\/``, which
    some gateways write for ``/``, is undone); anything unusual (another escape inside, no closing
    quote) falls back to a plain ``json.loads``. What is parsed as JSON is at most MAX_JSON_BYTES.
    """
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    images: list[memoryview] = []
    pos = 0
    for match in _B64_VALUE.finditer(body):
        start = match.end()
        end = body.find(b'"', start)
        if end < 0:
            return _loads(body)
        encoded = view[start:end]
        if body.find(b"\\", start, end) >= 0:
            unescaped = bytes(encoded).replace(b"\\/", b"/")
            if b"\\" in unescaped:
                return _loads(body)
            encoded = memoryview(unescaped)
        pieces += [view[pos:start], f"{_SLOT}{len(images)}".encode()]
        images.append(encoded)
        pos = end
    if not images:
        return _loads(body)
    payload = _loads(b"".join([*pieces, view[pos:]]))
    data = payload.get("data") if isinstance(payload, dict) else None
    for item in data if isinstance(data, list) else ():
        value = item.get("b64_json") if isinstance(item, dict) else None
        if isinstance(value, str) and value.startswith(_SLOT):
            item["b64_json"] = images[int(value.removeprefix(_SLOT))]
    return payload


@dataclass
class Spend:
    """Usage and cost added up over the HTTP requests of one target."""

    cost_usd: float = 0.0
    usage: dict[str, Any] | None = None
    priced: bool = field(default=False)

    def add(self, payload: Mapping[str, Any], prices: Mapping[str, Any], *, request: ImageRequest,
            images: int) -> None:
        """Count one answered request: the USD figure it reports; else a flat ``per_image`` price
        from ``[provider.prices]`` (the user's own terms); else its token usage, priced; else the
        estimate. A figure that is not a finite amount or count is a warning, never a value."""
        meta = payload.get("meta")
        meta_usage = meta.get("usage") if isinstance(meta, Mapping) else None
        usage = payload.get("usage")
        cost: float | None = None
        complaints = []
        if isinstance(meta_usage, Mapping):
            usage = meta_usage
            if "usd_spent" in meta_usage:
                cost = pricing.checked_usd(meta_usage["usd_spent"])
                if cost is None:
                    complaints.append(f"usd_spent = {pricing.shown(meta_usage['usd_spent'])} is not an amount")
        flat = pricing.per_image_usd(prices, request.quality)
        if cost is None and flat is not None:
            cost = flat * images
        elif cost is None and isinstance(usage, Mapping):
            try:
                cost = pricing.usd_from_usage(usage, prices)
            except ValueError as exc:
                complaints.append(str(exc))
        if cost is None:
            cost = pricing.estimate_usd(size=request.size, quality=request.quality, n=images,
                                        prompt_chars=len(request.prompt), input_images=len(request.images),
                                        prices=prices)
        if complaints:
            log.warning("%s: the API reported %s; counted as $%.4f instead",
                        request.target, "; ".join(complaints), cost)
        if isinstance(usage, Mapping):
            self.usage = _sum(self.usage or {}, usage)
        self.cost_usd += cost
        self.priced = True

    def result_cost(self) -> float | None:
        return self.cost_usd if self.priced else None


def _sum(total: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for key, value in more.items():
        if isinstance(value, Mapping):
            prev = out.get(key)
            out[key] = _sum(prev if isinstance(prev, Mapping) else {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            prev = out.get(key, 0)
            out[key] = (prev if isinstance(prev, (int, float)) else 0) + value
        else:
            out.setdefault(key, value)
    return out
