"""Every bundled example builds as its README says: offline with the placeholder provider, and for
real against the strict local API server (tests/apiserver.py), which rejects what the real API
would. Each example is copied into a temporary folder with its own cache and built by the CLI in a
subprocess, as a user runs it.

What an example *should* produce is read from its images.toml here, independently of imgbuild's
own resolver: the declared outputs, their formats and sizes, and the request each target makes.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apiserver import ApiServer
from conftest import ROOT, Project

EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "images.toml").is_file())
# What the .gitignore keeps out of the examples: a copy must start as a fresh clone does.
NOT_COMMITTED = shutil.ignore_patterns("assets", "build", "images.lock", ".imgbuild")
KEY_VARS = ("OPENAI_API_KEY", "AIMLAPI_API_KEY")
PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}
FORMAT_EXTENSION = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
AIMLAPI_SIZES = {"1024x1024", "1536x1024", "1024x1536"}


@dataclass(frozen=True)
class Expected:
    """One target as its manifest declares it."""

    name: str
    prompt: str
    params: dict[str, Any]  # what goes on the wire besides model and prompt
    outputs: tuple[str, ...]
    images: tuple[str, ...]
    mask: str | None
    takes: int = 0  # candidates: the takes one request asks for (n on the wire); one output
    # A derived target (from/sheet) makes no request: its size where the manifest alone says it
    # (None where it depends on the pixels: a trim, a sheet).
    derived: bool = False
    derived_size: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        if self.derived:
            return self.derived_size
        w, _, h = self.params["size"].partition("x")
        return int(w), int(h)

    @property
    def transparent(self) -> bool:
        return bool(self.params.get("background") == "transparent")


def requested(targets: dict[str, Expected]) -> dict[str, Expected]:
    """The targets that are requests (not derived)."""
    return {n: t for n, t in targets.items() if not t.derived}


def _derived_size(table: dict[str, Any], source: tuple[int, int] | None) -> tuple[int, int] | None:
    """A `from` target's size by the manifest reference: crop, trim (unknown), resize and fit."""
    if "crop" in table:
        source = (table["crop"][2], table["crop"][3])
    if table.get("trim"):
        source = None
    if "resize" not in table:
        return source
    w_text, _, h_text = table["resize"].partition("x")
    if w_text and h_text:
        w, h = int(w_text), int(h_text)
        if table.get("fit", "cover") != "inside":
            return w, h
        if source is None:
            return None
        scale = min(w / source[0], h / source[1])
        return min(w, int(source[0] * scale + 0.5)), min(h, int(source[1] * scale + 0.5))
    if source is None:
        return None
    if w_text:
        return int(w_text), max(1, int(source[1] * int(w_text) / source[0] + 0.5))
    return max(1, int(source[0] * int(h_text) / source[1] + 0.5)), int(h_text)


def _substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(\$|\{([^}]*)\})", lambda m: "$" if m.group(1) == "$" else variables[m.group(2)], text)


def declared(root: Path) -> dict[str, Expected]:
    """The targets of ``root/images.toml``, resolved by SPEC §1's rules."""
    manifest = tomllib.loads((root / "images.toml").read_text(encoding="utf-8"))
    defaults = manifest.get("defaults", {})
    out_dir = manifest.get("out_dir", "build/images")
    variables = manifest.get("vars", {})
    targets: dict[str, Expected] = {}
    for name, table in manifest.get("images", {}).items():
        merged = {**defaults, **table}
        if "from" in table or "sheet" in table:
            targets[name] = _declared_derived(name, table, merged, out_dir, targets)
            continue
        output = table.get("output")
        fmt = merged.get("output_format") or (EXTENSIONS[Path(output).suffix] if output else "png")
        output = output or f"{out_dir}/{name}{FORMAT_EXTENSION[fmt]}"
        params = {
            "size": merged.get("size", "1024x1024"), "quality": merged.get("quality", "medium"),
            "output_format": fmt, "background": merged.get("background", "auto"),
            "n": merged.get("n", 1),
        }
        if "images" not in table:  # the edit endpoint defines no moderation (API.md)
            params["moderation"] = merged.get("moderation", "auto")
        if fmt != "png":
            params["output_compression"] = merged.get("output_compression", 100)
        n = params["n"]
        stem, ext = output.rsplit(".", 1)
        outputs = (output,) if n == 1 else tuple(f"{stem}-{i}.{ext}" for i in range(1, n + 1))
        takes = merged.get("candidates", 0)
        if takes:
            params["n"] = takes
        if "prompt" in table:
            prompt = table["prompt"]
        else:
            prompt = (root / table["prompt_file"]).read_text(encoding="utf-8").strip()
        targets[name] = Expected(name, _substitute(prompt, variables), params, outputs,
                                 tuple(table.get("images", ())), table.get("mask"), takes)
    return targets


def _declared_derived(name: str, table: dict[str, Any], merged: dict[str, Any], out_dir: str,
                      before: dict[str, Expected]) -> Expected:
    output = table.get("output")
    fmt = "png" if "sheet" in table else (
        merged.get("output_format") or (EXTENSIONS[Path(output).suffix] if output else "png"))
    output = output or f"{out_dir}/{name}{FORMAT_EXTENSION[fmt]}"
    outputs: tuple[str, ...] = (output,)
    size = None
    if "sheet" in table:
        outputs += (table.get("atlas") or output.rsplit(".", 1)[0] + ".json",)
    else:  # the examples derive from targets declared above them
        source = next(t for t in before.values() if table["from"] in t.outputs)
        size = _derived_size(table, source.size)
    return Expected(name, "", {"output_format": fmt}, outputs, (), None, derived=True, derived_size=size)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def example(project: Project) -> Any:
    """Copy an example into the test's project folder, as a fresh clone has it; no key in sight."""

    def copy(name: str) -> Project:
        shutil.copytree(EXAMPLES_DIR / name, project.root, dirs_exist_ok=True, ignore=NOT_COMMITTED)
        for var in KEY_VARS:
            project.env.pop(var, None)
        return project

    return copy


def assert_outputs_as_declared(project: Project, targets: dict[str, Expected]) -> None:
    from PIL import Image

    for target in targets.values():
        for rel in target.outputs:
            path = project.root / rel
            assert path.is_file(), f"{target.name}: {rel} was not written"
            if rel.endswith(".json"):  # a sheet's atlas
                assert json.loads(path.read_text())["meta"]["format"] == "RGBA8888", rel
                continue
            with Image.open(path) as im:
                assert PIL_FORMATS.get(im.format or "") == target.params["output_format"], rel
                assert target.size is None or im.size == target.size, rel
                if target.transparent:
                    assert im.mode in ("RGBA", "LA", "PA"), f"{rel} has no alpha channel ({im.mode})"
                im.load()  # a whole image, not a truncated one


def assert_second_build_does_nothing(project: Project, targets: dict[str, Expected],
                                     env: dict[str, str] | None = None) -> None:
    before = project.snapshot()
    again = project.build(env=env)
    assert again.code == 0, again.err
    assert again.requests == 0
    assert again.summary["up_to_date"] == len(targets)
    assert project.snapshot() == before
    assert project.run("check", env=env).code == 0


# -- offline -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLES)
def test_example_builds_offline_with_the_placeholder_provider(example: Any, name: str) -> None:
    # Given a fresh copy of the example, as its README builds it
    project = example(name)
    targets = declared(project.root)

    first = project.build("--provider", "placeholder")

    # every target is built, a request each (a derived one with none), and every declared output
    # is there, in the declared format and size (with an alpha channel where the background is
    # transparent)
    assert first.code == 0, first.err
    assert first.summary["built"] == len(targets)
    assert first.requests == len(requested(targets))
    assert first.summary["failed"] == first.summary["skipped"] == 0
    assert_outputs_as_declared(project, targets)
    # and a second build makes no request and touches no file
    assert_second_build_does_nothing(project, targets, {"IMGBUILD_PROVIDER": "placeholder"})


# -- against the local API server ---------------------------------------------------------------

def wire_fields(target: Expected) -> dict[str, str]:
    """What the request for ``target`` must carry, as text (multipart sends numbers as text)."""
    return {key: str(value) for key, value in {"prompt": target.prompt, **target.params}.items()}


def assert_requests_as_declared(server: ApiServer, project: Project, targets: dict[str, Expected],
                                per_target: dict[str, int]) -> None:
    """The server received ``per_target[name]`` requests for each target, each with exactly the
    target's fields, and each edit with the target's input files and mask, in order."""
    received = server.api_requests()
    assert len(received) == sum(per_target.values())
    by_fields = collections.defaultdict(list)
    for r in received:
        fields = {k: str(v) for k, v in r.fields.items() if k != "model"}
        by_fields[json.dumps(fields, sort_keys=True)].append(r)
    for target in targets.values():
        fields = wire_fields(target)
        if per_target[target.name] != 1:  # aimlapi: n requests of one image each
            fields["n"] = "1"
        got = by_fields.pop(json.dumps(fields, sort_keys=True), [])
        assert len(got) == per_target[target.name], f"{target.name}: {len(got)} request(s)"
        for r in got:
            assert r.path.endswith("/images/edits" if target.images else "/images/generations")
            if not target.images:
                continue
            names = ["image"] if len(target.images) == 1 else ["image[]"] * len(target.images)
            digests = [sha256(project.root / p) for p in target.images]
            if target.mask:
                names.append("mask")
                digests.append(sha256(project.root / target.mask))
            assert r.part_names == names, target.name
            assert [f[3] for f in r.files] == digests, f"{target.name}: not the inputs on disk"
    assert not by_fields, f"requests for no target: {list(by_fields)}"


def assert_outputs_are_what_the_server_sent(server: ApiServer, project: Project,
                                            targets: dict[str, Expected]) -> None:
    written = [sha256(project.root / rel) for t in targets.values() if not t.takes for rel in t.outputs]
    lock = project.lock()["targets"]
    for t in (t for t in targets.values() if t.takes):  # every take kept; the output holds take 1
        takes = [take["sha256"] for take in lock[t.name]["takes"]]
        assert len(takes) == t.takes and sha256(project.root / t.outputs[0]) == takes[0]
        written += takes
    assert collections.Counter(written) == collections.Counter(server.served)


def real_env(server: ApiServer, preset: str) -> dict[str, str]:
    """The environment of a real build, pointed at the local server (docs/providers.md)."""
    key_var = {"openai": "OPENAI_API_KEY", "aimlapi": "AIMLAPI_API_KEY"}[preset]
    return {"IMGBUILD_PROVIDER": preset, "IMGBUILD_BASE_URL": server.base_url, key_var: server.key}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_builds_against_the_openai_api(example: Any, start_api_server: Any,
                                               name: str) -> None:
    # Given a fresh copy and the openai preset pointed at the local server
    project = example(name)
    targets = declared(project.root)
    server = start_api_server("openai")
    env = real_env(server, "openai")

    first = project.build(env=env)

    # one request per target (n images in one), each exactly as declared; edits send the bytes of
    # the images their dependencies made; the outputs are the server's images, byte for byte
    assert first.code == 0, first.err
    assert_every_target_made(first, targets)
    assert first.requests == len(requested(targets))
    assert first.summary["cost_usd"] > 0
    assert_requests_as_declared(server, project, requested(targets), {t: 1 for t in requested(targets)})
    assert_outputs_are_what_the_server_sent(server, project, requested(targets))
    assert_outputs_as_declared(project, targets)
    lock = project.lock()["targets"]
    assert {lock[name]["provider"] for name in requested(targets)} == {"openai"}
    # and a second build makes no request
    assert_second_build_does_nothing(project, targets, env)
    assert len(server.api_requests()) == len(requested(targets))


def assert_every_target_made(result: Any, targets: dict[str, Expected]) -> None:
    """Every target built, but for derived ones the cache already held: the local server answers
    every request of a size with the same bytes, so two frames cut the same way from two such
    images have one spec, and whichever is decided second restores the first's (never paid twice)."""
    restored = [e["target"] for e in result.events if e.get("event") == "restored"]
    assert all(targets[name].derived for name in restored), restored
    assert result.summary["built"] + len(restored) == len(targets)


def _fits_aimlapi(name: str) -> bool:
    targets = requested(declared(EXAMPLES_DIR / name))
    return all(t.params["size"] in AIMLAPI_SIZES and t.params["quality"] != "auto" for t in targets.values())


AIMLAPI_EXAMPLES = [n for n in EXAMPLES if _fits_aimlapi(n)]


@pytest.mark.parametrize("name", AIMLAPI_EXAMPLES)
def test_example_builds_against_aimlapi_then_switching_to_openai_costs_nothing(
        example: Any, start_api_server: Any, name: str) -> None:
    # Given a fresh copy and the aimlapi preset pointed at a local server of that dialect
    project = example(name)
    targets = requested(declared(project.root))
    aimlapi = start_api_server("aimlapi")

    first = project.build(env=real_env(aimlapi, "aimlapi"))

    # a generation with n > 1 goes as n requests of one image, everything else as one request;
    # images come by download URL, and the outputs are exactly what was downloaded
    per_target = {t.name: (t.params["n"] if not t.images else 1) for t in targets.values()}
    assert first.code == 0, first.err
    assert first.requests == sum(per_target.values())
    assert_requests_as_declared(aimlapi, project, targets, per_target)
    assert_outputs_are_what_the_server_sent(aimlapi, project, targets)
    assert_outputs_as_declared(project, targets)
    assert all(d.auth == "absent" for d in aimlapi.downloads)  # the key never went to the CDN

    # When the project switches to openai, which serves the same model, nothing is requested
    openai = start_api_server("openai")
    switched = project.build(env=real_env(openai, "openai"))
    assert switched.code == 0, switched.err
    assert switched.requests == 0 and openai.api_requests() == []


def test_web_assets_sizes_are_refused_by_aimlapi_before_any_request(example: Any,
                                                                   start_api_server: Any) -> None:
    # The web example's README says its sizes need openai or a compatible server
    project = example("web-assets")
    server = start_api_server("aimlapi")

    result = project.build(env=real_env(server, "aimlapi"))

    assert result.code == 2
    assert "images.hero.size: 2048x1152 is not one of aimlapi's sizes" in result.err
    assert server.api_requests() == []
    assert not (project.root / "assets").exists()


# -- the READMEs ---------------------------------------------------------------------------------

# The examples this suite documents (the quickstart is the README's own).
DOCUMENTED = ["game-assets", "web-assets"]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_example_readme_shows_the_current_estimate_and_build_commands(example: Any, name: str) -> None:
    project = example(name)
    readme = (EXAMPLES_DIR / name / "README.md").read_text(encoding="utf-8")

    dry = project.run("build", "-n", "--json")

    assert dry.code == 0, dry.err
    (estimate,) = [e for e in dry.events if e.get("event") == "estimate"]
    assert f"estimated ${estimate['estimate_usd']:.2f}" in readme, "paste the figure of `build -n`"
    assert f"imgbuild -C examples/{name} build --provider placeholder" in readme
    assert f"imgbuild -C examples/{name} build -n" in readme
    assert not (project.root / "images.lock").exists()  # -n wrote nothing
