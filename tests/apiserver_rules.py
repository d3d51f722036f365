"""The rules of the local API server, written from API.md alone (not from imgbuild's own rules, so
that it is an independent check of them): which fields each dialect accepts, the size rules, the
multipart parts of an edit, and the real images it answers with.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

MODELS = {"openai": "gpt-image-2", "aimlapi": "openai/gpt-image-2"}
# The request fields each endpoint defines, per dialect: anything else is a 400 "Unrecognized
# request argument supplied", as the real services answer. Copied from the published schemas, not
# from imgbuild:
# - openai: github.com/openai/openai-openapi, openapi.yaml info.version 2.3.0 (commit f85dbe223d40,
#   2026-08-21), the properties of CreateImageRequest and CreateImageEditRequest (whose `image` and
#   `mask` are file parts, see EDIT_FILE_PARTS). Neither `moderation` on edits nor
#   `input_fidelity` on generations.
# - aimlapi: docs.aimlapi.com, api-references/image-models/openai/gpt-image-2, whose API schemas are
#   github.com/aimlapi/api-docs docs/api-references/image-models/OpenAI/gpt-image-2-GENERATE.json and
#   gpt-image-2-EDIT_local_changes.json (API.md: the edit endpoint has no `moderation`).
ENDPOINT_FIELDS: dict[tuple[str, str], frozenset[str]] = {
    ("openai", "generations"): frozenset({
        "prompt", "model", "n", "quality", "response_format", "output_format",
        "output_compression", "stream", "partial_images", "size", "moderation", "background",
        "style", "user"}),
    ("openai", "edits"): frozenset({
        "prompt", "background", "model", "n", "size", "response_format", "output_format",
        "output_compression", "user", "input_fidelity", "stream", "partial_images", "quality"}),
    ("aimlapi", "generations"): frozenset({
        "model", "prompt", "size", "quality", "output_format", "background", "moderation", "n",
        "output_compression", "response_format"}),
    ("aimlapi", "edits"): frozenset({
        "model", "prompt", "size", "quality", "output_format", "background", "n",
        "output_compression", "response_format"}),
}
EDIT_FILE_PARTS = frozenset({"image", "image[]", "mask"})
AIMLAPI_SIZES = ("1024x1024", "1024x1536", "1536x1024")
QUALITIES = {"openai": ("low", "medium", "high", "auto"), "aimlapi": ("low", "medium", "high")}
FORMATS = ("png", "jpeg", "webp")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_MASK_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024


class Invalid(Exception):
    """A 400 the real API would send: ``code`` and ``message`` go into the error JSON."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


def sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# -- multipart ---------------------------------------------------------------------------------

@dataclass
class Part:
    """One multipart part. Files are spooled to disk past 1 MiB, so 16 x 50 MB never sits in RAM."""

    name: str
    filename: str | None
    content_type: str | None
    file: IO[bytes] = field(  # closed by the server once the request is answered
        default_factory=lambda: tempfile.SpooledTemporaryFile(2**20))  # noqa: SIM115
    size: int = 0
    head: bytes = b""
    _sha: Any = field(default_factory=hashlib.sha256)

    def write(self, data: bytes) -> None:
        if len(self.head) < 32:
            self.head += data[: 32 - len(self.head)]
        self.file.write(data)
        self._sha.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return str(self._sha.hexdigest())

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8")


_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


def parse_multipart(read: Callable[[int], bytes], length: int, boundary: bytes) -> list[Part]:
    """Parse a multipart body of ``length`` bytes in 64 KiB reads, streaming parts to files."""
    remaining = length

    def more() -> bytes:
        nonlocal remaining
        if remaining <= 0:
            raise Invalid("truncated multipart body", "invalid_request")
        chunk = read(min(CHUNK, remaining))
        if not chunk:
            raise Invalid("truncated multipart body", "invalid_request")
        remaining -= len(chunk)
        return chunk

    delim = b"\r\n--" + boundary
    buf = b"\r\n"  # so that the first boundary line looks like every other one
    while (i := buf.find(delim)) < 0:
        buf = buf[-len(delim):] + more()
    buf = buf[i + len(delim):]
    parts: list[Part] = []
    while True:
        while len(buf) < 2:
            buf += more()
        if buf.startswith(b"--"):
            break
        if not buf.startswith(b"\r\n"):
            raise Invalid("malformed multipart boundary", "invalid_request")
        buf = buf[2:]
        while (j := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > 16384:
                raise Invalid("multipart part headers too long", "invalid_request")
            buf += more()
        headers = {}
        for line in buf[:j].decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        buf = buf[j + 4:]
        params = dict(_DISPOSITION.findall(headers.get("content-disposition", "")))
        part = Part(params.get("name", ""), params.get("filename"), headers.get("content-type"))
        keep = len(delim) - 1
        while (i := buf.find(delim)) < 0:
            if len(buf) > keep:
                part.write(buf[:-keep])
                buf = buf[-keep:]
            buf += more()
        part.write(buf[:i])
        buf = buf[i + len(delim):]
        part.file.seek(0)
        parts.append(part)
    while remaining > 0:  # the epilogue, if any
        more()
    return parts


# -- request rules -----------------------------------------------------------------------------

def check_size(mode: str, size: str) -> None:
    if mode == "aimlapi":
        if size not in AIMLAPI_SIZES:
            raise Invalid(f"Invalid size '{size}'. Supported sizes are {', '.join(AIMLAPI_SIZES)}.",
                          param="size")
        return
    if size == "auto":
        return
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m:
        raise Invalid(f"Invalid size '{size}'.", param="size")
    w, h = int(m.group(1)), int(m.group(2))
    if w % 16 or h % 16 or max(w, h) > 3840 or max(w, h) > 3 * min(w, h) \
            or not 655_360 <= w * h <= 8_294_400:
        raise Invalid(f"Invalid size '{size}' for gpt-image-2.", param="size")


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise Invalid(f"Invalid type for '{name}': expected an integer.", param=name)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    raise Invalid(f"Invalid type for '{name}': expected an integer.", param=name)


def _choice(fields: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    if name not in fields:
        return None
    if fields[name] not in allowed:
        raise Invalid(f"Invalid value for '{name}': {fields[name]!r}. Supported values are: "
                      f"{', '.join(map(repr, allowed))}.", param=name)
    return str(fields[name])


def check_fields(mode: str, edit: bool, fields: dict[str, Any], extra_fields: tuple[str, ...],
                 transparent_ok: bool) -> dict[str, Any]:
    """Validate like API.md says each dialect does; return the request with defaults filled."""
    defined = ENDPOINT_FIELDS[(mode, "edits" if edit else "generations")]
    for name in fields:
        if name not in defined and name not in extra_fields:
            raise Invalid(f"Unrecognized request argument supplied: {name}",
                          "unknown_parameter", name)
    if mode == "openai" and "response_format" in fields:
        raise Invalid("Unknown parameter: 'response_format'. It is not supported for GPT "
                      "image models.", "unknown_parameter", "response_format")
    if fields.get("model") != MODELS[mode]:
        raise Invalid(f"Invalid model {fields.get('model')!r}; this endpoint serves "
                      f"{MODELS[mode]!r}.", "invalid_model", "model")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Invalid("Missing required parameter: 'prompt'.", "missing_required_parameter",
                      "prompt")
    if len(prompt) > 32_000:
        raise Invalid("Prompt is longer than 32000 characters.", param="prompt")
    size = str(fields.get("size", "auto" if mode == "openai" else "1024x1024"))
    check_size(mode, size)
    fmt = _choice(fields, "output_format", FORMATS) or "png"
    background = _choice(fields, "background", ("transparent", "opaque", "auto")) or "auto"
    quality = _choice(fields, "quality", QUALITIES[mode]) or ("auto" if mode == "openai"
                                                              else "medium")
    _choice(fields, "moderation", ("low", "auto"))
    _choice(fields, "response_format", ("url", "b64_json"))
    n = _int(fields.get("n", 1), "n")
    if not 1 <= n <= 10:
        raise Invalid(f"Invalid 'n': {n}. Must be between 1 and 10.", param="n")
    if mode == "aimlapi" and not edit and n != 1:
        raise Invalid("n must be 1 for openai/gpt-image-2 generations.", param="n")
    if "output_compression" in fields:
        compression = _int(fields["output_compression"], "output_compression")
        if fmt == "png":
            raise Invalid("output_compression is only supported for jpeg and webp.",
                          param="output_compression")
        if not 0 <= compression <= 100:
            raise Invalid("output_compression must be between 0 and 100.",
                          param="output_compression")
    if background == "transparent":
        if fmt == "jpeg":
            raise Invalid("Transparent background requires png or webp.", param="background")
        if not transparent_ok:
            raise Invalid("The model gpt-image-2 does not support transparent backgrounds for "
                          "this organization.", "unsupported_value", "background")
    return {"size": size, "output_format": fmt, "background": background, "quality": quality,
            "n": n, "response_format": fields.get("response_format", "url")}


def check_edit_parts(mode: str, files: list[Part]) -> tuple[int, int]:
    """The edit's file parts; returns the first image's size."""
    from PIL import Image

    names = {p.name for p in files}
    unknown = names - EDIT_FILE_PARTS
    if unknown:
        raise Invalid(f"Unrecognized request argument supplied: {sorted(unknown)[0]}",
                      "unknown_parameter")
    images = [p for p in files if p.name in ("image", "image[]")]
    if not images:
        raise Invalid("Missing required parameter: 'image'.", "missing_required_parameter",
                      "image")
    if "image" in names and ("image[]" in names or len(images) > 1):
        raise Invalid("Send one image as 'image', or several as repeated 'image[]'.",
                      param="image")
    if len(images) > 16:
        raise Invalid(f"Too many images: {len(images)}; at most 16.", param="image")
    for part in images:
        if sniff(part.head) is None:
            raise Invalid(f"Invalid image file {part.filename!r}: must be png, jpeg or webp.",
                          "invalid_image_format", "image")
        if part.size >= MAX_IMAGE_BYTES:
            raise Invalid(f"Image {part.filename!r} is larger than 50 MB.", param="image")
    try:
        with Image.open(images[0].file) as im:
            first_size = im.size
    except Exception:
        raise Invalid("The first image cannot be decoded.", "invalid_image", "image") from None
    masks = [p for p in files if p.name == "mask"]
    if len(masks) > 1:
        raise Invalid("Only one mask may be sent.", param="mask")
    if masks:
        mask = masks[0]
        if sniff(mask.head) != "png" or mask.size >= MAX_MASK_BYTES:
            raise Invalid("The mask must be a PNG under 4 MB.", "invalid_mask", "mask")
        with Image.open(mask.file) as im:
            if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
                raise Invalid("The mask must have an alpha channel.", "invalid_mask", "mask")
            if im.size != first_size:
                raise Invalid(f"The mask is {im.size[0]}x{im.size[1]}, the image "
                              f"{first_size[0]}x{first_size[1]}: they must match.",
                              "invalid_mask", "mask")
    return first_size


# -- the images it answers with ------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def render(width: int, height: int, fmt: str, transparent: bool) -> bytes:
    """A real image of that size and format, about as large in bytes as a real one (gradients
    plus noise: 1.5 MB for a 1024x1024 PNG). Cached: the server answers in microseconds."""
    from PIL import Image

    r = Image.linear_gradient("L").resize((width, height))
    g = Image.radial_gradient("L").resize((width, height))
    b = Image.effect_noise((width, height), 20)
    im = Image.merge("RGB", (r, g, b))
    if transparent and fmt != "jpeg":
        im.putalpha(Image.radial_gradient("L").resize((width, height)).point(
            lambda v: 0 if v > 200 else 255))
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, "PNG", compress_level=1)
    elif fmt == "jpeg":
        im.save(buf, "JPEG", quality=90)
    else:
        im.save(buf, "WEBP", quality=80, method=0)
    return buf.getvalue()
