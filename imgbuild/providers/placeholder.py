"""The offline provider: renders a deterministic stand-in image for layout work, demos and tests.

Same request ⇒ same bytes. It honours size, format, compression, transparency and n, shows the
target's name and prompt, and for edits visibly composes the input images (the first as the
backdrop, with the mask's editable area tinted; the others as inset thumbnails).
``IMGBUILD_PLACEHOLDER_DELAY`` (seconds) makes each render wait, to rehearse slow builds.
"""

from __future__ import annotations

import hashlib
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from .base import ImageRequest, ImageResult, ProviderSettings

AUTO_SIZE = (1024, 1024)


class PlaceholderProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.delay_s = float(os.environ.get("IMGBUILD_PLACEHOLDER_DELAY", "0") or 0)

    async def generate(self, request: ImageRequest, folder: Path) -> ImageResult:
        import asyncio

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        files = await asyncio.to_thread(self._render_all, request, folder)
        return ImageResult(files=files, cost_usd=0.0, requests=1)

    def generate_now(self, request: ImageRequest, folder: Path) -> ImageResult:
        """:meth:`generate` in this thread, for a build without an event loop (sequential.py)."""
        if self.delay_s:
            time.sleep(self.delay_s)
        return ImageResult(files=self._render_all(request, folder), cost_usd=0.0, requests=1)

    async def aclose(self) -> None:
        return None

    def _render_all(self, request: ImageRequest, folder: Path) -> list[Path]:
        files = []
        for i in range(request.n):
            path = folder / f"{request.target}-{i + 1}.{request.output_format}"
            render(request, i, path)
            files.append(path)
        return files


def load_renderer() -> None:
    """Load what :func:`render` draws with, ahead of the first render (the scoped path does it
    while other work is under way)."""
    from PIL import Image, ImageDraw  # noqa: F401


def _palette(seed: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    h = hashlib.sha256(seed).digest()
    bg = (80 + h[0] % 120, 80 + h[1] % 120, 80 + h[2] % 120)
    ink = (255, 255, 255) if sum(bg) < 420 else (20, 20, 20)
    return bg, ink


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font, fixed size
        return ImageFont.load_default()


def render(request: ImageRequest, index: int, path: Path) -> None:
    from PIL import Image, ImageDraw

    if request.size == "auto":
        width, height = AUTO_SIZE
    else:
        w, _, h = request.size.partition("x")
        width, height = int(w), int(h)
    seed = f"{request.target}\0{request.prompt}\0{request.size}\0{index}".encode()
    bg, ink = _palette(seed)
    transparent = request.background == "transparent" and request.output_format in ("png", "webp")

    # Opaque and drawn from nothing: RGB from the start (the same pixels as RGBA converted after).
    mode = "RGBA" if transparent or request.images else "RGB"
    canvas = Image.new(mode, (width, height), (0, 0, 0, 0) if transparent else (*bg, 255)[:len(mode)])
    if request.images:
        _compose_inputs(canvas, request)
    margin = max(8, width // 32)
    card = (margin, margin, width - margin, height - margin)
    if request.images:
        # A translucent band keeps the text readable over the composed inputs.
        band = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        ImageDraw.Draw(band).rectangle((margin, margin, width - margin, margin + height // 4), fill=(*bg, 215))
        canvas.alpha_composite(band)
    draw = ImageDraw.Draw(canvas)
    if transparent and not request.images:
        # A shape on a clear background, like a sprite: what transparency looks like in a layout.
        draw.rounded_rectangle(card, radius=margin * 2, fill=(*bg, 255))
    draw.rectangle(card, outline=(*ink, 255), width=max(2, width // 256))
    title = _font(max(12, width // 18))
    body = _font(max(10, width // 40))
    label = request.target if request.n == 1 else f"{request.target} ({index + 1}/{request.n})"
    x, y = margin * 2, margin * 2
    draw.text((x, y), label, font=title, fill=(*ink, 255))
    y += int(title.size * 1.4) if hasattr(title, "size") else 24
    chars = max(20, int((width - 4 * margin) / (getattr(body, "size", 10) * 0.55)))
    lines = textwrap.wrap(request.prompt, chars)
    line_h = int(getattr(body, "size", 10) * 1.3)
    max_lines = max(1, (height - y - 3 * margin) // line_h)
    for line in lines[:max_lines]:
        draw.text((x, y), line, font=body, fill=(*ink, 255))
        y += line_h
    tag = f"placeholder · {request.quality} · {request.size}"
    draw.text((x, height - margin * 2 - line_h), tag, font=body, fill=(*ink, 255))

    _save(canvas if transparent or mode == "RGB" else canvas.convert("RGB"), path, request)


def _compose_inputs(canvas: Any, request: ImageRequest) -> None:
    from PIL import Image, ImageOps

    width, height = canvas.size
    with Image.open(request.images[0]) as first:
        backdrop = ImageOps.fit(first.convert("RGBA"), (width, height))
    if request.mask is not None:
        with Image.open(request.mask) as mask:
            alpha = mask.convert("RGBA").getchannel("A").resize((width, height))
        # Transparent mask pixels mark the area to edit: tint it so the edit is visible.
        editable = alpha.point(lambda a: 160 if a < 128 else 0)
        tint = Image.new("RGBA", (width, height), (255, 0, 160, 255))
        backdrop.paste(tint, (0, 0), editable)
    canvas.alpha_composite(backdrop)
    thumbs = request.images[1:]
    if thumbs:
        size = max(32, min(width, height) // 4)
        gap = size // 8
        x = width - gap - size
        for p in thumbs[:6]:
            with Image.open(p) as im:
                thumb = ImageOps.contain(im.convert("RGBA"), (size, size))
            canvas.alpha_composite(thumb, (x, height - gap - thumb.size[1]))
            x -= size + gap


def _save(image: Any, path: Path, request: ImageRequest) -> None:
    # Pillow picks the writer by the file's extension: naming the format instead loads five
    # format plugins first (~20 ms of a one-image build).
    quality = request.output_compression if request.output_compression is not None else 100
    if request.output_format == "png":
        _write_png(image, path)
    elif request.output_format == "jpeg":
        image.save(path, quality=max(1, quality))
    else:
        image.save(path, quality=quality, method=0)


def _write_png(image: Any, path: Path) -> None:
    """An 8-bit RGB or RGBA PNG with every row unfiltered. Pillow's writer tries five filters on
    each row, which is most of a placeholder's render (~25 ms at 1024x640); flat colour and text
    compress as well without (a few per cent either way)."""
    import struct
    import zlib

    width, height = image.size
    stride = width * len(image.mode)
    pixels = memoryview(image.tobytes())
    rows = bytearray((stride + 1) * height)  # each row: its filter type, 0 (none), then its pixels
    for y in range(height):
        rows[y * (stride + 1) + 1:(y + 1) * (stride + 1)] = pixels[y * stride:(y + 1) * stride]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, {"RGB": 2, "RGBA": 6}[image.mode], 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 1))
                + chunk(b"IEND", b""))
