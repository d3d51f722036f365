"""Writing the API's image bytes to staging files, and checking them cheaply.

The bytes are written exactly as the API sent them (they were paid for, and their digest is what
the cache and the lock record). The checks read only what they need: the magic bytes for the
format, Pillow's lazy header parse for the dimensions, and the file's tail for truncation; no
pixel is decoded, so checking costs next to nothing beside a 2048x2048 download.
"""

from __future__ import annotations

import binascii
import os
from pathlib import Path

from ..errors import ProviderError
from ..images import sniff_format

class WrongImage(ProviderError):
    """A whole, paid-for image that is not what was asked: kept, and the target fails."""


class BrokenImage(ProviderError):
    """An image that came whole in a whole answer and still cannot be used: bytes that are not an
    image, an image cut short by the server, or one over the pixel limit (a decompression bomb).
    Final: it was paid for, and asking again would pay again for what may come back the same."""


# 4x the largest image gpt-image-2 makes (3840x2160): more is a decompression bomb, not a picture.
MAX_IMAGE_PIXELS = 4 * 8_294_400


EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024


def new_staging_file(folder: Path, target: str, output_format: str) -> Path:
    """A fresh, exclusively created file in the staging folder (never overwrites another's)."""
    suffix = EXTENSIONS.get(output_format, ".bin")
    for _ in range(100):
        path = folder / f"{target}-{os.urandom(6).hex()}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"cannot create a staging file in {folder}")  # pragma: no cover


def write_b64(path: Path, encoded: str | memoryview, target: str) -> int:
    """Decode ``encoded`` into ``path``; bad base64 in a whole answer is a BrokenImage."""
    try:
        # binascii takes an ASCII str without copying it; strict mode refuses stray characters
        # that a lenient decode would silently drop (and so turn into a corrupt image).
        data = binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        try:
            text = encoded if isinstance(encoded, str) else bytes(encoded).decode("ascii")
            data = binascii.a2b_base64("".join(text.split()), strict_mode=True)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise BrokenImage(f"the API sent an image that is not valid base64 ({exc}); not asked "
                              "again (it was paid for)", target=target) from exc
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def check_image(path: Path, *, output_format: str, size: str, target: str) -> str | None:
    """Raise BrokenImage for bytes that are not an image, a cut image or one over
    MAX_IMAGE_PIXELS, and WrongImage for a whole image of another format (neither is retried: the
    answer came whole, and asking again pays again); return a warning when the image is fine but
    not of the requested dimensions (it was paid for: keep it)."""
    with open(path, "rb") as f:
        head = f.read(64)
        length = f.seek(0, os.SEEK_END)
        f.seek(max(0, length - _TAIL_BYTES))
        tail = f.read()
    found = sniff_format(head)
    if found is None:
        raise BrokenImage(f"the API sent {length} bytes that are not a PNG, JPEG or WEBP image; not "
                          "asked again (it was paid for)", target=target)
    if not _complete(found, head, tail, length):
        raise BrokenImage(f"the API sent a truncated {found} image ({length} bytes) in a whole answer; "
                          "not asked again (it was paid for)", target=target)
    if found != output_format:
        raise WrongImage(f"asked for {output_format}, the API sent {found} (kept in the cache)", target=target)
    width, height = _dimensions(path, target)
    if width * height > MAX_IMAGE_PIXELS:
        raise BrokenImage(f"the API sent a {width}x{height} image, over the {MAX_IMAGE_PIXELS:,} pixel "
                          "limit (a decompression bomb?); not asked again (it was paid for)", target=target)
    if size != "auto" and f"{width}x{height}" != size:
        return (f"asked for {size}, the API returned {width}x{height}; kept as it is "
                "(it was paid for) and recorded at its true size")
    return None


def _complete(fmt: str, head: bytes, tail: bytes, length: int) -> bool:
    if fmt == "png":
        return tail.endswith(_PNG_IEND)
    if fmt == "jpeg":
        # FF D9 cannot occur inside entropy-coded data, so finding it near the end means the
        # scan ended; some encoders pad a few bytes after it.
        return _JPEG_EOI in tail[-64:]
    riff_size = int.from_bytes(head[4:8], "little") + 8
    return riff_size <= length <= riff_size + 1


def _dimensions(path: Path, target: str) -> tuple[int, int]:
    import warnings

    from PIL import Image  # imported here: a no-op build never needs Pillow

    try:
        with warnings.catch_warnings():
            # Pillow warns, then refuses, past its own limits; ours (MAX_IMAGE_PIXELS) is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # parses the header only
                return im.size
    except Image.DecompressionBombError as exc:
        raise BrokenImage(f"the API sent an image over the {MAX_IMAGE_PIXELS:,} pixel limit (a "
                          "decompression bomb?); not asked again (it was paid for)", target=target) from exc
    except Exception as exc:  # Pillow raises a zoo of types for broken headers
        raise BrokenImage(f"the API sent an image that cannot be decoded ({exc}); not asked again "
                          "(it was paid for)", target=target) from exc
