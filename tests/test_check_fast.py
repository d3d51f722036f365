"""What makes a fresh clone's `check` fast changes nothing it decides.

Files the plan will hash are hashed ahead, on threads (statcache.StatCache.prefetch): a digest
hashed ahead is used only for the file as it was when its hashing began. A manifest whose every
part is certainly valid is resolved without pydantic (tablecheck.plain_manifest), to the same
targets; anything else, or any problem, goes to pydantic, whose messages are the ones given.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import subprocess
import sys
from typing import Any

import pytest
from conftest import Project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbuild import statcache
from imgbuild.statcache import StatCache


def _files(root: Path, count: int) -> list[str]:
    rels = []
    for i in range(count):
        (root / f"f{i}.bin").write_bytes(os.urandom(64 * 1024))
        rels.append(f"f{i}.bin")
    return rels


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def _hash_small_files_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "PREFETCH_MIN_BYTES", 0)


# -- hashing ahead -----------------------------------------------------------------------------

@pytest.mark.usefixtures("_hash_small_files_ahead")
def test_files_hashed_ahead_have_the_digests_of_their_bytes(tmp_path: Path) -> None:
    rels = _files(tmp_path, 6)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.prefetch(rels)
    assert set(stats._ahead) == set(rels)  # hashed ahead, on threads
    assert [stats.digest(rel) for rel in reversed(rels)] == [_sha(tmp_path / rel) for rel in reversed(rels)]


@pytest.mark.usefixtures("_hash_small_files_ahead")
def test_a_file_rewritten_after_it_was_hashed_ahead_is_hashed_again(tmp_path: Path) -> None:
    rels = _files(tmp_path, 3)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.prefetch(rels)
    for rel, (_, hashing) in stats._ahead.items():
        hashing.result(rel)  # all hashed
    path = tmp_path / rels[1]
    st = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick: its ctime tells
    path.write_bytes(os.urandom(st.st_size))  # other bytes, the same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert stats.digest(rels[1]) == _sha(path)
    assert stats.digest(rels[0]) == _sha(tmp_path / rels[0])


@pytest.mark.usefixtures("_hash_small_files_ahead")
def test_files_the_cache_trusts_or_that_are_missing_are_not_hashed_ahead(tmp_path: Path) -> None:
    rels = _files(tmp_path, 3)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.digest(rels[0])  # hashed this run: trusted
    stats.prefetch([*rels, "missing.bin"])
    assert set(stats._ahead) == set(rels[1:])
    assert stats.digest("missing.bin") is None


# -- the manifest without pydantic ---------------------------------------------------------------

def test_the_pydantic_free_checks_know_every_field_of_the_models() -> None:
    from imgbuild.manifest import PRESET_NAMES, ManifestFile, Params, ProviderTable
    from imgbuild.tablecheck import _PROVIDER_SURE, _TOP, PARAMS_FIELDS
    from imgbuild.tablecheck import PRESET_NAMES as QUICK_PRESET_NAMES

    assert PARAMS_FIELDS == tuple(Params.model_fields)
    assert [*_PROVIDER_SURE, "prices"] == list(ProviderTable.model_fields)
    assert _TOP == set(ManifestFile.model_fields)
    assert QUICK_PRESET_NAMES == PRESET_NAMES


# Valid manifests, half of them with one value (or key) somewhere replaced by an edge of a range
# or choice the models hold, or by what a lax model would take for a number.
_EDGES = [-1, 0, 1, 2, 3, 4, 10, 11, 20, 21, 64, 65, 100, 101, 0.0, -0.0, 0.5, 600.0, 2**53, 2**53 + 1, 2**64,
          -(2**70), 1e308, float("inf"), float("-inf"), float("nan"), True, False, "4", "0.5", "", "x", "auto",
          "low", "png", "hero\n", "MY_KEY\n", "1X", "https://x", "file:///etc", ["a.png"], [], [1], {}, {"a": 1}]
_edge = st.one_of(st.sampled_from(_EDGES), st.integers(), st.floats(), st.text(max_size=4))
_text = st.sampled_from(["x", "a b", "${style}", "é", "a\x00b"])
_PROVIDER = {"name": st.sampled_from(["openai", "aimlapi", "compatible", "placeholder"]),
             "model": st.sampled_from(["gpt-image-2", "m"]), "api_key_env": st.sampled_from(["MY_KEY", "_X1"]),
             "base_url": st.sampled_from(["http://127.0.0.1:9/v1", "https://x"]),
             "concurrency": st.integers(1, 64), "timeout": st.one_of(st.integers(1, 10**6), st.floats(0.001, 1e6)),
             "max_retries": st.integers(0, 20), "confirm_above": st.one_of(st.integers(0, 10), st.floats(0, 100)),
             "prices": st.fixed_dictionaries({"per_image": st.floats(0, 1)})}
_PARAMS = {"size": st.sampled_from(["1024x1024", "auto"]),
           "quality": st.sampled_from(["low", "medium", "high", "auto"]),
           "output_format": st.sampled_from(["png", "jpeg", "webp"]),
           "background": st.sampled_from(["transparent", "opaque", "auto"]),
           "moderation": st.sampled_from(["low", "auto"]), "output_compression": st.integers(0, 100),
           "n": st.integers(1, 10), "revision": st.integers(0, 2**70), "pinned": st.booleans(),
           "extra": st.dictionaries(_text, st.one_of(_text, st.integers(), st.floats()), max_size=2)}
_TARGET = {**_PARAMS, "prompt": _text, "prompt_file": _text, "output": _text, "mask": _text,
           "images": st.lists(_text, min_size=1, max_size=3), "candidates": st.integers(2, 10)}


def _some(fields: dict[str, Any]) -> Any:
    return st.lists(st.sampled_from(list(fields)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys}))


_VALID = st.fixed_dictionaries({}, optional={
    "out_dir": st.just("assets"), "provider": _some(_PROVIDER), "defaults": _some(_PARAMS),
    "vars": st.dictionaries(_text, _text, max_size=2), "cache": st.just({}),
    "images": st.dictionaries(st.sampled_from(["a", "b-1", "c.d", "B_2"]), _some(_TARGET), max_size=3),
})


# Per field: the edges of its range or choice, and what a lax model would take for its type.
_EDGE_OF: dict[str, list[Any]] = {
    "concurrency": [0, 1, 64, 65, -1, 4.0, True, "4"], "max_retries": [-1, 0, 20, 21, 4.0, True],
    "timeout": [0, 0.0, -0.0, -1, 1e-300, float("inf"), float("nan"), 2**53, 2**53 + 1, 2**64, True, "600"],
    "confirm_above": [0, -0.0, -1e-300, -1, float("inf"), float("nan"), 2**53 + 1, True, "1"],
    "model": ["", "m", 1], "api_key_env": ["1X", "A\nB", "MY_KEY\n", "", "_", "a-b"],
    "base_url": ["http://x", "HTTP://x", " http://x", "file:///etc", "https:/x", "http://x\n"],
    "name": ["openai", "OpenAI", "other", "placeholder\n"], "out_dir": ["", 1, "assets\n"],
    "output_compression": [-1, 0, 100, 101, True, 50.0], "n": [0, 1, 10, 11, True, 1.0],
    "revision": [-1, 0, 2**64, True], "candidates": [1, 2, 10, 11, True], "pinned": [0, 1, "true"],
    "size": ["auto", "AUTO", 1024, ""], "quality": ["ultra", "LOW", ""], "output_format": ["gif", "jpg", "PNG"],
    "background": ["clear", ""], "moderation": ["high", ""],
    "images": [[], ["a.png"] * 16, ["a.png"] * 17, "a.png", [1]], "extra": [{}, [], "x"],
    "remote": ["file:///tmp/x", "ftp://x"], "prices": [{}, {"per_image": 0.1}],
}
_KEYS_OF = {"top": ["out_dir", "provider", "defaults", "vars", "cache", "images", "bogus"],
            "provider": [*_PROVIDER, "bogus"], "defaults": [*_PARAMS, "prompt"], "vars": ["style", "x"],
            "cache": ["remote", "bucket"], "images": ["a", "hero\n", "-x", "é", ""],
            "target": [*_TARGET, "from", "sheet", "colour"]}


@st.composite
def _manifests(draw: Any) -> dict[str, Any]:
    raw = draw(_VALID)
    if draw(st.booleans()):
        kinds = [("top", raw), *((k, v) for k, v in raw.items() if isinstance(v, dict)),
                 *(("target", t) for t in raw.get("images", {}).values())]
        kind, table = draw(st.sampled_from(kinds))
        key = draw(st.sampled_from(sorted({*table, *_KEYS_OF[kind]})))
        table[key] = draw(st.one_of(st.sampled_from(_EDGE_OF.get(key, _EDGES)), _edge))
    return raw


def _judged_as_the_models_judge_it(raw: dict[str, Any]) -> bool:
    """Whether the quick check took ``raw``; asserts it took only what the models accept, and read
    it as they do."""
    from pydantic import ValidationError

    from imgbuild.manifest import ManifestFile
    from imgbuild.tablecheck import _PROVIDER_SURE, plain_manifest

    quick = plain_manifest(raw)
    try:
        model = ManifestFile.model_validate(raw)
    except ValidationError:
        assert quick is None, raw
        return False
    if quick is None:
        return False  # a doubt: pydantic decides, as before
    manifest, provider, tables = quick
    assert (manifest.out_dir, manifest.vars) == (model.out_dir, model.vars)
    assert manifest.defaults.model_dump(exclude_none=True) == model.defaults.model_dump(exclude_none=True)
    for field in _PROVIDER_SURE:
        assert getattr(provider, field) == getattr(model.provider, field), field
    assert provider.prices.model_dump() == {k: v for k, v in model.provider.prices.model_dump().items() if v is not None}
    assert {n: t.model_dump(exclude_none=True) for n, t in tables.items()} == {
        n: t.model_dump(exclude_none=True) for n, t in model.images.items()}
    assert list(tables) == list(model.images)
    return True


def test_every_edge_of_every_field_is_judged_as_the_models_judge_it() -> None:
    taken = 0
    for kind in ("top", "provider", "defaults", "vars", "cache", "images", "target"):
        for key in _KEYS_OF[kind]:
            for value in [*_EDGE_OF.get(key, []), *_EDGES]:
                raw: dict[str, Any] = {"provider": {"name": "placeholder"}, "images": {"a": {"prompt": "x"}}}
                table = {"top": raw, "images": raw["images"], "target": raw["images"]["a"]}.get(kind)
                if table is None:
                    table = raw.setdefault(kind, {})
                table[key] = value
                taken += _judged_as_the_models_judge_it(raw)
    assert taken > 100  # the quick check does take valid manifests


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(raw=_manifests())
def test_the_pydantic_free_check_accepts_only_manifests_the_models_accept_and_reads_them_the_same(
        raw: dict[str, Any]) -> None:
    _judged_as_the_models_judge_it(raw)


RICH = """
out_dir = "assets"

[provider]
name = "compatible"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "MY_KEY"
concurrency = 2
timeout = 30
confirm_above = 0.5

[defaults]
quality = "low"
size = "1536x1024"
extra = { user = "me" }

[vars]
style = "flat art"

[images.hero]
prompt = "a knight, ${style}"
output_format = "jpeg"

[images.sheet]
prompt_file = "prompts/sheet.md"
n = 3
revision = 2

[images.crowned]
prompt = "the knight, crowned"
images = ["art/crown.png", "assets/hero.jpg"]
mask = "art/mask.png"
extra = { input_fidelity = "high" }

[images.kept]
prompt = "kept"
pinned = true
candidates = 3
output = "art/kept.webp"
output_compression = 80
"""


def test_a_valid_manifest_resolves_without_pydantic_to_the_targets_pydantic_gives(project: Project,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from imgbuild import tablecheck
    from imgbuild.resolve import Overrides, resolve, resolve_plain

    project.manifest(RICH)
    project.write("prompts/sheet.md", "a sheet of ${style} icons")
    project.png("art/crown.png", size=(64, 64))
    project.png("art/mask.png", size=(64, 64))
    raw = tomllib.loads(RICH)
    quick = resolve_plain(raw, project.root, "images.toml", Overrides())
    assert quick is not None
    monkeypatch.setattr(tablecheck, "plain_manifest", lambda raw: None)  # pydantic's path alone
    full = resolve(raw, project.root, "images.toml", Overrides())
    assert full.manifest.__class__.__name__ == "ManifestFile"
    assert quick.targets == full.targets
    assert quick.settings == full.settings
    assert quick.preset is full.preset


def test_check_of_a_valid_manifest_never_imports_pydantic(project: Project) -> None:
    project.manifest(RICH.replace('name = "compatible"', 'name = "placeholder"'))
    project.write("prompts/sheet.md", "a sheet of ${style} icons")
    project.png("art/crown.png", size=(64, 64))
    project.png("art/mask.png", size=(64, 64))
    code = ("import sys\nfrom imgbuild import cli\ncode = cli.main(['-C', sys.argv[1], 'check'])\n"
            "print(code, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(project.root)], capture_output=True, text=True,
                         env=project.env, check=True).stdout
    assert out.splitlines()[-1] == "1 False"  # not built: not ok, and said without pydantic


def test_a_problem_in_a_manifest_of_valid_tables_is_reported_as_pydantics_path_reports_it(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild import tablecheck

    project.manifest(RICH)  # its prompt file and input images are missing
    quick = project.run_in_process("check")
    monkeypatch.setattr(tablecheck, "plain_manifest", lambda raw: None)
    full = project.run_in_process("check")
    assert quick.code == full.code == 2
    assert quick.err == full.err
    assert "prompts/sheet.md" in quick.err
