"""Thumbnails for the review page: webp, made once per content digest.

A thumbnail is named by the sha256 of the image it shows (``thumbs/ab/abcdef….webp`` under the
page's folder), so it is made the first time an image is shown and never again, whichever target,
take or earlier spec shows it. A page of 1,000 targets whose thumbnails exist costs a ``stat``
each. Pillow releases the GIL while it decodes, scales and encodes, so the missing ones are made
in a few threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..fsutil import atomic_write

EDGE_PX = 320  # the longer side: a card shows images at most 320 CSS pixels wide
QUALITY = 80
THUMBS = "thumbs"
SHA256 = re.compile(r"[0-9a-f]{64}")


def rel_path(sha256: str) -> str:
    """Where the thumbnail of ``sha256`` lives, relative to the page's folder."""
    return f"{THUMBS}/{sha256[:2]}/{sha256}.webp"


def make(image: Path, dest: Path) -> bool:
    """Write the thumbnail of ``image`` to ``dest``; False if the image cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as img:
            img.draft("RGB", (EDGE_PX, EDGE_PX))  # JPEG decodes at a fraction of its size
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            small = img.convert("RGBA" if has_alpha else "RGB")
            small.thumbnail((EDGE_PX, EDGE_PX), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False
    import io

    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=QUALITY, method=2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, buffer.getvalue(), durable=False)  # a lost thumbnail is made again
    return True


def ensure(page_dir: Path, wanted: Iterable[tuple[str, Path]], *, jobs: int | None = None) -> dict[str, bool]:
    """Make the thumbnails of ``wanted`` (sha256, a file holding those bytes) that do not exist
    yet. Returns sha256 → whether its thumbnail exists now."""
    have: dict[str, bool] = {}
    todo: dict[str, Path] = {}
    folder = str(page_dir)
    for sha, source in wanted:
        if sha in have or sha in todo or not SHA256.fullmatch(sha):
            continue
        if os.path.exists(os.path.join(folder, rel_path(sha))):
            have[sha] = True
        else:
            todo[sha] = source
    if todo:
        workers = jobs or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers, thread_name_prefix="imgbuild-thumbs") as pool:
            made = pool.map(lambda item: make(item[1], page_dir / rel_path(item[0])), todo.items())
            have.update(zip(todo, made))
    return have
