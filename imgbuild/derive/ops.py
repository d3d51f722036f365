"""The operations of a ``from`` target, with Pillow, in their fixed order: crop, trim + padding,
resize (fit as sharp defines it, Lanczos), matte, then the output format. Runs in a worker process.

Deterministic: the same input bytes and recipe give the same output bytes for one Pillow version
(no metadata, no timestamps, fixed encoder settings). Pillow resizes RGBA premultiplied, so
transparent pixels lend no colour to their neighbours.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..images import MAX_DECODE_PIXELS
from . import DeriveError

Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS
LANCZOS = Image.Resampling.LANCZOS


def open_image(data: bytes, label: str) -> Image.Image:
    """The decoded image: RGBA when it has any transparency, else RGB."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DeriveError(f"{label} cannot be decoded as an image: {exc}") from None
    alpha = "A" in img.getbands() or "transparency" in img.info
    return img.convert("RGBA" if alpha else "RGB")


def apply(img: Image.Image, params: Mapping[str, Any], label: str) -> Image.Image:
    """The recipe's operations on ``img`` (read from ``label``), in the fixed order."""
    if "crop" in params:
        img = crop(img, [int(v) for v in str(params["crop"]).split(",")], label)
    if params.get("trim"):
        img = trim(img, int(params.get("padding", 0)), label)
    if "resize" in params:
        transparent = params["output_format"] != "jpeg"
        img = resize(img, str(params["resize"]), str(params.get("fit", "cover")), transparent,
                     str(params.get("matte", "#ffffff")))
    return img


def crop(img: Image.Image, box: list[int], label: str) -> Image.Image:
    x, y, w, h = box
    if x + w > img.width or y + h > img.height:
        raise DeriveError(f"crop [{x}, {y}, {w}, {h}] reaches outside {label}, which is {img.width}x{img.height}")
    return img.crop((x, y, x + w, y + h))


def trim(img: Image.Image, padding: int, label: str) -> Image.Image:
    """To the bounding box of the pixels whose alpha is not 0, then ``padding`` transparent pixels
    on every side. An image without alpha has no transparent pixel: trim keeps all of it."""
    img = img.convert("RGBA")
    box = img.getchannel("A").getbbox()
    if box is None:
        raise DeriveError(f"trim: every pixel of {label} ({img.width}x{img.height}) is transparent; "
                          "nothing would be left")
    img = img.crop(box)
    if padding:
        canvas = Image.new("RGBA", (img.width + 2 * padding, img.height + 2 * padding), (0, 0, 0, 0))
        canvas.paste(img, (padding, padding))
        img = canvas
    return img


def _round(value: float) -> int:
    """To the nearest pixel, halves up (not Python's to-even), and never below 1."""
    return max(1, math.floor(value + 0.5))


def target_size(width: int, height: int, resize: str, fit: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the size the image is scaled to, the size of the output) for an input of width x height."""
    w_text, _, h_text = resize.partition("x")
    want_w, want_h = (int(w_text) if w_text else None), (int(h_text) if h_text else None)
    if want_w is None or want_h is None:  # one edge: the aspect ratio is kept
        size = (want_w, _round(height * want_w / width)) if want_w else (_round(width * want_h / height), want_h)  # type: ignore[operator]
        return size, size  # type: ignore[return-value]
    if fit == "fill":
        return (want_w, want_h), (want_w, want_h)
    if fit == "cover":
        return (want_w, want_h), (want_w, want_h)
    scale = min(want_w / width, want_h / height)
    scaled = (min(want_w, _round(width * scale)), min(want_h, _round(height * scale)))
    return scaled, (scaled if fit == "inside" else (want_w, want_h))


def resize(img: Image.Image, resize_to: str, fit: str, transparent: bool, matte: str) -> Image.Image:
    scaled, out = target_size(img.width, img.height, resize_to, fit)
    if fit == "cover" and "x" in resize_to and all(resize_to.split("x")):
        # Scale the centred part of the source with the output's aspect ratio: one resample, no
        # overscaled intermediate to crop.
        want = out[0] / out[1]
        if img.width / img.height > want:
            w = img.height * want
            box = ((img.width - w) / 2, 0.0, (img.width + w) / 2, float(img.height))
        else:
            h = img.width / want
            box = (0.0, (img.height - h) / 2, float(img.width), (img.height + h) / 2)
        return img.resize(out, LANCZOS, box=box)
    img = img.resize(scaled, LANCZOS)
    if out == scaled:
        return img
    # contain: centred on a canvas of the full size, transparent where the output can be.
    if transparent:
        canvas = Image.new("RGBA", out, (0, 0, 0, 0))
    else:
        canvas = Image.new(img.mode, out, _rgb(matte) + ((255,) if img.mode == "RGBA" else ()))
    canvas.paste(img, ((out[0] - scaled[0]) // 2, (out[1] - scaled[1]) // 2))
    return canvas


def _rgb(matte: str) -> tuple[int, int, int]:
    return int(matte[1:3], 16), int(matte[3:5], 16), int(matte[5:7], 16)


def encode(img: Image.Image, params: Mapping[str, Any]) -> bytes:
    """The image in the output format, without metadata, with fixed encoder settings."""
    fmt = params["output_format"]
    if fmt == "jpeg" and img.mode != "RGB":
        flat = Image.new("RGB", img.size, _rgb(str(params.get("matte", "#ffffff"))))
        flat.paste(img, mask=img.getchannel("A"))
        img = flat
    img.info = {}  # no ICC profile, EXIF, text chunks or dpi carried over from the input
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=6)
    elif fmt == "jpeg":
        img.save(buf, "JPEG", quality=int(params.get("output_compression", 100)), optimize=False,
                 progressive=False)
    else:
        img.save(buf, "WEBP", quality=int(params.get("output_compression", 100)),
                 lossless=bool(params.get("lossless", False)), method=4, exact=False)
    return buf.getvalue()


def derive_one(data: bytes, params: Mapping[str, Any], label: str) -> bytes:
    """The bytes of a ``from`` target made from ``data`` (the bytes of ``label``)."""
    return encode(apply(open_image(data, label), params, label), params)
