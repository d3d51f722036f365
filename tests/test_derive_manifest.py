"""Derived targets in the manifest (issue 11, points 1-4): every bad operation the manifest alone
shows is one located line, exit 2, nothing written; sheets find their frames in the manifest and
in git, never on the disk."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import Project

BASE = """
    [provider]
    name = "placeholder"

    [images.hero]
    prompt = "A lighthouse"
    output = "art/hero.png"
    """


@pytest.mark.parametrize(("table", "line"), [
    ('from = "art/hero.png"\nresize = "0x"',
     "images.toml: images.bad.resize: '0x': an edge of 0 pixels makes no image"),
    ('from = "art/hero.png"\nresize = "640"',
     """images.toml: images.bad.resize: '640': resize is "WxH", "Wx" or "xH" (pixels)"""),
    ('from = "art/hero.png"\nresize = "64x64"\nfit = "stretch"',
     "images.toml: images.bad.fit: 'stretch': input should be 'cover', 'contain', 'fill' or 'inside'"),
    ('from = "art/hero.png"\ncrop = [-1, 0, 10, 10]',
     "images.toml: images.bad.crop: [-1, 0, 10, 10]: x and y start at 0 (the top left corner)"),
    ('from = "art/hero.png"\ncrop = [0, 0, 0, 10]',
     "images.toml: images.bad.crop: [0, 0, 0, 10]: a width or height of 0 crops nothing"),
    ('from = "art/hero.png"\ncrop = [0, 0, 10]',
     "images.toml: images.bad.crop: [0, 0, 10]: crop is [x, y, w, h], four numbers of pixels"),
    ('from = "art/hero.png"\nprompt = "also this"',
     "images.toml: images.bad.prompt: a target with from is made from images, not a prompt: remove prompt, "
     "or make the prompt a target of its own"),
    ('from = "art/nothing.png"',
     "images.toml: images.bad.from: art/nothing.png does not exist and no target makes it"),
    ("sheet = []",
     "images.toml: images.bad.sheet: sheet = [] packs nothing: name the images (or a glob) to pack"),
    ('from = "art/hero.png"\nsize = "1024x1024"',
     "images.toml: images.bad.size: size is a request field; this target is derived (from), made locally: "
     "remove it"),
    ('from = "art/hero.png"\ncandidates = 3',
     "images.toml: images.bad.candidates: candidates is a request field; this target is derived (from), made "
     "locally: remove it"),
    ('prompt = "a request"\nresize = "64x"',
     "images.toml: images.bad.resize: resize is an operation of a derived target (from or sheet); this "
     "target is a request (prompt): remove it, or derive a target from it"),
    ('from = "art/hero.png"\nfit = "contain"',
     "images.toml: images.bad.fit: fit says how resize fits; there is no resize"),
    ('from = "art/hero.png"\npadding = 4',
     "images.toml: images.bad.padding: padding goes around a trimmed image: add trim = true, or remove it"),
    ('sheet = ["art/hero.png"]\noutput = "game/sheet.webp"',
     "images.toml: images.bad.output: a sheet is a PNG, not webp"),
    ('from = "art/hero.png"\nmatte = "#000000"',
     "images.toml: images.bad.matte: png keeps transparency (and contain pads it transparent): matte is for "
     "jpeg output; remove it"),
    ('sheet = ["sprites/*.png"]',
     "images.toml: images.bad.sheet[0]: sprites/*.png matches no declared output and no committed file"),
])
def test_a_bad_operation_is_one_located_line_and_nothing_is_written(project: Project, table: str, line: str) -> None:
    project.manifest(BASE + "[images.bad]\n" + table + "\n")

    result = project.run("build")

    assert result.code == 2
    assert result.err.splitlines() == [line]
    assert sorted(p.name for p in project.root.iterdir()) == ["images.toml"]


def test_two_frames_with_one_stem_are_a_manifest_error(project: Project) -> None:
    project.png("a/knight.png")
    project.png("b/knight.png")
    project.manifest(BASE + '[images.pack]\nsheet = ["a/knight.png", "b/knight.png"]\n')

    result = project.run("build")

    assert result.code == 2
    assert result.err.splitlines() == [
        "images.toml: images.pack.sheet: two frames are named knight (a/knight.png and b/knight.png): a frame's "
        "name is its file's stem; rename one"]


def _git(project: Project, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=project.root, check=True,
                   capture_output=True)


def test_a_sheet_glob_matches_declared_images_and_committed_files_never_other_files_on_disk(
        project: Project) -> None:
    project.png("sprites/committed.png", size=(8, 8))
    project.manifest(BASE + """
        [images.made]
        from = "art/hero.png"
        resize = "16x"
        output = "sprites/made.png"

        [images.small-sheet]
        sheet = ["sprites/committed.png"]
        output = "sprites/small.png"    # and its atlas, sprites/small.json: not an image, not a frame

        [images.pack]
        sheet = ["sprites/*"]
        output = "game/pack.png"
        """)
    _git(project, "init", "-q")
    _git(project, "add", "sprites/committed.png", "images.toml")
    _git(project, "commit", "-q", "-m", "x")
    project.png("sprites/stray.png", size=(8, 8))  # on disk, neither declared nor committed

    result = project.build()

    assert result.code == 0, result.err
    frames = json.loads(project.read("game/pack.json"))["frames"]
    assert sorted(frames) == ["committed", "made", "small"]
