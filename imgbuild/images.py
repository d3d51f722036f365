"""Reading image headers: magic bytes here, Pillow (imported only when needed: it is not on the
no-op path) for sizes and alpha."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sniff_format(head: bytes) -> str | None:
    """png, jpeg or webp by a file's first 12 bytes, else None."""
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# Twice Pillow's warning limit: past it Pillow refuses to open an image (DecompressionBombError).
MAX_DECODE_PIXELS = 2 * 89_478_485


def png_pixels(head: bytes) -> int | None:
    """Width times height from a PNG's first 24 bytes (its IHDR), without Pillow; else None."""
    if len(head) < 24 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")


@dataclass(frozen=True)
class ImageInfo:
    format: str | None  # png | jpeg | webp, or None for anything else
    size: tuple[int, int]
    has_alpha: bool


def image_info(path: Path) -> ImageInfo:
    """Format, dimensions and alpha from the header only; raises ValueError if not an image."""
    try:
        with open(path, "rb") as f:
            plain = _plain_png(f.read(41))
    except OSError:
        plain = None
    return plain if plain is not None else pillow_info(path)


def pillow_info(path: Path) -> ImageInfo:
    """:func:`image_info` as Pillow reads the header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            return ImageInfo(PIL_FORMATS.get(im.format or ""), im.size, alpha)
    except Image.DecompressionBombError as exc:
        # Pillow refuses to open it: a few KB that would decode to gigabytes.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageTooLarge(f"{path.name} declares {count}, more than can be decoded safely "
                            f"({2 * (Image.MAX_IMAGE_PIXELS or 0):,} at most)") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path.name} is not a readable image: {exc}") from exc


def _plain_png(head: bytes) -> ImageInfo | None:
    """What Pillow says of the plainest PNG — 8-bit RGB or RGBA, its IHDR intact and its pixels
    right after it (as the placeholder writes them) — read from its first 41 bytes, without
    loading Pillow's PNG plugin (~12 ms). None for any other file: Pillow reads those."""
    import zlib

    if len(head) < 41 or not head.startswith(PNG_MAGIC) or head[8:16] != b"\0\0\0\x0dIHDR":
        return None
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, color, compression, filtering, interlace = head[24:29]
    if (zlib.crc32(head[12:29]) != int.from_bytes(head[29:33], "big") or head[37:41] != b"IDAT"
            or (depth, color, compression, filtering) not in ((8, 2, 0, 0), (8, 6, 0, 0)) or interlace > 1
            or not 0 < width * height <= MAX_DECODE_PIXELS // 2):
        return None
    return ImageInfo("png", (width, height), color == 6)


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than Pillow will decode (a decompression bomb)."""
