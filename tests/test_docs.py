"""The documentation stays in step with the code: the manifest reference is generated from the
models and names every field; the command reference names every command and option; the presets,
environment variables, links and TOML snippets the docs show are real."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from conftest import ROOT

DOCS = ROOT / "docs"
OWNED = [
    ROOT / "README.md",
    DOCS / "manifest.md", DOCS / "commands.md", DOCS / "providers.md", DOCS / "ci.md", DOCS / "design.md",
    ROOT / "examples" / "game-assets" / "README.md", ROOT / "examples" / "web-assets" / "README.md",
]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_manifest_doc", ROOT / "tools" / "gen_manifest_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_models() -> list[type[BaseModel]]:
    from imgbuild import manifest

    return [cls for _, cls in inspect.getmembers(manifest, inspect.isclass)
            if issubclass(cls, BaseModel) and cls.__module__ == manifest.__name__ and cls.model_fields]


# -- the manifest reference ------------------------------------------------------------------------

def test_the_manifest_reference_is_what_the_generator_makes_of_the_models() -> None:
    committed = (DOCS / "manifest.md").read_text(encoding="utf-8")
    assert committed == generator().render(), "run: python tools/gen_manifest_doc.py"


def test_the_manifest_reference_has_a_row_for_every_field_of_every_model() -> None:
    text = (DOCS / "manifest.md").read_text(encoding="utf-8")
    models = manifest_models()
    names = {m.__name__ for m in models}
    assert {"ManifestFile", "ProviderTable", "Prices", "Params", "TargetTable"} <= names
    missing = [f"{m.__name__}.{field}" for m in models for field, info in m.model_fields.items()
               if f"| `{info.alias or field}` |" not in text]  # as written in images.toml: `from`
    assert missing == []


def test_the_manifest_reference_gives_imgbuilds_own_defaults() -> None:
    from imgbuild.manifest import BUILTIN_DEFAULTS

    text = (DOCS / "manifest.md").read_text(encoding="utf-8")
    for field, value in BUILTIN_DEFAULTS.items():
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        assert re.search(rf"^\| `{field}` \| [^|]*(\\\|[^|]*)* \| `{re.escape(shown)}` \|", text, re.M), field


# -- the command reference -------------------------------------------------------------------------

def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from imgbuild.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **sub.choices}


def test_the_command_reference_has_a_section_for_every_command() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    commands = [name for name in _subcommands() if name]
    assert len(commands) >= 10
    assert [c for c in commands if f"\n## {c}\n" not in text] == []


def test_the_command_reference_names_every_option_of_every_command() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    missing = []
    for name, parser in _subcommands().items():
        for action in parser._actions:
            for option in action.option_strings:
                if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                    missing.append(f"{name or 'imgbuild'} {option}")
            choices = (action.choices or ()) if action.option_strings else ()
            missing += [f"{name} {action.option_strings[0]} {c}" for c in choices if f"`{c}`" not in text]
    assert missing == []


def test_the_command_reference_names_every_environment_variable_the_code_reads() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    read = set()
    for path in (ROOT / "imgbuild").rglob("*.py"):
        read.update(re.findall(r"environ(?:\.get)?\(\s*\"(IMGBUILD_[A-Z_]+)\"", path.read_text(encoding="utf-8")))
    assert {"IMGBUILD_CACHE_DIR", "IMGBUILD_PROVIDER", "IMGBUILD_BASE_URL"} <= read
    assert sorted(v for v in read if f"`{v}`" not in text) == []


# -- the providers page ----------------------------------------------------------------------------

def test_the_providers_page_gives_each_presets_endpoint_key_and_model() -> None:
    from imgbuild.providers import PRESETS

    text = (DOCS / "providers.md").read_text(encoding="utf-8")
    for preset in PRESETS.values():
        assert f"`{preset.name}`" in text
        for value in (preset.base_url, preset.api_key_env, preset.default_model):
            if value and preset.name != "placeholder":
                assert f"`{value}`" in text, f"{preset.name}: {value}"


# -- what every page shows -----------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    text = _without_code_blocks(path.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", OWNED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page: Path) -> None:
    text = _without_code_blocks(page.read_text(encoding="utf-8"))
    broken = []
    relative = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]
    assert relative, "no relative link on the page: nothing to check (take it out of OWNED?)"
    for target in relative:
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert broken == []


def _toml_blocks(page: Path) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.S | re.M)


TOML_PAGES = [page for page in OWNED if _toml_blocks(page)]


def test_the_pages_that_show_a_manifest_are_all_checked() -> None:
    assert {ROOT / "README.md", DOCS / "manifest.md", DOCS / "providers.md", DOCS / "design.md"} <= set(TOML_PAGES)


def _materialise_inputs(root: Path, data: dict[str, Any]) -> None:
    """Write the input files a manifest snippet names and no target of it makes: PNGs for images,
    PNG masks with alpha of the first input's size, text for prompt files."""
    from conftest import png

    targets = data.get("images", {})
    defaults = data.get("defaults", {})
    out_dir = data.get("out_dir", "build/images")
    sizes = {}
    for name, table in targets.items():
        fmt = table.get("output_format") or defaults.get("output_format") or "png"
        output = table.get("output") or f"{out_dir}/{name}.{'jpg' if fmt == 'jpeg' else fmt}"
        w, _, h = (table.get("size") or defaults.get("size") or "1024x1024").partition("x")
        sizes[output] = (int(w), int(h))
    for table in targets.values():
        inputs = table.get("images", [])
        for rel in inputs:
            if rel not in sizes and not (root / rel).exists():
                png(root / rel, size=(1024, 1024))
        if "mask" in table and inputs:
            png(root / table["mask"], size=sizes.get(inputs[0], (1024, 1024)), color=(0, 0, 0, 0))
        if "prompt_file" in table:
            (root / table["prompt_file"]).parent.mkdir(parents=True, exist_ok=True)
            (root / table["prompt_file"]).write_text("A crown on the knight", encoding="utf-8")


@pytest.mark.parametrize("page", TOML_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_toml_snippet_is_a_valid_piece_of_a_manifest(page: Path, tmp_path: Path) -> None:
    from imgbuild.lockfile import LOCK_VERSION
    from imgbuild.manifest import ManifestFile
    from imgbuild.resolve import Overrides, resolve

    for i, block in enumerate(_toml_blocks(page)):
        data = tomllib.loads(block)
        if "targets" in data:  # a lock file, shown as one
            assert data["version"] == LOCK_VERSION
            continue
        ManifestFile.model_validate(data)
        if data.get("images"):  # a whole manifest: it must resolve as imgbuild would load it
            root = tmp_path / f"snippet-{i}"
            root.mkdir()
            _materialise_inputs(root, data)
            resolved = resolve(data, root, "images.toml", Overrides())
            assert set(resolved.targets) == set(data["images"])
