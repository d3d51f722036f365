"""Keeping what a request paid for, and sending exactly what its spec says.

Every image the API returned goes into the cache first. When the cache cannot take it (read-only,
full), the image still goes somewhere the user can see: to its output (recorded in the lock, so the
next build pays nothing), else to a rescue folder in the project, ``.imgbuild/rescue/<target>/``.

A request sends copies of its inputs made once, in its staging folder, and hashed there: an input
saved again while its edit uploads changes neither what is sent nor what the lock records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from .cache import CacheStore, OutputInfo, Staging, file_sha256
from .fsutil import atomic_copy
from .providers.base import ImageRequest
from .spec import Spec

RESCUE_DIR = "rescue"  # under .imgbuild/
# Room a staging folder needs per image asked for: far above a 2048x2048 PNG, and a cache with
# less free than that is full for our purposes (its images would be lost mid-write).
ROOM_PER_IMAGE_BYTES = 32 * 1024 * 1024


def staging_for(cache: CacheStore, request: ImageRequest, project_tmp: Path) -> Staging:
    """A staging place in the cache (renames into it are free), or in the project when the cache
    has no room or cannot be written: the answer must land somewhere before it is stored."""
    inputs = sum(p.stat().st_size for p in (*request.images, *([request.mask] if request.mask else [])))
    return cache.stage(need_bytes=request.n * ROOM_PER_IMAGE_BYTES + inputs, fallback=project_tmp)


def store(cache: CacheStore, files: Iterable[Path]) -> tuple[list[OutputInfo], dict[str, Path], OSError | None]:
    """Put each file into the cache. A file the cache cannot take is described and left where it
    is: returns (every file's info, sha256 → file for those not stored, the first error)."""
    infos: list[OutputInfo] = []
    staged: dict[str, Path] = {}
    error: OSError | None = None
    for f in files:
        try:
            infos.append(cache.put_file(f))
        except OSError as exc:
            info = cache.describe(f)
            infos.append(info)
            staged[info.sha256] = f
            error = error or exc
    return infos, staged, error


def rescue(state_dir: Path, name: str, files: Iterable[Path]) -> Path | None:
    """Copy ``files`` to ``.imgbuild/rescue/<name>/``; the folder, or None when that fails too."""
    folder = state_dir / RESCUE_DIR / name
    try:
        for f in files:
            atomic_copy(f, folder / f.name)
    except OSError:
        return None
    return folder


class InputChanged(ValueError):
    """An input is no longer the bytes its spec was computed from: nothing was sent."""


def snapshot_inputs(request: ImageRequest, spec: Spec, staging: Path) -> ImageRequest:
    """The request with its inputs replaced by copies in ``staging``, each checked against the
    digest the spec recorded for it (so the lock says what was sent)."""
    if not request.is_edit:
        return request
    expected = [i for i in spec.inputs if i.role == "image"] + [i for i in spec.inputs if i.role == "mask"]
    sources = [*request.images, *([request.mask] if request.mask else [])]
    copies: list[Path] = []
    for i, (source, ref) in enumerate(zip(sources, expected, strict=True)):
        copy = staging / "inputs" / str(i) / source.name  # the name is sent as the part's file name
        copy.parent.mkdir(parents=True)
        import shutil

        shutil.copyfile(source, copy)
        if file_sha256(copy) != ref.sha256:
            raise InputChanged(f"{ref.path} changed while its request was being prepared; nothing was sent: "
                               "build again")
        copies.append(copy)
    mask = copies.pop() if request.mask else None
    return dataclasses.replace(request, images=tuple(copies), mask=mask)
