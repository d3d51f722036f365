"""A sprite sheet: frames packed row by row into one RGBA PNG, and its atlas in the JSON-hash layout
Phaser (``this.load.atlas``) and PixiJS (``Assets.load``) read. Runs in a worker process.

Frames go in as they are (trimming is a ``from`` target's ``trim``): each frame's rectangle holds
exactly its image's pixels, alpha included, so ``trimmed`` is false and ``spriteSourceSize`` is the
whole frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from .ops import encode


def layout(sizes: Sequence[tuple[int, int]], columns: int, padding: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Where each frame goes (its top left corner), and the sheet's size. Row by row, ``columns``
    frames a row, each row as tall as its tallest frame, ``padding`` pixels between frames."""
    places: list[tuple[int, int]] = []
    width = height = 0
    for start in range(0, len(sizes), columns):
        row = sizes[start:start + columns]
        x = 0
        for w, _ in row:
            places.append((x, height))
            x += w + padding
        width = max(width, x - padding)
        height += max(h for _, h in row) + padding
    return places, (max(width, 1), max(height - padding, 1))


def pack(frames: Sequence[Image.Image], names: Sequence[str], params: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(the sheet's PNG bytes, the atlas's JSON bytes)."""
    padding = int(params.get("padding", 0))
    places, (width, height) = layout([f.size for f in frames], int(params["columns"]), padding)
    sheet = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    atlas: dict[str, Any] = {}
    for frame, name, (x, y) in zip(frames, names, places):
        sheet.paste(frame.convert("RGBA"), (x, y))  # no mask: the frame's pixels as they are
        w, h = frame.size
        atlas[name] = {
            "frame": {"x": x, "y": y, "w": w, "h": h},
            "rotated": False,
            "trimmed": False,
            "spriteSourceSize": {"x": 0, "y": 0, "w": w, "h": h},
            "sourceSize": {"w": w, "h": h},
        }
    meta = {"app": "imgbuild", "image": params.get("image", ""), "format": "RGBA8888",
            "size": {"w": width, "h": height}, "scale": "1"}
    text = json.dumps({"frames": atlas, "meta": meta}, indent=2, ensure_ascii=False) + "\n"
    return encode(sheet, {"output_format": "png"}), text.encode()
