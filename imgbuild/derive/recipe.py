"""A ``from`` or ``sheet`` table → a derived :class:`Target`, with every problem the manifest alone
shows, located (``images.hero-640.resize: "0x": …``). What only the image can show (a crop outside
it, a fully transparent trim) is the build's to say: :mod:`.ops`.

The recipe is kept in the target's params, scalars only (the lock's params are scalars): the
ordered operations are fixed by the issue (crop, trim + padding, resize + fit, matte, format), so a
table of them says everything; a sheet's frame names are there too, since they are in its atlas.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..tablecheck import DEFAULT_COMPRESSION
from ..target import Target

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Protocol

    from ..errors import Problem
    from ..inputfiles import Declared

    class _PathRules(Protocol):
        def reserved(self, rel: str, lock_name: str) -> str | None: ...

    class _TargetResolver(Protocol):
        """What a recipe uses of the manifest's resolver (resolve.py's, which calls the recipes:
        named here, not imported, so that neither module imports the other)."""

        @property
        def root(self) -> Path: ...
        @property
        def problems(self) -> list[Problem]: ...
        @property
        def defaults(self) -> dict[str, Any]: ...
        @property
        def declared(self) -> dict[str, Declared]: ...
        @property
        def out_dir(self) -> str: ...
        @property
        def lock_name(self) -> str: ...
        @property
        def paths(self) -> _PathRules: ...
        def problem(self, where: str, message: str) -> None: ...
        def path(self, where: str, value: str) -> str | None: ...
        def _format(self, at: str, merged: dict[str, Any], table: Any) -> str: ...

MAX_EDGE = 16384  # what a resize or crop may ask for: past it a typo, not an image
FITS = ("cover", "contain", "fill", "inside")
DEFAULT_MATTE = "#ffffff"
# A derived target is made locally: what only a request means is a mistake on it.
REQUEST_FIELDS = ("size", "quality", "background", "moderation", "n", "images", "mask", "revision", "extra",
                  "candidates")
FROM_FIELDS = ("crop", "trim", "resize", "fit", "matte")
SHEET_FIELDS = ("columns", "atlas")
_RESIZE = re.compile(r"^(\d*)x(\d*)$")
_GLOB_CHARS = re.compile(r"[*?\[]")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # what a glob finds: not another sheet's atlas


def is_derived(table: Any) -> bool:
    return getattr(table, "from_", None) is not None or getattr(table, "sheet", None) is not None


def operations_on_request(resolver: _TargetResolver, at: str, table: Any) -> None:
    """Derived operations on a request target: it has no image to apply them to."""
    for key in (*FROM_FIELDS, *SHEET_FIELDS, "padding", "lossless"):
        if getattr(table, key, None) is not None:
            resolver.problem(f"{at}.{key}", f"{key} is an operation of a derived target (from or sheet); "
                                            "this target is a request (prompt): remove it, or derive a target from it")


def parse_resize(value: str) -> tuple[int | None, int | None] | str:
    """(width, height), one of them None when only the other edge is given; or why not."""
    m = _RESIZE.fullmatch(value)
    if m is None or not (m.group(1) or m.group(2)):
        return f'{value!r}: resize is "WxH", "Wx" or "xH" (pixels)'
    w, h = (int(g) if g else None for g in m.groups())
    if w == 0 or h == 0:
        return f"{value!r}: an edge of 0 pixels makes no image"
    if max(w or 0, h or 0) > MAX_EDGE:
        return f"{value!r}: at most {MAX_EDGE} pixels an edge"
    return w, h


def resolve_derived(resolver: _TargetResolver, name: str, table: Any, dropped: set[str]) -> Target | None:
    """The derived target of ``table``, or None when it has a problem (reported)."""
    at = f"images.{name}"
    before = len(resolver.problems)
    kind = "sheet" if table.sheet is not None else "from"
    if table.sheet is not None and table.from_ is not None:
        resolver.problem(at, "give one of from (one image) and sheet (several), not both")
    for key in ("prompt", "prompt_file"):
        if getattr(table, key) is not None:
            resolver.problem(f"{at}.{key}", f"a target with {kind} is made from images, not a prompt: "
                                            f"remove {key}, or make the prompt a target of its own")
    for key in REQUEST_FIELDS:
        if getattr(table, key) is not None:
            resolver.problem(f"{at}.{key}", f"{key} is a request field; this target is derived ({kind}), made "
                                            "locally: remove it")
    for key in (SHEET_FIELDS if kind == "from" else FROM_FIELDS):
        if getattr(table, key) is not None:
            what = "for a sheet (sheet = [...])" if kind == "from" else \
                "for a from target: a sheet packs its frames as they are"
            resolver.problem(f"{at}.{key}", f"{key} is {what}")

    given = {k: v for k, v in (("output_format", table.output_format),
                               ("output_compression", table.output_compression)) if v is not None}
    inherited: dict[str, Any] = {k: resolver.defaults[k] for k in ("output_format", "output_compression")
                 if k in resolver.defaults and kind == "from"}
    merged: dict[str, Any] = {**inherited, **given}
    fmt = resolver._format(at, merged, table)
    params: dict[str, Any] = {"derive": kind}
    if kind == "from":
        sources = _from_source(resolver, at, table)
        _from_operations(resolver, at, table, fmt, params)
    else:
        sources = ()
        if fmt != "png":
            resolver.problem(f"{at}.output" if table.output else f"{at}.output_format",
                             f"a sheet is a PNG, not {fmt}")
        if table.padding is not None:
            params["padding"] = table.padding
        if table.columns is not None:
            params["columns"] = table.columns
        if not table.sheet:
            resolver.problem(f"{at}.sheet", "sheet = [] packs nothing: name the images (or a glob) to pack")
    params["output_format"] = fmt
    if fmt in ("jpeg", "webp"):
        params["output_compression"] = merged.get("output_compression", DEFAULT_COMPRESSION)
    elif "output_compression" in given:
        resolver.problem(f"{at}.output_compression", f"only for jpeg and webp, not {fmt}")
    if table.lossless is not None:
        if fmt != "webp":
            resolver.problem(f"{at}.lossless", f"only for webp, not {fmt}")
        elif table.lossless:
            params["lossless"] = True

    output = _output(resolver, at, name, table.output, fmt)
    outputs: tuple[str, ...] = ()
    if output is not None:
        outputs = (output,)
        if kind == "sheet":
            atlas = _output(resolver, f"{at}.atlas", name, table.atlas, None) if table.atlas is not None \
                else os.path.splitext(output)[0] + ".json"
            if atlas is not None and not atlas.endswith(".json"):
                resolver.problem(f"{at}.atlas", f"{atlas}: an atlas is JSON; give it the extension .json")
            if atlas is not None:
                outputs = (output, atlas)
                params["image"] = os.path.relpath(output, os.path.dirname(atlas) or ".").replace(os.sep, "/")

    from ..inputfiles import Declared

    # Its sources are checked by check_sources, placed at from/sheet, not as an edit's images.
    resolver.declared[name] = Declared(outputs, (), None, "auto")
    if len(resolver.problems) > before or dropped or output is None:
        return None
    if kind == "sheet":  # the globs are matched once every target's outputs are known: expand_sheets
        params["sheet"] = json.dumps(table.sheet)
    return Target(name=name, prompt="", params=params, outputs=outputs, images=sources,
                  pinned=bool(table.pinned))


def _from_source(resolver: _TargetResolver, at: str, table: Any) -> tuple[str, ...]:
    if _GLOB_CHARS.search(table.from_):
        resolver.problem(f"{at}.from", f"{table.from_}: from names one image; a glob belongs in sheet = [...]")
        return ()
    rel = resolver.path(f"{at}.from", table.from_)
    return (rel,) if rel else ()


def _from_operations(resolver: _TargetResolver, at: str, table: Any, fmt: str, params: dict[str, Any]) -> None:
    if table.crop is not None:
        crop = table.crop
        if len(crop) != 4:
            resolver.problem(f"{at}.crop", f"{crop}: crop is [x, y, w, h], four numbers of pixels")
        elif crop[0] < 0 or crop[1] < 0:
            resolver.problem(f"{at}.crop", f"{crop}: x and y start at 0 (the top left corner)")
        elif crop[2] <= 0 or crop[3] <= 0:
            resolver.problem(f"{at}.crop", f"{crop}: a width or height of {min(crop[2], crop[3])} crops nothing")
        elif max(crop) > MAX_EDGE * 4:
            resolver.problem(f"{at}.crop", f"{crop}: larger than any image imgbuild reads")
        else:
            params["crop"] = ",".join(str(v) for v in crop)
    if table.trim:
        params["trim"] = True
        params["padding"] = table.padding or 0
    elif table.padding is not None:
        resolver.problem(f"{at}.padding", "padding goes around a trimmed image: add trim = true, or remove it")
    if table.resize is not None:
        parsed = parse_resize(table.resize)
        if isinstance(parsed, str):
            resolver.problem(f"{at}.resize", parsed)
        else:
            params["resize"] = table.resize
            if parsed[0] and parsed[1]:
                params["fit"] = table.fit or "cover"
            elif table.fit is not None:
                resolver.problem(f"{at}.fit", f"with one edge ({table.resize}) the aspect ratio is kept; "
                                              "fit needs both: WxH")
    elif table.fit is not None:
        resolver.problem(f"{at}.fit", "fit says how resize fits; there is no resize")
    if fmt == "jpeg":
        params["matte"] = (table.matte or DEFAULT_MATTE).lower()
    elif table.matte is not None:
        resolver.problem(f"{at}.matte", f"{fmt} keeps transparency (and contain pads it transparent): matte "
                                        "is for jpeg output; remove it")


def _output(resolver: _TargetResolver, where: str, name: str, value: str | None, fmt: str | None) -> str | None:
    """An output path as requests have them: confined, not git's or ours, not a folder."""
    from ..inputfiles import FORMAT_EXTENSION, loops

    if value is None:
        value = f"{resolver.out_dir}/{name}{FORMAT_EXTENSION.get(fmt or 'png', '.png')}"
        field = where
    else:
        field = where if where.endswith(".atlas") else f"{where}.output"
    rel = resolver.path(field, value)
    if rel is None:
        return None
    why = resolver.paths.reserved(rel, resolver.lock_name)
    if why:
        resolver.problem(field, why)
        return None
    if os.path.isdir(resolver.root / rel):
        resolver.problem(field, f"{rel} is a folder")
        return None
    if loops(resolver.root / rel):
        resolver.problem(field, f"{rel} is a symbolic link that leads back to itself; remove it")
        return None
    return rel


def expand_sheets(resolver: _TargetResolver, targets: dict[str, Target], problems: list[Problem]) -> None:
    """Each sheet's paths and globs → its frames, in order. A glob is matched against the outputs
    the manifest declares and the files git tracks, never against what happens to be on disk, so
    that a sheet holds the same frames on every machine."""
    from ..errors import Problem

    declared = sorted({o for d in resolver.declared.values() for o in d.outputs})
    tracked: list[str] | None = None
    for name, target in list(targets.items()):
        if target.params.get("derive") != "sheet":
            continue
        at = f"images.{name}.sheet"
        frames: list[str] = []
        bad = False
        for i, entry in enumerate(json.loads(target.params["sheet"])):
            if not _GLOB_CHARS.search(entry):
                rel = resolver.path(f"{at}[{i}]", entry)
                bad |= rel is None
                frames += [rel] if rel else []
                continue
            if tracked is None:
                tracked = _tracked(resolver.root)
            pattern = _glob_regex(entry)
            found = sorted({p for p in (*declared, *tracked)
                            if pattern.fullmatch(p) and p.lower().endswith(IMAGE_EXTENSIONS)} - set(target.outputs))
            if not found:
                problems.append(Problem(f"{at}[{i}]", f"{entry} matches no declared output and no committed file"))
                bad = True
            frames += [p for p in found if p not in frames]
        stems: dict[str, str] = {}
        for rel in frames:
            stem = os.path.splitext(os.path.basename(rel))[0]
            if stem in stems:
                problems.append(Problem(at, f"two frames are named {stem} ({stems[stem]} and {rel}): a frame's name "
                                            "is its file's stem; rename one"))
                bad = True
            stems[stem] = rel
        if bad:
            del targets[name]
            continue
        params = {k: v for k, v in target.params.items() if k != "sheet"}
        params["columns"] = resolver_columns(targets, name, len(frames))
        params["frames"] = json.dumps(list(stems))
        targets[name] = replace(target, params=params, images=tuple(frames))


def resolver_columns(targets: Mapping[str, Target], name: str, count: int) -> int:
    wanted = targets[name].params.get("columns")
    return int(wanted) if wanted else max(1, math.ceil(math.sqrt(count)))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over POSIX paths: ``*`` and ``?`` within one folder, ``**/`` across folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _tracked(root: Any) -> list[str]:
    """The files git tracks under the project folder, relative to it; none outside a work tree."""
    import subprocess

    try:
        done = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=root, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [p for p in done.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def check_sources(root: Any, targets: Mapping[str, Target], producers: Mapping[str, str],
                  problems: list[Problem]) -> None:
    """Each image a derived target reads exists (or a target makes it) and is an image by its bytes."""
    from ..inputfiles import check_image

    for name, target in targets.items():
        kind = target.params.get("derive")
        if kind is None:
            continue
        for rel in target.images:
            # No size limit of the API's: these bytes are never sent anywhere.
            check_image(root, rel, f"images.{name}.{kind}", dict(producers), problems, 2**62)


def frames_of(params: Mapping[str, Any]) -> list[str]:
    return list(json.loads(params.get("frames", "[]")))
