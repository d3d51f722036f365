"""What a new user's mistakes read like: one located line each, saying what to do."""

from __future__ import annotations

import textwrap

from conftest import Project


def _errors(project: Project, manifest: str) -> list[str]:
    project.manifest(textwrap.dedent(manifest) + '\n[provider]\nname = "placeholder"\n')
    result = project.run("status")
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err
    return result.err.strip().splitlines()


def test_a_misspelt_target_field_suggests_the_nearest(project: Project) -> None:
    assert _errors(project, '[images.knight]\nprompt = "k"\nbackgorund = "auto"\n') == [
        "images.toml: images.knight.backgorund: unknown field (did you mean background?)"]


def test_a_misspelt_table_suggests_the_nearest(project: Project) -> None:
    assert _errors(project, '[image.a]\nprompt = "a"\n') == [
        "images.toml: image: unknown field (did you mean images?)"]


def test_a_misspelt_provider_field_suggests_the_nearest(project: Project) -> None:
    project.manifest('[provider]\nname = "placeholder"\nconcurency = 2\n[images.a]\nprompt = "a"\n')
    assert project.run("status").err.strip() == (
        "images.toml: provider.concurency: unknown field (did you mean concurrency?)")


def test_a_prompt_in_defaults_says_it_belongs_to_a_target(project: Project) -> None:
    [line] = _errors(project, '[defaults]\nprompt = "x"\n[images.a]\nprompt = "a"\n')
    assert line.startswith("images.toml: defaults.prompt: unknown field: prompt belongs to a target ([images.NAME])")


def test_an_empty_images_list_is_said_in_words(project: Project) -> None:
    [line] = _errors(project, '[images.a]\nprompt = "a"\nimages = []\n')
    assert line == ("images.toml: images.a.images: an empty list: an edit takes 1 to 16 input images "
                    "(leave images out for a generation)")


def test_list_items_are_placed_with_brackets_by_both_passes(project: Project) -> None:
    project.png("art/in.png")
    lines = _errors(project, """
        [images.a]
        prompt = "a"
        images = ["art/in.png", 7]
        [images.b]
        prompt = "b"
        images = ["art/in.png", "nothere.png"]
    """)
    assert sorted(lines) == [
        "images.toml: images.a.images[1]: 7: input should be a valid string",
        "images.toml: images.b.images[1]: nothere.png does not exist and no target makes it",
    ]


def test_outputs_that_differ_only_in_case_are_a_manifest_error(project: Project) -> None:
    lines = _errors(project, """
        [images.win]
        prompt = "w"
        output = "assets/Sprites/WIN.png"
        [images.win-small]
        prompt = "w"
        output = "assets/sprites/win.png"
    """)
    assert lines == ["images.toml: images.win-small.output: assets/sprites/win.png differs from "
                     "assets/Sprites/WIN.png (the output of images.win) only in case; one file on macOS and "
                     "Windows: rename one"]


def test_target_names_that_differ_only_in_case_are_one_manifest_error(project: Project) -> None:
    lines = _errors(project, '[images.a]\nprompt = "a"\n[images.A]\nprompt = "A"\n')
    assert lines == ["images.toml: images.a: differs from images.A only in case; they would collide on macOS "
                     "and Windows: rename one"]


def test_a_directory_that_does_not_exist_is_said_plainly(project: Project) -> None:
    missing = project.root / "nope"
    result = project.run("-C", str(missing), "status")
    assert result.code == 2
    assert result.err.strip() == f"error: the folder {missing} does not exist"
