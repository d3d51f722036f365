"""The tables an edit of the manifest touched, found from its bytes and the last run's: the
common prefix and suffix (block compares, at memcmp speed) bound the edit, and the recorded length
of each table says which tables it falls in. Only those are cut out again (scoped.py resolves them);
anything this cannot be sure of is a reason, and the caller takes the full path.
"""

from __future__ import annotations

import bisect
import re

MAX_TABLES = 16  # tables edited at once beyond which the full path (which validates them in bulk) runs
_SECTION = re.compile(rb"^[ \t]*\[", re.M)
_TARGET_HEADER = re.compile(rb"\[images\.([A-Za-z0-9][A-Za-z0-9_-]*)\][ \t]*(?:#.*)?")
_GLOBAL_HEADER = re.compile(rb"\[(?:provider|provider\.prices|defaults|defaults\.extra|vars)\][ \t]*(?:#.*)?")


def cut(data: bytes) -> list[tuple[int, str]] | None:
    """(start, name) of each table, name "" for a manifest-wide one; None where incremental.split
    would not cut either (a header it does not know, a duplicate table, ``[cache]``)."""
    sections: list[tuple[int, str]] = []
    seen: set[str] = set()
    for m in _SECTION.finditer(data):
        start = m.start()
        newline = data.find(b"\n", start)
        header = data[start:newline if newline >= 0 else len(data)].rstrip(b"\r").lstrip(b" \t")
        target = _TARGET_HEADER.fullmatch(header)
        if target is not None:
            name = target.group(1).decode()
            if name in seen:
                return None
            seen.add(name)
            sections.append((start, name))
        elif _GLOBAL_HEADER.fullmatch(header):
            sections.append((start, ""))
        else:
            return None
    return sections


def table_text(data: bytes, starts: list[int], names: tuple[str, ...], name: str) -> bytes:
    k = names.index(name)
    return data[starts[k]:starts[k + 1]]


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix: block compares, then a bisection in one block."""
    n = min(len(a), len(b))
    i, step = 0, 1 << 16
    while i < n:
        j = min(i + step, n)
        if a[i:j] != b[i:j]:
            break
        i = j
    else:
        return n
    lo, hi = i, min(i + step, n)  # a[:lo] == b[:lo], and they differ before hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo if a[lo] != b[lo] else hi


def _common_suffix(a: bytes, b: bytes) -> int:
    """The length of the longest common suffix, as :func:`_common_prefix` finds a prefix."""
    n = min(len(a), len(b))
    la, lb = len(a), len(b)
    i, step = 0, 1 << 16
    while i < n:
        j = min(i + step, n)
        if a[la - j:la - i] != b[lb - j:lb - i]:
            break
        i = j
    else:
        return n
    lo, hi = i, min(i + step, n)  # the last lo bytes are equal; they differ within the last hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid
    return lo if a[la - lo - 1] != b[lb - lo - 1] else hi


def changed_tables(old: bytes, new: bytes, starts: list[int], sizes: tuple[int, ...], names: tuple[str, ...]
                    ) -> tuple[dict[str, bytes], tuple[int, ...]] | str:
    """(name → its new text for each table whose text changed, the length of each table in the new
    text), or why the edit is not one this path takes. ``starts``: where each table starts in the
    old text, and its end."""
    if old == new:
        return "the same manifest"
    if b"'''" in new or b'"""' in new:
        return "a multi-line string"
    prefix = _common_prefix(old, new)
    suffix = min(_common_suffix(old, new), len(old) - prefix, len(new) - prefix)
    old_end = len(old) - suffix  # old[prefix:old_end] became new[prefix:len(new) - suffix]
    # The tables around the edit, one character wider on each side: an edit that touches a header
    # line, or the line break before one, is seen by both tables at that boundary.
    first = bisect.bisect_right(starts, max(prefix - 1, 0)) - 1
    last = min(bisect.bisect_right(starts, old_end) - 1, len(sizes) - 1)
    if first < 0 or not sizes or prefix == 0:
        return "the text before the first table"
    if last - first >= MAX_TABLES:
        return "many tables"
    if any(not names[i] for i in range(first, last + 1)):
        return "a manifest-wide table"
    delta = len(new) - len(old)
    piece = new[starts[first]:starts[last + 1] + delta]
    sections = cut(piece)
    if sections is None or [n for _, n in sections] != list(names[first:last + 1]) or (sections and sections[0][0]):
        return "tables added, removed or renamed"
    bounds = [s for s, _ in sections] + [len(piece)]
    changed: dict[str, bytes] = {}
    for k, (start, name) in enumerate(sections):
        text = piece[start:bounds[k + 1]]
        i = first + k
        before = old[starts[i]:starts[i + 1]]
        if text != before:
            changed[name] = text
    return changed, sizes[:first] + tuple(b - a for a, b in zip(bounds, bounds[1:])) + sizes[last + 1:]
