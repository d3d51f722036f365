"""What a target declares on disk, checked without the rest of the manifest: the files a target
reads (inputs exist or a target makes them, are images by their bytes, not too large; a mask fits
its first input), and the names of the outputs it writes. Both the resolver and the recipes of
derived targets use these, so they live below both."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import Problem
from .images import MAX_DECODE_PIXELS, png_pixels, sniff_format
from .providers.base import Capabilities
from .providers.rules import parse_size

FORMAT_EXTENSION = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


@dataclass(frozen=True)
class Declared:
    """What a target declares, even when it has problems: the checks across targets use it."""

    outputs: tuple[str, ...]
    images: tuple[str, ...]
    mask: str | None
    size: str


def loops(path: Path) -> bool:
    """Whether ``path`` is a symbolic link that never reaches a file (stat fails with ELOOP)."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def check_files(root: Path, declared: dict[str, Declared], caps: Capabilities, problems: list[Problem]) -> None:
    """Inputs exist (or a target makes them), are images by their bytes and not too large; masks
    fit. Every target is checked, also those with other problems, against every declared output."""
    producers = {out: name for name, d in declared.items() for out in d.outputs}
    for name, d in declared.items():
        at = f"images.{name}"
        for i, rel in enumerate(d.images):
            check_image(root, rel, f"{at}.images[{i}]", producers, problems, caps.max_image_bytes)
        if d.mask:
            check_mask(root, name, declared, producers, problems, caps.max_mask_bytes)


def check_image(root: Path, rel: str, where: str, producers: dict[str, str], problems: list[Problem],
                 max_bytes: int) -> str | None:
    if rel in producers:
        return None
    path = root / rel
    try:
        with path.open("rb") as f:
            head = f.read(24)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        problems.append(Problem(where, f"{rel} does not exist and no target makes it"))
        return None
    except OSError as exc:
        problems.append(Problem(where, f"{rel} cannot be read: {exc.strerror}"))
        return None
    fmt = sniff_format(head)
    if fmt is None:
        problems.append(Problem(where, f"{rel} is not a PNG, JPEG or WEBP image (by its bytes)"))
    elif size > max_bytes:
        problems.append(Problem(where, f"{rel} is {size / 2**20:.1f} MB; the API takes at most {max_bytes // 2**20} MB"))
    elif (pixels := png_pixels(head) or 0) > MAX_DECODE_PIXELS:
        problems.append(Problem(where, f"{rel} declares {pixels:,} pixels, more than can be decoded safely "
                                       f"({MAX_DECODE_PIXELS:,} at most)"))
        return None
    return fmt


def check_mask(root: Path, name: str, declared: dict[str, Declared], producers: dict[str, str],
                problems: list[Problem], max_bytes: int) -> None:
    where = f"images.{name}.mask"
    d = declared[name]
    rel = d.mask or ""
    fmt = check_image(root, rel, where, producers, problems, max_bytes)
    if rel in producers or fmt is None:
        return
    if fmt != "png":
        problems.append(Problem(where, f"{rel} is {fmt}; a mask must be a PNG with an alpha channel"))
        return
    from .images import ImageTooLarge, image_info

    try:
        info = image_info(root / rel)
    except ImageTooLarge as exc:
        problems.append(Problem(where, f"{rel}: {exc}"))
        return
    except ValueError:
        problems.append(Problem(where, f"{rel} is not a readable PNG (truncated or corrupt?)"))
        return
    if not info.has_alpha:
        problems.append(Problem(where, f"{rel} has no alpha channel (transparent pixels mark where to edit)"))
    if not d.images:
        return
    first = d.images[0]
    wh: tuple[int, int] | None = None
    if first in producers:
        wh = parse_size(declared[producers[first]].size)
    elif (root / first).exists():
        try:
            wh = image_info(root / first).size
        except ImageTooLarge as exc:
            if not any(p.where == f"images.{name}.images[0]" for p in problems):  # said once
                problems.append(Problem(f"images.{name}.images[0]", f"{first}: {exc}"))
        except ValueError:
            problems.append(Problem(f"images.{name}.images[0]", f"{first} is not a readable image (truncated or corrupt?)"))
    if wh and wh != info.size:
        problems.append(Problem(
            where, f"{rel} is {info.size[0]}x{info.size[1]} but the first input {first} is {wh[0]}x{wh[1]}"
        ))
