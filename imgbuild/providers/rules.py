"""What each gpt-image-2 endpoint accepts (API.md), as data the manifest check uses."""

from __future__ import annotations

import re

from .base import Capabilities

# ASCII digits only (\d takes "１０２４"), at most 5 of them, and the whole string (a `$` would also
# match before a final newline).
_WXH = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


def parse_size(size: str) -> tuple[int, int] | None:
    m = _WXH.fullmatch(size)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_openai_size(size: str) -> str | None:
    if size == "auto":
        return None
    wh = parse_size(size)
    if wh is None:
        return f"{size} is not \"auto\" or WIDTHxHEIGHT"
    w, h = wh
    if w % 16 or h % 16:
        return f"{size} is not a multiple of 16"
    if max(w, h) > 3840:
        return f"{size} has an edge over 3840"
    if min(w, h) == 0 or max(w, h) / min(w, h) > 3:
        return f"{size} is wider than 3:1"
    if not 655_360 <= w * h <= 8_294_400:
        return f"{size} has {w * h:,} pixels; gpt-image-2 takes 655,360 to 8,294,400"
    return None


AIMLAPI_SIZES = ("1024x1024", "1024x1536", "1536x1024")


def check_aimlapi_size(size: str) -> str | None:
    if size in AIMLAPI_SIZES:
        return None
    return f"{size} is not one of aimlapi's sizes ({', '.join(AIMLAPI_SIZES)})"


OPENAI_CAPABILITIES = Capabilities(check_size=check_openai_size)
AIMLAPI_CAPABILITIES = Capabilities(
    check_size=check_aimlapi_size, qualities=("low", "medium", "high")
)
