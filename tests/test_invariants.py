"""SPEC §2: what makes a target stale, counted in provider requests."""

from __future__ import annotations

import shutil

from conftest import Project, copy_of_built

CHAIN = """
[provider]
name = "placeholder"

[images.a]
prompt = "a knight"
images = ["art/base.png"]
output = "out/a.png"

[images.b]
prompt = "the knight, crowned"
images = ["out/a.png", "art/crown.png"]
output = "out/b.png"

[images.c]
prompt = "a castle"
output = "out/c.png"
"""


def _inputs(project: Project) -> None:
    project.png("art/base.png", color=(10, 20, 30, 255))
    project.png("art/crown.png", color=(250, 200, 0, 255))


def _chain(project: Project) -> Project:
    """CHAIN built in ``project`` itself: for tests of what the stat of an untouched file proves."""
    project.manifest(CHAIN)
    _inputs(project)
    first = project.build()
    assert first.code == 0, first.err
    assert first.requests == 3
    return project


def _copy_of_chain(project: Project) -> Project:
    """``project`` as :func:`_chain` leaves it: a copy of CHAIN built once (new inodes: its first
    command takes the full path), for tests of what comes after the first build."""
    return copy_of_built(project, CHAIN, _inputs)


def test_nothing_changed_makes_no_request(project: Project) -> None:
    _chain(project)
    assert project.build().requests == 0


def test_reformatting_and_reordering_the_manifest_makes_no_request(project: Project) -> None:
    _copy_of_chain(project)
    reordered = """
    # the same targets, reordered, reformatted and commented
    [images.c]
    output="out/c.png"
    prompt =   'a castle'   # same prompt, other quotes

    [images.b]
    output = "out/b.png"
    images = [ "out/a.png",
               "art/crown.png" ]
    prompt = "the knight, crowned"

    [provider]
    name = "placeholder"

    [images.a]
    images = ["art/base.png"]
    prompt = "a knight"
    output = "out/a.png"
    """
    project.manifest(reordered)
    result = project.build()
    assert result.requests == 0 and result.summary["up_to_date"] == 3


def test_renamed_output_path_comes_from_the_cache(project: Project) -> None:
    _copy_of_chain(project)
    old = project.read("out/c.png")
    project.manifest(CHAIN.replace('output = "out/c.png"', 'output = "renamed/castle.png"'))
    result = project.build()
    assert result.requests == 0 and result.summary["restored"] == 1
    assert project.read("renamed/castle.png") == old


def test_editing_one_input_rebuilds_exactly_its_dependents(project: Project) -> None:
    _copy_of_chain(project)
    project.png("art/base.png", color=(90, 20, 30, 255))
    result = project.build()
    built = sorted(e["target"] for e in result.events if e["event"] == "built")
    assert built == ["a", "b"]
    assert result.requests == 2


def test_editing_an_input_not_used_upstream_rebuilds_only_its_user(project: Project) -> None:
    _copy_of_chain(project)
    project.png("art/crown.png", color=(0, 0, 255, 255))
    result = project.build()
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["b"]
    assert result.requests == 1


def test_touching_an_input_without_changing_it_rebuilds_nothing(project: Project) -> None:
    _chain(project)
    data = project.read("art/base.png")
    (project.root / "art/base.png").write_bytes(data)  # new mtime, same content
    assert project.build().requests == 0


def test_an_upstream_rebuild_with_identical_bytes_stops_there(project: Project) -> None:
    # Early cutoff by content: forcing a placeholder rebuild yields the same bytes,
    # so the dependent's spec is unchanged and it is not rebuilt.
    _copy_of_chain(project)
    result = project.build("-B", "a")
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["a"]
    assert result.requests == 1


def test_reverting_a_change_restores_from_the_cache(project: Project) -> None:
    _copy_of_chain(project)
    original = project.read("out/c.png")
    project.manifest(CHAIN.replace("a castle", "a ruined castle"))
    assert project.build().requests == 1
    assert project.read("out/c.png") != original
    project.manifest(CHAIN)
    result = project.build()
    assert result.requests == 0 and result.summary["restored"] == 1
    assert project.read("out/c.png") == original


def test_clean_then_build_restores_identical_bytes(project: Project) -> None:
    _copy_of_chain(project)
    before = {p: project.read(p) for p in ("out/a.png", "out/b.png", "out/c.png")}
    assert project.run("clean").code == 0
    assert not (project.root / "out/a.png").exists()
    result = project.build()
    assert result.requests == 0 and result.summary["restored"] == 3
    assert {p: project.read(p) for p in before} == before


def test_rm_of_outputs_restores_without_requests(project: Project) -> None:
    _copy_of_chain(project)
    shutil.rmtree(project.root / "out")
    result = project.build()
    assert result.requests == 0 and result.summary["restored"] == 3


def test_fresh_clone_with_the_cache_restores_without_requests(make_project) -> None:  # type: ignore[no-untyped-def]
    original = _copy_of_chain(make_project("original"))
    clone = make_project("clone")
    for rel in ("images.toml", "images.lock", "art/base.png", "art/crown.png"):
        (clone.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(original.root / rel, clone.root / rel)
    result = clone.build()
    assert result.requests == 0 and result.summary["restored"] == 3
    assert clone.read("out/b.png") == original.read("out/b.png")


def test_fresh_clone_with_committed_outputs_and_no_cache_is_up_to_date(make_project) -> None:  # type: ignore[no-untyped-def]
    original = _copy_of_chain(make_project("original"))
    clone = make_project("clone", cache="other-cache").checkout_of(original)
    status = clone.run("check")
    assert status.code == 0, status.out
    assert clone.build().requests == 0


def test_placeholder_to_a_real_provider_changes_every_target(project: Project) -> None:
    _copy_of_chain(project)
    status = project.run("status", "--provider", "openai")
    lines = status.out.splitlines()
    assert len(lines) == 3
    assert any(line.split()[:2] == ["a", "changed"] and "model: placeholder:gpt-image-2 → gpt-image-2" in line
               for line in lines)
    assert all(line.split()[1] in ("changed", "upstream") for line in lines)
    assert [line.split()[1] for line in lines].count("changed") == 2  # a and c; b waits for a


def test_revision_bump_asks_for_a_new_take(project: Project) -> None:
    _copy_of_chain(project)
    project.manifest(CHAIN.replace('prompt = "a castle"', 'prompt = "a castle"\nrevision = 1'))
    status = project.run("status", "c")
    assert "revision: 0 → 1" in status.out
    assert project.build().requests == 1
