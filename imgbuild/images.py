"""Reading image headers (Pillow, imported only when needed: it is not on the no-op path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


@dataclass(frozen=True)
class ImageInfo:
    format: str | None  # png | jpeg | webp, or None for anything else
    size: tuple[int, int]
    has_alpha: bool


def image_info(path: Path) -> ImageInfo:
    """Format, dimensions and alpha from the header only; raises ValueError if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            return ImageInfo(PIL_FORMATS.get(im.format or ""), im.size, alpha)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path.name} is not a readable image: {exc}") from exc
