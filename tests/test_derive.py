"""Derived targets in whole builds (issue 11's acceptance): the CLI in a subprocess, counting the
requests a real provider received, and what each build left on disk, in the lock and printed."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from apiserver import KEY_ENV
from conftest import Project

CHAIN = """
    [images.knight]
    prompt = "A knight, side view"
    size = "1024x1024"
    background = "transparent"
    output = "art/knight.png"

    [images.knight-trim]
    from = "art/knight.png"
    trim = true
    padding = 4
    output = "sprites/knight-trim.png"

    [images.knight-small]
    from = "sprites/knight-trim.png"
    resize = "128x"
    output = "sprites/knight.png"

    [images.shield]
    from = "art/shield.png"
    resize = "x64"
    output = "sprites/shield.png"

    [images.characters]
    sheet = ["sprites/knight.png", "sprites/shield.png"]
    padding = 2
    output = "game/characters.png"
    """

WEB = """
    [provider]
    name = "placeholder"

    [images.hero]
    prompt = "A lighthouse on a cliff at dusk"
    size = "1536x1024"
    output = "art/hero.png"

    [images.hero-640]
    from = "art/hero.png"
    resize = "640x"
    output = "site/hero-640.webp"

    [images.hero-1280]
    from = "art/hero.png"
    resize = "1280x"
    output = "site/hero-1280.webp"

    [images.card]
    from = "art/hero.png"
    resize = "1200x630"
    output = "site/card.jpg"
    """


@functools.cache
def _web_built() -> Project:
    """WEB, built once for the module with the placeholder."""
    base = Path(tempfile.mkdtemp(prefix="imgbuild-derive-web-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    built = Project(base / "proj", base / "cache")
    built.root.mkdir()
    built.manifest(WEB)
    assert built.build().code == 0
    return built


def _built_web(project: Project) -> None:
    """Make ``project`` (and its cache) a copy of WEB as its first build left it: what a test of
    the builds after that one starts from."""
    built = _web_built()
    shutil.copytree(built.root, project.root, dirs_exist_ok=True)
    shutil.copytree(built.cache, project.cache, dirs_exist_ok=True)


def _says(out: str) -> list[str]:
    """The lines of a status, with the columns' padding squeezed to one space."""
    return [" ".join(line.split()) for line in out.splitlines()]


def _built(result: Any) -> list[str]:
    return sorted(e["target"] for e in result.events if e.get("event") == "built")


def test_a_generate_trim_resize_sheet_chain_builds_with_exactly_one_request(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.png("art/shield.png", size=(96, 128))
    project.manifest(f"""
        [provider]
        name = "compatible"
        base_url = "{server.base_url}"
        api_key_env = "{KEY_ENV}"
        """ + CHAIN)

    result = project.build(env={KEY_ENV: server.key})

    assert result.code == 0, result.err
    assert len(server.api_requests()) == 1
    assert _built(result) == ["characters", "knight", "knight-small", "knight-trim", "shield"]
    atlas = json.loads(project.read("game/characters.json"))
    assert sorted(atlas["frames"]) == ["knight", "shield"]
    assert atlas["frames"]["knight"]["frame"]["w"] == 128
    assert atlas["frames"]["shield"]["frame"]["h"] == 64
    assert project.run("check").code == 0


def test_changing_a_resize_width_rebuilds_only_that_derived_target_without_a_request(project: Project) -> None:
    _built_web(project)
    project.manifest(WEB.replace('resize = "640x"', 'resize = "800x"'))

    status = project.run("status")
    result = project.build()

    assert "hero-640 changed resize: 640x → 800x" in _says(status.out)
    assert result.code == 0, result.err
    assert result.requests == 0
    assert _built(result) == ["hero-640"]
    assert result.summary["up_to_date"] == 3


def test_changing_the_source_prompt_makes_one_request_and_derives_every_dependent_again(project: Project) -> None:
    _built_web(project)
    project.manifest(WEB.replace("at dusk", "at dawn"))

    status = project.run("status")
    result = project.build()

    assert "hero-640 upstream input art/hero.png comes from hero, which will be rebuilt" in _says(status.out)
    assert result.requests == 1
    assert _built(result) == ["card", "hero", "hero-1280", "hero-640"]
    assert project.run("status").out.count(" ok") == 4


def test_a_deleted_derived_output_comes_back_with_identical_bytes_and_no_request(project: Project) -> None:
    _built_web(project)
    before = project.read("site/card.jpg")
    (project.root / "site/card.jpg").unlink()

    status = project.run("status")
    result = project.build()

    assert "card restore site/card.jpg is missing" in _says(status.out)
    assert result.requests == 0 and result.summary["restored"] == 1
    assert project.read("site/card.jpg") == before


def test_a_derived_target_made_again_without_the_cache_has_the_same_bytes(make_project: Any) -> None:
    first = make_project("first", cache="cache-1")
    _built_web(first)
    second = make_project("second", cache="cache-2")
    second.manifest(WEB)

    assert second.build().code == 0
    for rel in ("site/hero-640.webp", "site/hero-1280.webp", "site/card.jpg"):
        assert first.read(rel) == second.read(rel), rel


def test_an_input_edited_by_hand_names_it_as_the_reason(project: Project) -> None:
    project.png("art/logo.png", size=(300, 200))
    project.manifest("""
        [images.logo-small]
        from = "art/logo.png"
        resize = "30x"
        output = "site/logo.png"
        """)
    assert project.build().code == 0
    project.png("art/logo.png", size=(300, 200), color=(0, 0, 255, 255))

    status = project.run("status")

    assert "logo-small changed input art/logo.png" in _says(status.out)


def test_a_dry_run_shows_derived_targets_at_no_cost_and_builds_nothing(start_api_server: Any,
                                                                    project: Project) -> None:
    server = start_api_server("openai")
    project.png("art/logo.png", size=(300, 200))
    project.manifest(f"""
        [provider]
        name = "compatible"
        base_url = "{server.base_url}"
        api_key_env = "{KEY_ENV}"

        [images.logo-small]
        from = "art/logo.png"
        resize = "30x"
        output = "site/logo.png"
        """)

    result = project.run("build", "-n", env={KEY_ENV: server.key})

    assert result.code == 0, result.err
    assert "logo-small new $0.00" in _says(result.out)
    assert "plan: 0 request(s) at most and 1 derived target(s) made locally, free, estimated $0.00" in result.out
    assert not (project.root / "site/logo.png").exists()
    assert server.api_requests() == []


def test_an_image_only_failure_fails_that_target_in_one_line_and_keep_going_builds_the_rest(
        project: Project) -> None:
    project.png("art/logo.png", size=(300, 200))
    project.png("art/empty.png", size=(50, 50), color=(0, 0, 0, 0))
    project.manifest("""
        [images.too-far]
        from = "art/logo.png"
        crop = [200, 0, 200, 100]
        [images.nothing-left]
        from = "art/empty.png"
        trim = true
        [images.fine]
        from = "art/logo.png"
        resize = "30x"
        """)

    result = project.run("build", "-k")

    assert result.code == 1
    lines = [line for line in (result.out + result.err).splitlines() if "too-far" in line and "300x200" in line]
    assert lines == ["failed    too-far: crop [200, 0, 200, 100] reaches outside art/logo.png, "
                     "which is 300x200"]
    assert any("nothing-left" in line and "50x50" in line and "transparent" in line
               for line in (result.out + result.err).splitlines())
    assert (project.root / "build/images/fine.png").exists()
    assert not (project.root / "build/images/too-far.png").exists()


def test_derived_work_is_not_held_behind_requests_in_flight(project: Project) -> None:
    for i in range(4):
        project.png(f"art/icon-{i}.png", size=(64, 64))
    project.manifest("""
        [provider]
        name = "placeholder"
        [images.a-slow]
        prompt = "slow one"
        [images.b-slow]
        prompt = "slow two"
        """ + "".join(f"""
        [images.icon-{i}]
        from = "art/icon-{i}.png"
        resize = "32x32"
        """ for i in range(4)))

    result = project.build("-j", "1", env={"IMGBUILD_PLACEHOLDER_DELAY": "1.5"})

    assert result.code == 0, result.err
    built = [e["target"] for e in result.events if e.get("event") == "built"]
    assert sorted(built[:4]) == [f"icon-{i}" for i in range(4)], built


def test_an_edit_elsewhere_validates_only_that_table_and_keeps_the_derived_targets(project: Project,
                                                                                 tmp_path: Any) -> None:
    other = """
    [images.other]
    prompt = "a fox"
    """
    project.manifest(WEB + other)
    assert project.build().code == 0
    project.manifest(WEB + other.replace("a fox", "a fox asleep"))
    trace = tmp_path / "validated"

    result = project.build(env={"IMGBUILD_TRACE_VALIDATION": str(trace)})

    assert trace.read_text().split() == ["other"]  # the derived targets came from the last build's state
    assert _built(result) == ["other"]
    assert result.summary["up_to_date"] == 4
    assert project.run("check").code == 0
