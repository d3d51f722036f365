"""[vars] (SPEC §1): vars may use vars; whatever cannot be resolved is an error, never sent."""

from __future__ import annotations

import textwrap

from conftest import Project


def _errors(project: Project, manifest: str) -> list[str]:
    project.manifest(textwrap.dedent(manifest) + '\n[provider]\nname = "placeholder"\n')
    result = project.run("status")
    assert result.code == 2, result.out + result.err
    assert not (project.root / "images.lock").exists()
    return result.err.strip().splitlines()


def test_a_var_may_use_other_vars_recursively(project: Project) -> None:
    project.manifest("""
        [provider]
        name = "placeholder"
        [vars]
        style = "${base} art, ${palette}"
        base = "pixel"
        palette = "${tone} palette"
        tone = "pastel, $$5"
        [images.a]
        prompt = "a cat, ${style}"
    """)
    assert project.build().code == 0
    assert project.lock()["targets"]["a"]["prompt"] == "a cat, pixel art, pastel, $5 palette"


def test_vars_in_a_cycle_are_one_error_naming_the_cycle(project: Project) -> None:
    lines = _errors(project, """
        [vars]
        a = "x ${b}"
        b = "${a} y"
        [images.t]
        prompt = "${a} and ${b}"
    """)
    assert lines == ["images.toml: vars.a: the vars use each other in a cycle: a → b → a"]


def test_a_var_using_itself_is_a_cycle(project: Project) -> None:
    assert _errors(project, '[vars]\na = "more ${a}"\n[images.t]\nprompt = "t"\n') == [
        "images.toml: vars.a: the vars use each other in a cycle: a → a"]


def test_an_undefined_var_inside_a_var_is_an_error_where_it_is_written(project: Project) -> None:
    lines = _errors(project, """
        [vars]
        style = "${base} art"
        [images.t]
        prompt = "a knight, ${style}"
    """)
    assert lines == ["images.toml: vars.style: ${base} is not defined in [vars]"]


def test_an_unclosed_reference_is_an_error_not_text_sent(project: Project) -> None:
    lines = _errors(project, '[images.t]\nprompt = "a knight, ${style"\n')
    assert lines == ["images.toml: images.t.prompt: a ${ is never closed (write $$ for a literal $)"]


def test_one_non_string_var_is_one_error_line(project: Project) -> None:
    lines = _errors(project, """
        [vars]
        style = "flat"
        num = 3
        [images.a]
        prompt = "a ${style}, ${num}"
        [images.b]
        prompt = "b ${style}"
    """)
    assert lines == ["images.toml: vars.num: 3: input should be a valid string"]


def test_a_var_using_a_non_string_var_says_nothing_more(project: Project) -> None:
    lines = _errors(project, '[vars]\nnum = 3\ncount = "${num} apples"\n[images.a]\nprompt = "${count}"\n')
    assert lines == ["images.toml: vars.num: 3: input should be a valid string"]


def test_vars_that_are_not_a_table_are_one_error_line(project: Project) -> None:
    lines = _errors(project, 'vars = "flat"\n[images.a]\nprompt = "a ${style}"\n')
    assert len(lines) == 1 and lines[0].startswith("images.toml: vars: "), lines
