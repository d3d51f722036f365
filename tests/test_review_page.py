"""`imgbuild review` writes a static page that opens from disk: one card per target with its image,
state and reason (status's own words), takes, and earlier images still in the cache under older
specs; thumbnails are made once per content digest. It builds nothing and changes nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from apiserver import KEY_ENV
from conftest import Project
from reviewkit import PAGE, PageReader, built_game, game, read_page  # noqa: F401 - fixtures



def read(project: Project) -> PageReader:
    return read_page((project.root / PAGE).read_text(encoding="utf-8"))


def test_the_page_has_one_card_per_target_with_its_state(game: Project) -> None:
    result = game.run("review", "--provider", "placeholder")
    assert result.code == 0, result.err
    assert PAGE in result.out
    page = read(game)
    names = [line.split()[0] for line in game.run("status", "--provider", "placeholder").out.splitlines()]
    assert sorted(page.cards) == sorted(names)
    assert all(page.text(n).split()[1] == "ok" for n in names)


def test_every_link_of_the_static_page_resolves_to_a_file(game: Project) -> None:
    game.manifest((game.root / "images.toml").read_text().replace("A short steel sword", "A short bronze sword"))
    assert game.build("--provider", "placeholder").code == 0  # earlier images: links into the cache
    assert game.run("review", "--provider", "placeholder").code == 0
    page_dir = game.root / PAGE
    links = read(game).links
    assert any(link.startswith("file:") for link in links)  # takes and earlier images: cache objects
    missing = []
    for link in links:
        url = urlparse(link)
        if url.scheme == "data":  # the empty icon: the page asks nothing of anyone for it
            continue
        path = Path(unquote(url.path)) if url.scheme == "file" else page_dir.parent / unquote(link)
        assert url.scheme in ("", "file"), link  # nothing from the network
        if not path.is_file():
            missing.append(link)
    assert missing == []


def test_each_card_shows_its_outputs_thumbnail_named_by_their_digest(game: Project) -> None:
    game.run("review", "--provider", "placeholder")
    page = read(game)
    lock = game.lock()["targets"]
    for name, entry in lock.items():
        images = [o for o in entry["outputs"] if not o["path"].endswith(".json")]  # a sheet's atlas: a link
        shown = page.shas(name)[: len(images)]
        assert shown == [o["sha256"] for o in images]
        for sha, output in zip(shown, images):
            assert hashlib.sha256(game.read(output["path"])).hexdigest() == sha
            assert (game.root / ".imgbuild/review/thumbs" / sha[:2] / f"{sha}.webp").is_file()


def test_earlier_images_under_an_older_spec_say_what_changed_in_the_words_of_status(game: Project) -> None:
    old = game.lock()["targets"]["tileset"]["outputs"][0]["sha256"]
    game.manifest((game.root / "images.toml").read_text().replace('quality = "high"', 'quality = "medium"'))
    said = [line for line in game.run("status", "--provider", "placeholder").out.splitlines()
            if line.startswith("tileset ")][0].split(None, 2)[2]
    assert said == "quality: high → medium"
    assert game.build("--provider", "placeholder").code == 0
    game.run("review", "--provider", "placeholder")
    page = read(game)
    assert said in page.text("tileset")
    assert old in page.shas("tileset")
    assert "earlier images" not in page.text("slime")  # one spec only: nothing earlier


def test_a_revert_shows_the_other_spec_as_earlier_not_itself(game: Project) -> None:
    text = (game.root / "images.toml").read_text()
    game.manifest(text.replace("A green slime", "A blue slime"))
    game.build("--provider", "placeholder")
    game.manifest(text)
    assert game.build("--provider", "placeholder").requests == 0
    game.run("review", "--provider", "placeholder")
    page = read(game)
    earlier = page.text("slime").split("earlier images, under older specs")
    assert len(earlier) == 2 and "prompt" in earlier[1]
    assert len(page.shas("slime")) == 2


def test_thumbnails_are_made_once(game: Project) -> None:
    game.run("review", "--provider", "placeholder")
    thumbs = sorted((game.root / ".imgbuild/review/thumbs").rglob("*.webp"))
    before = {p: p.stat().st_mtime_ns for p in thumbs}
    assert len(thumbs) == len({p.stem for p in thumbs}) > 0
    game.run("review", "--provider", "placeholder")
    assert {p: p.stat().st_mtime_ns for p in (game.root / ".imgbuild/review/thumbs").rglob("*.webp")} == before


def test_review_changes_no_output_lock_or_manifest(game: Project) -> None:
    before = game.snapshot()
    assert game.run("review", "--provider", "placeholder").code == 0
    assert game.snapshot() == before


def test_a_target_never_built_has_a_card_that_says_so(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "placeholder"
        [images.logo]
        prompt = "a logo"
    """)
    assert project.run("review").code == 0
    page = read(project)
    assert "new" in page.text("logo").split()
    assert "not on disk nor in the cache" in page.text("logo")


def test_the_build_remembers_each_new_lock_entry_once(game: Project) -> None:
    history = game.root / ".imgbuild/history.jsonl"
    lines = history.read_text().splitlines()
    assert len(lines) == len(game.lock()["targets"])  # one per target built
    game.build("--provider", "placeholder")  # nothing to do
    game.run("clean")
    game.build("--provider", "placeholder")  # restored as locked: the same entries
    assert history.read_text().splitlines() == lines


def test_open_hands_the_page_to_the_browser(game: Project, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > "{opened}"\n')
    browser.chmod(0o755)
    result = game.run("review", "--open", "--provider", "placeholder", env={"BROWSER": str(browser)})
    assert result.code == 0, result.err
    assert opened.read_text().strip() == (game.root / PAGE).resolve().as_uri()


def test_a_page_of_takes_and_edits_built_against_the_api_links_only_to_files(start_api_server: Any,
                                                                             project: Project) -> None:
    server = start_api_server("openai", distinct_images=True)
    project.png("art/base.png")
    project.manifest(f"""
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        [images.hero]
        prompt = "a knight"
        candidates = 3
        output = "assets/hero.png"
        [images.crowned]
        prompt = "the knight, crowned"
        images = ["assets/hero.png", "art/base.png"]
    """)
    env = {KEY_ENV: server.key}
    assert project.build(env=env).code == 0
    result = project.run("review", env=env)
    assert result.code == 0, result.err
    assert len(server.api_requests()) == 2  # the page itself asked for nothing
    page = read(project)
    takes = [t["sha256"] for t in project.lock()["targets"]["hero"]["takes"]]
    assert page.shas("hero")[1:] == takes and "3 takes, none picked" in page.text("hero")
    assert "art/base.png" in page.text("crowned") and "assets/hero.png" in page.text("crowned")
    page_dir = project.root / PAGE
    for link in page.links:
        url = urlparse(link)
        if url.scheme != "data":
            path = Path(unquote(url.path)) if url.scheme == "file" else page_dir.parent / unquote(link)
            assert path.is_file(), link


def test_json_says_where_the_page_is(game: Project) -> None:
    result = game.run("review", "--json", "--provider", "placeholder")
    assert result.code == 0, result.err
    (event,) = result.events
    assert event == {"event": "review", "path": str(game.root / PAGE), "targets": len(game.lock()["targets"])}
