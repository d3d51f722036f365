"""images.toml → validated, resolved :class:`Target` objects, with every problem and its place.

Pure apart from reading the manifest, prompt files and the first bytes of input images: no
network, no writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .derive import recipe
from .errors import ManifestError, Problem, UsageError
from .hints import length_message, place, unknown_field
from .inputfiles import FORMAT_EXTENSION, Declared, check_files
from .inputfiles import check_image as _check_image  # noqa: F401 - incremental.py validates a changed table with these
from .inputfiles import check_mask as _check_mask  # noqa: F401
from .inputfiles import loops as _loops
from .providers import PRESETS, Preset, schema
from .tablecheck import BUILTIN_DEFAULTS, DEFAULT_COMPRESSION, TARGET_NAME_PATTERN
from .providers.base import Capabilities, ProviderSettings
from .target import Target  # noqa: F401 - re-exported: resolve.Target is what resolving makes
from .textvars import resolve_vars, substitute, var_names

EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
# Request fields imgbuild sends itself: `extra` may not override them.
OWN_FIELDS = frozenset(
    {"model", "prompt", "size", "quality", "output_format", "background", "moderation",
     "output_compression", "n", "image", "image[]", "images", "mask"}
)
PRESET_KEYS = frozenset(p.api_key_env for p in PRESETS.values() if p.api_key_env)
# Where the key for a compatible server comes from when no one outside the manifest names a variable.
GENERIC_KEY_ENV = "IMGBUILD_API_KEY"
# This machine, spelled so that no URL parser can read another host into it (no userinfo, no `\`).
_LOOPBACK_URL = re.compile(r"^https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?(/[^\s@\\?#]*)?$", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
if TYPE_CHECKING:  # pydantic is imported only when a manifest is validated in full
    from .manifest import ManifestFile, TargetTable
_NAME = re.compile(TARGET_NAME_PATTERN)
# Deeper values break recursive writers (the lock's TOML); no API field nests like that.
MAX_EXTRA_DEPTH = 32


@dataclass(frozen=True)
class Overrides:
    """Provider choices from the command line and environment; they win over the manifest."""

    provider: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # IMGBUILD_API_KEY_ENV: a compatible server's key variable

    @classmethod
    def from_env(cls, provider: str | None = None, base_url: str | None = None) -> Overrides:
        key_env = os.environ.get("IMGBUILD_API_KEY_ENV") or None
        if key_env is not None and not _ENV_NAME.match(key_env):
            raise UsageError(f"IMGBUILD_API_KEY_ENV={key_env!r} is not the name of an environment variable")
        return cls(
            provider or os.environ.get("IMGBUILD_PROVIDER") or None,
            base_url or os.environ.get("IMGBUILD_BASE_URL") or None,
            key_env,
        )


@dataclass
class Resolved:
    manifest: ManifestFile | None  # None when it came from the machine-local copy (resolvecache)
    targets: dict[str, Target]
    settings: ProviderSettings
    preset: Preset


def read_manifest(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise UsageError(f"the folder {path.parent} does not exist") from None
        raise ManifestError(path.name, [Problem("", f"not found in {path.parent} (imgbuild init writes a starter)")]) from None
    except OSError as exc:
        raise ManifestError(path.name, [Problem("", f"cannot be read: {exc.strerror}")]) from None


def parse_manifest(data: bytes, name: str) -> dict[str, Any]:
    try:
        return toml_loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(name, [Problem("", f"invalid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ManifestError(name, [Problem("", f"not UTF-8 text: {exc}")]) from None
    except RecursionError:
        raise ManifestError(name, [Problem("", "invalid TOML: arrays or tables nested too deeply")]) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ManifestError(name, [Problem("", f"invalid TOML: {exc}")]) from None


def toml_loads(text: str) -> dict[str, Any]:
    """What ``tomllib.loads(text)`` returns, or its error. rtoml (Rust) reads a 1,000-target
    manifest in a tenth of tomllib's time, but it reads TOML 1.1, which takes more than tomllib
    does (``\\e`` and ``\\x`` escapes, newlines and trailing commas in inline tables, times without
    seconds, a byte order mark) and keeps a CRLF in a multi-line string as it is. So rtoml's answer
    is taken only where no such difference can be: no inline table (every ``{`` is a ``${var}``),
    none of those escapes, no CR beside a multi-line string, and only strings, integers, finite
    floats, booleans, arrays and tables with ASCII keys in what it read. Anything else, or any
    error, is read by tomllib, whose answer and located message stay the ones given
    (tests/test_fuzz.py compares the two)."""
    if ("\\e" in text or "\\x" in text or text.startswith("\ufeff") or text.count("{") != text.count("${")
            or ("\r" in text and ('"""' in text or "'''" in text))):
        return tomllib.loads(text)
    try:
        import rtoml
    except ImportError:
        return tomllib.loads(text)
    try:
        parsed = rtoml.loads(text)
    except Exception:  # rtoml.TomlParsingError, or whatever else it raises: tomllib says
        return tomllib.loads(text)
    return parsed if type(parsed) is dict and _plain_tree(parsed) else tomllib.loads(text)


def _plain_tree(doc: dict[str, Any]) -> bool:
    """Whether everything in ``doc`` is of a kind both readers return alike (no recursion)."""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is dict:
            if not all(k.isascii() for k in node):
                return False
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
        elif kind is float:
            if not math.isfinite(node):
                return False
        elif kind not in (str, int, bool):
            return False  # a date or time: rtoml's time zones are its own
    return True


def _pydantic_problems(exc: Any, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        where = place(loc)
        named = [p for p in loc if isinstance(p, str) and p != "[key]"]
        if err["type"] == "extra_forbidden":
            message = unknown_field(loc)
        elif (short := length_message(err, named[-1] if named else "")) is not None:
            message = short
        else:
            message = err["msg"]
            value = err.get("input")
            if isinstance(value, (str, int, float, bool)) and err["type"] not in ("missing", "no_echo"):
                message = f"{value!r}: {message[0].lower()}{message[1:]}"
        problems.append(Problem(where, message))
    return problems


def validate_shape(
    raw: dict[str, Any], dropped: dict[str, set[str]]
) -> tuple[ManifestFile | None, dict[str, TargetTable], list[Problem]]:
    """Pydantic's pass. Returns the model, the targets that validated (some only in part: the
    fields left out are in ``dropped``), and the problems."""
    from pydantic import ValidationError

    from .manifest import ManifestFile, TargetTable

    try:
        model = ManifestFile.model_validate(raw)
        return model, dict(model.images), []
    except ValidationError:
        pass
    # Something is wrong: validate part by part, so that one mistake does not hide the others and
    # the semantic pass can still report on every sound part.
    problems: list[Problem] = []
    fields = ManifestFile.model_fields
    parts: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(Problem(key, unknown_field((key,))))
        elif key != "images":
            try:
                parts[key] = ManifestFile.model_validate({key: value}).__dict__[key]
            except ValidationError as exc:
                problems.extend(_pydantic_problems(exc))
                if key == "vars" and isinstance(value, dict):  # the sound vars still resolve prompts
                    parts[key] = {k: v for k, v in value.items() if isinstance(v, str)}
    images = raw.get("images", {})
    targets: dict[str, TargetTable] = {}
    if not isinstance(images, dict):
        problems.append(Problem("images", "must be a table of targets: [images.NAME]"))
        images = {}
    for name, table in images.items():
        if not _NAME.fullmatch(name):  # not match: `$` also matches before a final newline
            problems.append(Problem(f"images.{name}", f"{name!r} is not a valid target name "
                                    "(letters, digits, '.', '_' and '-', starting with a letter or digit)"))
            continue
        try:
            targets[name] = TargetTable.model_validate(table)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, ("images", name)))
            # Check the rest of the target too: drop the broken fields and validate again.
            broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            rest = {k: v for k, v in table.items() if k not in broken} if isinstance(table, dict) else {}
            try:
                partial = TargetTable.model_validate(rest)
            except ValidationError:
                continue
            targets[name] = partial
            dropped[name] = broken
    return ManifestFile.model_construct(**parts), targets, problems


def resolve_settings(table: Any, overrides: Overrides, problems: list[Problem]) -> tuple[ProviderSettings, Preset]:
    """The provider for this build: command line and environment win over the manifest."""
    name = overrides.provider or table.name
    if name not in PRESETS:  # only the environment can say this: the CLI and the model check theirs
        raise UsageError(f"IMGBUILD_PROVIDER={name!r} is not a preset ({', '.join(PRESETS)})")
    preset = PRESETS[name]
    if table.base_url and table.name in ("openai", "aimlapi"):
        # The key of a preset must never be sent where the manifest says (SPEC §7).
        problems.append(Problem(
            "provider.base_url",
            f"the {table.name} preset takes its endpoint from the preset, IMGBUILD_BASE_URL or "
            "--base-url, never from the manifest (use name = \"compatible\" for another server)",
        ))
    own_url = table.base_url if name == table.name == "compatible" else None
    base_url = overrides.base_url or own_url
    base_url = base_url or preset.base_url
    api_key_env = None if name == "placeholder" else (table.api_key_env or preset.api_key_env)
    if name == "compatible":
        if not base_url:
            problems.append(Problem("provider.base_url", "the compatible preset needs base_url (or --base-url)"))
        api_key_env = _compatible_key_env(table.api_key_env, base_url, overrides, problems)
    model = table.model if (table.model and name == table.name) else preset.default_model
    settings = ProviderSettings(
        preset=name,
        model=model or "gpt-image-2",
        api_key_env=api_key_env,
        base_url=base_url.rstrip("/") if base_url else None,
        concurrency=table.concurrency,
        timeout_s=float(table.timeout),
        max_retries=table.max_retries,
        prices={**preset.default_prices, **{k: v for k, v in table.prices.model_dump().items() if v is not None}},
        confirm_above_usd=float(table.confirm_above),
    )
    return settings, preset


def _compatible_key_env(named: str | None, base_url: str | None, overrides: Overrides,
                        problems: list[Problem]) -> str:
    """The variable whose key goes to a compatible server. A manifest may name the server, but it
    alone may not choose a secret to send there (a pull request could name any host and any
    variable CI holds): the manifest's api_key_env is honoured for a server on this machine, or one
    whose address came from outside the manifest; else the key comes from IMGBUILD_API_KEY or from
    the variable IMGBUILD_API_KEY_ENV names."""
    if overrides.api_key_env:
        return overrides.api_key_env
    if named is None:
        return GENERIC_KEY_ENV
    if named in PRESET_KEYS:
        # Else a manifest could send the user's OpenAI key to any host it names (SPEC §7).
        problems.append(Problem(
            "provider.api_key_env",
            f"{named} is the key of a preset; a compatible server gets its own variable",
        ))
    elif base_url and not overrides.base_url and not _LOOPBACK_URL.fullmatch(base_url):
        shown = json.dumps(base_url)[1:-1][:200]
        problems.append(Problem(
            "provider.api_key_env",
            f"the manifest may not choose which secret goes to {shown}, a server it names: put the key in "
            f"{GENERIC_KEY_ENV} and drop api_key_env, or name the variable outside the manifest "
            f"(IMGBUILD_API_KEY_ENV={named})",
        ))
    return named


class _Paths:
    """Path confinement: relative to the root, and inside it after `..` and symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self._dirs: dict[str, bool] = {}

    def confine(self, value: str) -> str | None:
        """The normalised relative path, or None when it leaves the project."""
        if not value or os.path.isabs(value):
            return None
        rel = os.path.normpath(value.replace("\\", "/"))
        if rel == ".." or rel.startswith("../") or rel == ".":
            return None
        parent = os.path.dirname(rel)
        if parent not in self._dirs:
            real = os.path.realpath(os.path.join(self.root, parent))
            self._dirs[parent] = real == self.real_root or real.startswith(self.real_root + os.sep)
        if not self._dirs[parent]:
            return None
        full = os.path.join(self.root, rel)
        if os.path.islink(full):
            real = os.path.realpath(full)
            if not real.startswith(self.real_root + os.sep):
                return None
        return rel

    @staticmethod
    def reserved(rel: str, lock_name: str) -> str | None:
        """Why ``rel`` may not be an output (it is git's or imgbuild's own), or None. Compared
        case-blind: on macOS and Windows `.GIT` is `.git`."""
        parts = [p.casefold() for p in rel.split("/")]
        for own in (".git", ".imgbuild"):
            if own in parts:
                return f"{rel} is inside {own}/, which belongs to {'git' if own == '.git' else 'imgbuild'}; choose another path"
        if rel.casefold() == lock_name.casefold():
            return f"{rel} is the lock file; choose another path"
        return None


class _TargetResolver:
    def __init__(self, model: ManifestFile, root: Path, caps: Capabilities, problems: list[Problem],
                 var_names: set[str] | None = None, lock_name: str = "images.lock") -> None:
        self.lock_name = lock_name
        self.model = model
        # A var whose value is not a string is reported by the shape pass: its users say nothing.
        untyped = (var_names or set()) - set(model.vars)
        self.vars, broken = resolve_vars(model.vars, problems, untyped)
        self.broken_vars = None if var_names is None else broken
        self.root = root
        self.caps = caps
        self.problems = problems
        self.paths = _Paths(root)
        self.defaults = model.defaults.model_dump(exclude_none=True)
        self.declared: dict[str, Declared] = {}
        out_dir = self.paths.confine(model.out_dir) if self._usable("out_dir", model.out_dir) else ""
        if out_dir is None:
            problems.append(Problem("out_dir", f"{model.out_dir} is outside the project folder"))
        elif self.paths.reserved(f"{out_dir}/x.png", lock_name):
            problems.append(Problem("out_dir", f"{out_dir} is inside .git/ or .imgbuild/; choose another folder"))
            out_dir = None
        self.out_dir = out_dir or "build/images"

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def _usable(self, where: str, value: str) -> bool:
        """A path the file system can take at all; else say why (before it is used)."""
        reason = path_problem(value)
        if reason:
            self.problem(where, reason)
        return reason is None

    def path(self, where: str, value: str) -> str | None:
        if not self._usable(where, value):
            return None
        rel = self.paths.confine(value)
        if rel is None:
            self.problem(where, f"{value} is outside the project folder (paths are relative to {self.root.name}/)")
        return rel

    def resolve(self, name: str, table: TargetTable, dropped: set[str]) -> Target | None:
        """The target, or None if it has a problem (reported). Either way, what it declares —
        outputs, inputs, size — is recorded for the checks across targets."""
        at = f"images.{name}"
        if recipe.is_derived(table) or dropped & {"from", "sheet"}:
            return None if dropped & {"from", "sheet"} else recipe.resolve_derived(self, name, table, dropped)
        before = len(self.problems)
        recipe.operations_on_request(self, at, table)
        given = table.model_dump(exclude_none=True)
        merged = {**self.defaults, **given}

        prompt = None if dropped & {"prompt", "prompt_file"} else self._prompt(at, table)
        fmt = self._format(at, merged, table)
        output = table.output
        if output is not None:
            output = self.path(f"{at}.output", output)
            why = self.paths.reserved(output, self.lock_name) if output is not None else None
            if why:
                self.problem(f"{at}.output", why)
            elif output is not None and os.path.isdir(self.root / output):
                self.problem(f"{at}.output", f"{output} is a folder")
        else:
            output = f"{self.out_dir}/{name}{FORMAT_EXTENSION.get(fmt, '.png')}"
            if not self._usable(at, output):
                output = None
        if output is not None and _loops(self.root / output):
            self.problem(f"{at}.output" if table.output else at,
                         f"{output} is a symbolic link that leads back to itself; remove it")

        params = {k: merged.get(k, v) for k, v in BUILTIN_DEFAULTS.items()}
        params["output_format"] = fmt
        edit = table.images is not None
        if edit:
            self._edit_moderation(at, params, given)
        self._check_params(at, params, given)
        if table.candidates is not None:
            self._candidates(at, params, table.candidates)
        if fmt in ("jpeg", "webp"):
            params["output_compression"] = merged.get("output_compression", DEFAULT_COMPRESSION)
        elif "output_compression" in given:
            self.problem(f"{at}.output_compression", f"only for jpeg and webp, not {fmt}")

        images = tuple(filter(None, (self.path(f"{at}.images[{i}]", p) for i, p in enumerate(table.images or ()))))
        mask = self.path(f"{at}.mask", table.mask) if table.mask is not None else None
        if table.mask is not None and not table.images and "images" not in dropped:
            self.problem(f"{at}.mask", "a mask needs images (it applies to the first input)")
        if len(images) > self.caps.max_images:
            self.problem(f"{at}.images", f"{len(images)} inputs; at most {self.caps.max_images}")

        extra = self._extra(at, merged.get("extra", {}), own="extra" in given, edit=edit)

        n = params["n"]
        outputs = () if output is None else (output,) if n == 1 else tuple(_numbered(output, i) for i in range(1, n + 1))
        self.declared[name] = Declared(outputs, images, mask, params["size"])
        if len(self.problems) > before or dropped or prompt is None or output is None:
            return None
        return Target(
            name=name, prompt=prompt, params=params, outputs=outputs, images=images, mask=mask,
            prompt_file=self.paths.confine(table.prompt_file) if table.prompt_file else None,
            revision=merged.get("revision", 0), pinned=merged.get("pinned", False), extra=extra,
        )

    def _candidates(self, at: str, params: dict[str, Any], count: int) -> None:
        """K takes of one spec: part of the spec, and asked as n = K (see takes.py)."""
        if params["n"] > 1:
            self.problem(f"{at}.candidates", f"candidates and n = {params['n']} do not go together: candidates "
                                             "asks for takes of one image to pick from; remove one of them")
        params["candidates"] = count

    def _edit_moderation(self, at: str, params: dict[str, Any], given: dict[str, Any]) -> None:
        """The edit endpoint defines no `moderation`: it is never sent with an edit, and one set
        on an edit target is an error ([defaults] simply applies to generations). The spec keeps
        imgbuild's own default, so that the digests existing locks hold for edits stay valid."""
        params["moderation"] = BUILTIN_DEFAULTS["moderation"]
        if "moderation" in given:
            self.problem(f"{at}.moderation", "only for generations: the edit endpoint (images/edits) does "
                                             "not take it; remove it from this target, which has images")

    def _extra(self, at: str, extra: dict[str, Any], *, own: bool, edit: bool) -> dict[str, Any]:
        """The `extra` fields this target sends. A problem is placed where the field is written:
        the target's own table, or `[defaults]` (once, however many targets inherit it). A
        default field the other endpoint defines is simply not this target's."""
        where = f"{at}.extra" if own else "defaults.extra"
        kept = {}
        for key, value in extra.items():
            message = _extra_problem(key, value)
            if message is None and schema.defined_elsewhere(key, edit=edit):
                if not own:
                    continue
                message = (f"only {schema.endpoint_name(not edit)} defines it and this target is "
                           f"{'an edit' if edit else 'a generation'} ({schema.endpoint_name(edit)})")
            if message is None:
                kept[key] = value
            elif not any(p.where == f"{where}.{key}" and p.message == message for p in self.problems):
                self.problem(f"{where}.{key}", message)
        return kept

    def _prompt(self, at: str, table: TargetTable) -> str | None:
        if (table.prompt is None) == (table.prompt_file is None):
            self.problem(at, "give one of prompt or prompt_file (a request), from (one image) or sheet (several)")
            return None
        if table.prompt is not None:
            where, text = f"{at}.prompt", table.prompt
        else:
            where = f"{at}.prompt_file"
            rel = self.path(where, table.prompt_file or "")
            if rel is None:
                return None
            try:
                text = (self.root / rel).read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                self.problem(where, f"{rel} does not exist")
                return None
            except (OSError, UnicodeDecodeError) as exc:
                self.problem(where, f"{rel} cannot be read as UTF-8 text: {exc}")
                return None
        text = substitute(text, self.vars, where, self.problems, self.broken_vars)
        if not text.strip():
            self.problem(where, "the prompt is empty")
        elif len(text) > self.caps.max_prompt_chars:
            self.problem(where, f"the prompt has {len(text):,} characters; at most {self.caps.max_prompt_chars:,}")
        return text

    def _format(self, at: str, merged: dict[str, Any], table: TargetTable) -> str:
        fmt = merged.get("output_format")
        if table.output is None:
            return fmt or "png"
        ext = os.path.splitext(table.output)[1].lower()
        by_ext = EXTENSIONS.get(ext)
        if by_ext is None:
            self.problem(f"{at}.output", f"{table.output}: the extension must be .png, .jpg, .jpeg or .webp")
            return fmt or "png"
        if fmt and fmt != by_ext:
            self.problem(f"{at}.output_format", f"{fmt} contradicts the output's extension {ext}")
        return fmt or by_ext

    def _check_params(self, at: str, params: dict[str, Any], given: dict[str, Any]) -> None:
        def where(key: str) -> str:
            return f"{at}.{key}" if key in given else f"defaults.{key}" if key in self.defaults else at

        reason = self.caps.check_size(params["size"])
        if reason:
            self.problem(where("size"), reason)
        if params["quality"] not in self.caps.qualities:
            self.problem(where("quality"), f"{params['quality']} is not one of {', '.join(self.caps.qualities)}")
        if params["output_format"] not in self.caps.formats:
            self.problem(where("output_format"), f"{params['output_format']} is not supported")
        if params["n"] > self.caps.max_n:
            self.problem(where("n"), f"at most {self.caps.max_n}")
        if params["background"] == "transparent" and params["output_format"] not in self.caps.transparent_formats:
            self.problem(
                where("background"),
                f"transparent needs {' or '.join(self.caps.transparent_formats)}, not {params['output_format']}",
            )


def _extra_problem(key: str, value: Any) -> str | None:
    if key in OWN_FIELDS:
        return "imgbuild sets this field itself; use the target's own field"
    if key in schema.ANSWER_SHAPE_FIELDS:
        return ("changes the shape of the answer (server-sent events, or images in another form than "
                "the provider's); imgbuild could not read it, and it would still be paid for: remove it")
    if _depth(value) > MAX_EXTRA_DEPTH:
        return f"nested more than {MAX_EXTRA_DEPTH} levels deep"
    if not _plain(value):
        return "only strings, numbers, booleans, arrays and tables can be sent; quote a date or time as a string"
    return None


def path_problem(value: str) -> str | None:
    """Why a path from the manifest cannot name a file (a control character, a part over the
    255 bytes file systems allow), or None."""
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return f"{value!r} contains a control character ({bad!r}); file names may not"
    long = next((p for p in value.replace("\\", "/").split("/") if len(p.encode("utf-8", "replace")) > 255), None)
    if long is not None:
        return f"{long[:40]}… is a name of {len(long.encode('utf-8', 'replace'))} bytes; file systems allow 255 bytes"
    return None


def _depth(value: Any) -> int:
    """How deeply arrays and tables nest in ``value`` (a scalar is 0), without recursing."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            level += 1
            deepest = max(deepest, level)
            if level <= MAX_EXTRA_DEPTH:
                stack.extend((v, level) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _plain(value: Any) -> bool:
    """JSON-like: what a request body can carry (TOML dates and times cannot)."""
    if isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _numbered(path: str, i: int) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}-{i}{ext}"


def resolve(raw: dict[str, Any], root: Path, manifest_name: str, overrides: Overrides) -> Resolved:
    """Validate and resolve a parsed manifest completely; raise ManifestError with every problem."""
    plain = resolve_plain(raw, root, manifest_name, overrides)
    if plain is not None:
        return plain
    from .manifest import ManifestFile

    dropped: dict[str, set[str]] = {}
    model, tables, problems = validate_shape(raw, dropped)
    if model is None:
        model = ManifestFile.model_validate({})
    resolved = _resolve_tables(raw, model, model.provider, tables, dropped, problems, root, manifest_name, overrides)
    if problems:
        raise ManifestError(manifest_name, problems)
    return resolved


def resolve_plain(raw: dict[str, Any], root: Path, manifest_name: str, overrides: Overrides) -> Resolved | None:
    """:func:`resolve` without pydantic, for a manifest whose every part is certainly valid
    (tablecheck.plain_manifest) and that has no problem; else None, and resolve() validates it all
    with pydantic, whose messages are the ones given."""
    from .tablecheck import plain_manifest

    found = plain_manifest(raw)
    if found is None:
        return None
    model, provider, tables = found
    problems: list[Problem] = []
    resolved = _resolve_tables(raw, model, provider, tables, {}, problems,  # type: ignore[arg-type]
                               root, manifest_name, overrides)
    return None if problems else resolved


def _resolve_tables(raw: dict[str, Any], model: ManifestFile, provider: Any, tables: dict[str, TargetTable],
                    dropped: dict[str, set[str]], problems: list[Problem], root: Path, manifest_name: str,
                    overrides: Overrides) -> Resolved:
    """The targets of validated tables, with every problem the semantic pass finds in ``problems``."""
    from .graph import find_cycles, producers_of

    settings, preset = resolve_settings(provider, overrides, problems)
    resolver = _TargetResolver(model, root, preset.capabilities, problems, var_names(raw.get("vars", {})),
                               lock_name=Path(manifest_name).with_suffix(".lock").name)
    targets: dict[str, Target] = {}
    for name, table in tables.items():
        target = resolver.resolve(name, table, dropped.get(name, set()))
        if target is not None:
            targets[name] = target
    recipe.expand_sheets(resolver, targets, problems)
    producers, clashes = producers_of(targets)
    problems.extend(clashes)
    check_files(root, resolver.declared, preset.capabilities, problems)
    recipe.check_sources(root, targets, producers, problems)
    problems.extend(find_cycles(targets, producers))
    return Resolved(model, targets, settings, preset)
