"""Candidates and picking (issue 12, parts 1 and 2), against the local API server: what it
received, what the lock and the outputs hold, and what status says."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from apiserver import KEY_ENV, ApiServer
from conftest import Project

HERO = """
[images.hero]
prompt = "{prompt}"
candidates = 3
output = "{output}"
"""


def _compatible(project: Project, server: ApiServer, targets: str) -> None:
    project.manifest(f"""
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        """ + targets)


def _hero(prompt: str = "a knight on a hill", output: str = "assets/hero.png", more: str = "") -> str:
    return HERO.format(prompt=prompt, output=output) + more


def _env(server: ApiServer) -> dict[str, str]:
    return {KEY_ENV: server.key}


def _entry(project: Project, name: str = "hero") -> dict[str, Any]:
    return project.lock()["targets"][name]  # type: ignore[no-any-return]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _takes(project: Project) -> list[str]:
    return [t["sha256"] for t in _entry(project)["takes"]]


def _cached(project: Project, sha: str) -> bytes:
    from imgbuild.cache import LocalCache

    return LocalCache(project.cache).object_path(sha).read_bytes()


def _status(project: Project, server: ApiServer, name: str = "hero") -> str:
    result = project.run("status", name, env=_env(server))
    assert result.code == 0, result.err
    return result.out.strip()


@pytest.fixture
def server(start_api_server: Any) -> ApiServer:
    return start_api_server("openai", distinct_images=True)  # type: ignore[no-any-return]


@pytest.fixture
def built(server: ApiServer, project: Project) -> Project:
    """A project whose `hero` has 3 takes, none picked."""
    _compatible(project, server, _hero())
    result = project.build(env=_env(server))
    assert result.code == 0, result.err
    return project


# -- candidates ------------------------------------------------------------------------------------

def test_candidates_on_openai_is_one_request_of_n_k(server: ApiServer, project: Project) -> None:
    _compatible(project, server, _hero())
    result = project.build(env=_env(server))
    assert result.code == 0, result.err
    assert [r.fields["n"] for r in server.api_requests()] == [3]
    takes = _takes(project)
    assert takes == server.served and len(set(takes)) == 3
    assert all(_sha(_cached(project, sha)) == sha for sha in takes)
    entry = _entry(project)
    assert entry["outputs"][0]["sha256"] == takes[0] == _sha(project.read("assets/hero.png"))
    assert "pick" not in entry and entry["params"]["candidates"] == 3


def test_candidates_on_aimlapi_are_k_requests_of_one(start_api_server: Any, project: Project) -> None:
    server = start_api_server("aimlapi", distinct_images=True)
    project.manifest('[provider]\nname = "aimlapi"\n' + _hero())
    env = {"AIMLAPI_API_KEY": server.key, "IMGBUILD_BASE_URL": server.base_url}
    result = project.build(env=env)
    assert result.code == 0, result.err
    assert [r.fields["n"] for r in server.api_requests()] == [1, 1, 1]
    assert sorted(_takes(project)) == sorted(server.served) and len(set(server.served)) == 3


def test_candidates_with_n_above_one_is_a_manifest_error(server: ApiServer, project: Project) -> None:
    _compatible(project, server, _hero(more="n = 2\n"))
    result = project.build(env=_env(server))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "images.toml: images.hero.candidates: candidates and n = 2 do not go together: candidates asks for "
        "takes of one image to pick from; remove one of them"]
    assert server.api_requests() == [] and not (project.root / "assets").exists()


def test_candidates_is_part_of_the_spec(server: ApiServer, project: Project) -> None:
    _compatible(project, server, _hero().replace("candidates = 3\n", ""))
    assert project.build(env=_env(server)).code == 0
    _compatible(project, server, _hero())
    assert _status(project, server).split(None, 2)[1:] == ["changed", "candidates: — → 3"]


def test_status_says_how_many_takes_and_none_picked(built: Project, server: ApiServer) -> None:
    assert _status(built, server).split(None, 2)[1:] == ["ok", "3 takes, none picked"]


# -- pick ------------------------------------------------------------------------------------------

def test_pick_copies_the_take_to_the_output_with_no_request(built: Project, server: ApiServer) -> None:
    takes = _takes(built)
    result = built.run("pick", "hero", "2", env=_env(server))
    assert result.code == 0, result.err
    assert result.out.strip() == "picked hero: take 2 of 3 is now assets/hero.png"
    assert len(server.api_requests()) == 1
    assert _sha(built.read("assets/hero.png")) == takes[1]
    entry = _entry(built)
    assert entry["pick"] == 2 and entry["outputs"][0]["sha256"] == takes[1] and _takes(built) == takes
    assert _status(built, server).split(None, 2)[1:] == ["ok", "take 2 of 3"]
    assert built.build(env=_env(server)).requests == 0


def test_a_pick_makes_the_targets_that_use_the_output_stale(built: Project, server: ApiServer) -> None:
    _compatible(built, server, _hero(more='[images.crowned]\nprompt = "add a crown"\nimages = ["assets/hero.png"]\n'))
    assert built.build(env=_env(server)).code == 0
    assert built.run("pick", "hero", "3", env=_env(server)).code == 0
    assert _status(built, server, "crowned").split(None, 2)[1:] == ["changed", "input assets/hero.png"]
    rebuilt = built.build(env=_env(server))
    assert rebuilt.requests == 1 and server.api_requests()[-1].files[0][3] == _takes(built)[2]


def test_a_pick_survives_reformatting_the_manifest(built: Project, server: ApiServer) -> None:
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    text = (built.root / "images.toml").read_text()
    (built.root / "images.toml").write_text("# art direction\n" + text.replace("candidates = 3", "candidates   =   3  # takes"))
    assert _status(built, server).split(None, 2)[1:] == ["ok", "take 2 of 3"]
    assert built.build(env=_env(server)).requests == 0


def test_a_pick_survives_an_output_rename(built: Project, server: ApiServer) -> None:
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    _compatible(built, server, _hero(output="art/knight.png"))
    result = built.build(env=_env(server))
    assert result.code == 0 and result.requests == 0
    assert _sha(built.read("art/knight.png")) == _takes(built)[1]
    assert _entry(built)["pick"] == 2
    assert _status(built, server).split(None, 2)[1:] == ["ok", "take 2 of 3"]


def test_a_spec_change_asks_for_new_takes_and_says_the_pick_no_longer_applies(
        built: Project, server: ApiServer) -> None:
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    _compatible(built, server, _hero(prompt="a knight in the rain"))
    assert _status(built, server).split(None, 2)[1:] == [
        "changed", "prompt; the pick of take 2 no longer applies: pick again from the new takes"]
    result = built.build(env=_env(server))
    assert result.requests == 1
    entry = _entry(built)
    assert "pick" not in entry and _sha(built.read("assets/hero.png")) == _takes(built)[0]
    assert _status(built, server).split(None, 2)[1:] == ["ok", "3 takes, none picked"]


def test_a_revert_to_a_picked_spec_brings_the_picked_take_back_for_free(built: Project, server: ApiServer) -> None:
    first = _takes(built)
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    _compatible(built, server, _hero(prompt="a knight in the rain"))
    assert built.build(env=_env(server)).requests == 1
    _compatible(built, server, _hero())
    result = built.build(env=_env(server))
    assert result.code == 0 and result.requests == 0 and result.summary["restored"] == 1
    assert _sha(built.read("assets/hero.png")) == first[1]
    assert _entry(built)["pick"] == 2 and _takes(built) == first
    assert _status(built, server).split(None, 2)[1:] == ["ok", "take 2 of 3"]


def test_a_forced_rebuild_brings_new_takes_and_drops_their_pick(built: Project, server: ApiServer) -> None:
    old = _takes(built)
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    result = built.build("-B", env=_env(server))
    assert result.requests == 1
    assert not set(_takes(built)) & set(old) and "pick" not in _entry(built)
    assert _status(built, server).split(None, 2)[1:] == ["ok", "3 takes, none picked"]


@pytest.mark.parametrize(("args", "message"), [
    (["hero", "4"], "error: hero has 3 takes: pick one of 1 to 3, not 4"),
    (["zzz", "1"], "error: no target named zzz in images.toml"),
    (["plain", "1"], "error: plain has no candidates: pick chooses among the takes of a target with "
                     "`candidates = K` in images.toml"),
])
def test_pick_refuses_a_bad_target_or_take_in_one_line(
        built: Project, server: ApiServer, args: list[str], message: str) -> None:
    _compatible(built, server, _hero(more='[images.plain]\nprompt = "a plain shield"\n'))
    lock = (built.root / "images.lock").read_bytes()
    result = built.run("pick", *args, env=_env(server))
    assert (result.code, result.err.strip()) == (2, message)
    assert (built.root / "images.lock").read_bytes() == lock


def test_pick_before_the_takes_are_built_says_build_first(server: ApiServer, project: Project) -> None:
    _compatible(project, server, _hero())
    result = project.run("pick", "hero", "1", env=_env(server))
    assert (result.code, result.err.strip()) == (
        2, "error: hero has no takes for its current spec yet: build it first (imgbuild build hero)")


def test_pick_leaves_a_hand_edited_output_alone(built: Project, server: ApiServer) -> None:
    built.png("assets/hero.png", size=(32, 32))
    touched = built.read("assets/hero.png")
    result = built.run("pick", "hero", "2", env=_env(server))
    assert result.code == 2 and "assets/hero.png was edited by hand" in result.err
    assert built.read("assets/hero.png") == touched and "pick" not in _entry(built)


def test_check_require_picks_fails_until_every_candidates_target_is_picked(
        built: Project, server: ApiServer) -> None:
    assert built.run("check", env=_env(server)).code == 0
    unpicked = built.run("check", "--require-picks", env=_env(server))
    assert unpicked.code == 1
    assert "check: hero: 3 takes, none picked; choose one with `imgbuild pick hero K`" in unpicked.err
    assert built.run("pick", "hero", "1", env=_env(server)).code == 0
    assert built.run("check", "--require-picks", env=_env(server)).code == 0


@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("check", "hero"), ("build",)], ids=" ".join)
def test_the_no_op_fast_path_says_what_the_full_path_says_of_takes(
        built: Project, server: ApiServer, args: tuple[str, ...]) -> None:
    from test_fastpath import _age, _full, _probe

    _age(built)
    assert built.run("status", env=_env(server)).code == 0  # all ok: the no-op answer is recorded
    fast, path = _probe(built, *args, env=_env(server))
    assert path == "fast"
    full = _full(built, *args, env=_env(server))
    assert (fast.code, fast.out, fast.err) == (full.code, full.out, full.err)


def test_the_no_op_fast_path_falls_back_after_a_pick(built: Project, server: ApiServer) -> None:
    from test_fastpath import _age, _probe

    _age(built)
    assert built.run("status", env=_env(server)).code == 0  # all ok: the no-op answer is recorded
    fast, path = _probe(built, "status", env=_env(server))
    assert path == "fast" and fast.out.split(None, 2)[2].strip() == "3 takes, none picked"
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    after, path = _probe(built, "status", env=_env(server))
    assert path == "engine" and after.out.split(None, 2)[2].strip() == "take 2 of 3"


def test_project_pick_does_what_the_command_does(built: Project, server: ApiServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild import Project as Library
    from imgbuild.errors import UsageError

    monkeypatch.setenv(KEY_ENV, server.key)
    lib = Library.load(built.root, cache_dir=built.cache)
    lib.pick("hero", 3)
    assert _entry(built)["pick"] == 3 and _sha(built.read("assets/hero.png")) == _takes(built)[2]
    with pytest.raises(UsageError, match="hero has 3 takes"):
        lib.pick("hero", 0)
    assert len(server.api_requests()) == 1


def test_a_hand_edited_output_of_a_candidates_target_is_left_alone_by_a_build(
        built: Project, server: ApiServer) -> None:
    built.png("assets/hero.png", size=(32, 32))
    touched = built.read("assets/hero.png")
    _compatible(built, server, _hero(prompt="a knight in the rain"))
    result = built.build(env=_env(server))
    assert result.requests == 0 and built.read("assets/hero.png") == touched
    assert _status(built, server).split(None, 2)[1] == "modified"


def test_gc_keeps_the_takes_that_were_not_picked(built: Project, server: ApiServer) -> None:
    from imgbuild.cache import LocalCache

    takes = _takes(built)
    assert built.run("pick", "hero", "2", env=_env(server)).code == 0
    assert built.run("gc", "--older-than", "0").code == 0
    assert all(LocalCache(built.cache).has(sha) for sha in takes)


def test_placeholder_takes_differ_and_are_the_same_on_every_build(make_project: Any) -> None:
    first, second = make_project("one", cache="c1"), make_project("two", cache="c2")
    for p in (first, second):
        p.manifest('[provider]\nname = "placeholder"\n' + _hero())
        assert p.build().code == 0
    assert len(set(_takes(first))) == 3 and _takes(first) == _takes(second)


def test_takes_the_cache_cannot_take_are_rescued_not_dropped(start_api_server: Any, project: Project) -> None:
    from test_disk_faults import Disks

    server = start_api_server("openai", distinct_images=True)
    _compatible(project, server, _hero())
    disks = Disks()
    try:
        disks.read_only(project.cache / "objects")
        result = project.build(env=_env(server))
    finally:
        disks.undo()
    assert result.code == 1 and result.requests == 1
    kept = {_sha(p.read_bytes()) for p in (project.root / ".imgbuild" / "rescue" / "hero").iterdir()}
    assert kept | {_sha(project.read("assets/hero.png"))} == set(server.served)


def test_clean_then_build_brings_the_picked_take_back_for_free(built: Project, server: ApiServer) -> None:
    assert built.run("pick", "hero", "3", env=_env(server)).code == 0
    assert built.run("clean").code == 0 and not (built.root / "assets/hero.png").exists()
    result = built.build(env=_env(server))
    assert result.requests == 0 and _sha(built.read("assets/hero.png")) == _takes(built)[2]
    assert _entry(built)["pick"] == 3
