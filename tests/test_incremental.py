"""A one-target change touches one target: only the tables whose text changed are validated again
(with the targets that read what they write), every mistake is still caught with its place, and a
change to what all targets share validates them all."""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from conftest import Project

HEAD = 'out_dir = "out"\n\n[provider]\nname = "placeholder"\n\n[defaults]\nquality = "low"\n\n'


def _tables(prompts: dict[str, str], reader: bool = True) -> str:
    body = [f'[images.{name}]\nprompt = "{prompt}"\nsize = "1024x640"\n' for name, prompt in prompts.items()]
    if reader:  # an edit of t2's output
        body.append('[images.t3]\nprompt = "t2 with a hat"\nimages = ["out/t2.png"]\n')
    return "\n".join(body)


PROMPTS = {"t0": "a red fox", "t1": "a blue jay", "t2": "a green frog"}


@functools.cache
def _template() -> Project:
    """HEAD + PROMPTS, built once for the module."""
    base = Path(tempfile.mkdtemp(prefix="imgbuild-incremental-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    template = Project(base / "proj", base / "cache")
    template.manifest(HEAD + _tables(PROMPTS))
    assert template.build().code == 0
    return template


def _built(project: Project) -> Path:
    """``project`` as its first build of HEAD + PROMPTS left it (a copy of one built for the module,
    its .imgbuild/ state and cache included: what the next build validates again is decided by it)."""
    template = _template()
    shutil.copytree(template.root, project.root, dirs_exist_ok=True)
    shutil.copytree(template.cache, project.cache, dirs_exist_ok=True)
    return project.root / "images.toml"


def _validated(trace: Path) -> list[str]:
    return trace.read_text().splitlines()[-1].split()


def test_one_edited_prompt_validates_only_its_own_table_again(project: Project, tmp_path: Path) -> None:
    _built(project)
    project.manifest(HEAD + _tables({**PROMPTS, "t1": "a blue jay at dusk"}))
    trace = tmp_path / "validated"
    result = project.build(env={"IMGBUILD_TRACE_VALIDATION": str(trace)})
    assert result.code == 0, result.err
    assert _validated(trace) == ["t1"]
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["t1"]


def test_a_valid_one_table_change_does_not_import_pydantic(project: Project) -> None:
    _built(project)
    project.manifest(HEAD + _tables({**PROMPTS, "t0": "a red fox asleep"}))
    result = project.run("-v", "status", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.code == 0, result.err
    assert "imgbuild.resolve" in result.err  # the trace is on
    assert not re.search(r"\|\s+pydantic\b", result.err)


def test_an_edited_table_that_is_wrong_is_reported_with_its_place(project: Project) -> None:
    _built(project)
    before = project.snapshot()
    text = HEAD + _tables({**PROMPTS, "t0": "a red fox asleep"})
    project.manifest(text.replace('[images.t2]\nprompt = "a green frog"', '[images.t2]\nprompt = "a green frog"\nquality = "ultra"'))
    result = project.build()
    assert result.code == 2
    assert "images.t2.quality" in result.err and "ultra" in result.err
    after = project.snapshot()
    assert {k: v for k, v in after.items() if k != "images.toml"} == {k: v for k, v in before.items() if k != "images.toml"}


def test_a_wrong_change_the_quick_check_cannot_see_is_still_caught(project: Project) -> None:
    _built(project)
    project.manifest(HEAD + _tables({**PROMPTS, "t1": "a blue jay"}).replace('size = "1024x640"', 'size = "1000x640"', 1))
    result = project.build()
    assert result.code == 2
    assert "images.t0.size: 1000x640 is not a multiple of 16" in result.err


def test_the_readers_of_an_edited_target_are_validated_again(project: Project, tmp_path: Path) -> None:
    _built(project)
    text = HEAD + _tables(PROMPTS)
    project.manifest(text.replace('[images.t2]\nprompt = "a green frog"', '[images.t2]\nprompt = "a green frog"\noutput = "art/t2.png"'))
    trace = tmp_path / "validated"
    result = project.build(env={"IMGBUILD_TRACE_VALIDATION": str(trace)})
    # t3 reads out/t2.png, which t2 no longer makes (the old file is still on disk: it is valid).
    assert result.code == 0, result.err
    assert trace.read_text().splitlines()[0].split() == ["t2", "t3"]
    (project.root / "out/t2.png").unlink()
    project.manifest(text.replace('[images.t2]\nprompt = "a green frog"', '[images.t2]\nprompt = "a green frog"\noutput = "art/t2b.png"'))
    result = project.build()
    assert result.code == 2
    assert "images.t3.images[0]: out/t2.png does not exist and no target makes it" in result.err


def test_a_change_to_what_every_target_shares_validates_them_all(project: Project, tmp_path: Path) -> None:
    _built(project)
    project.manifest((HEAD + _tables(PROMPTS)).replace('quality = "low"', 'quality = "high"'))
    trace = tmp_path / "validated"
    result = project.build(env={"IMGBUILD_TRACE_VALIDATION": str(trace)})
    assert result.code == 0, result.err
    assert _validated(trace) == ["*"]
    assert sorted(e["target"] for e in result.events if e["event"] == "built") == ["t0", "t1", "t2", "t3"]


def test_a_removed_target_leaves_its_readers_without_an_input(project: Project) -> None:
    _built(project)
    (project.root / "out/t2.png").unlink()
    project.manifest(HEAD + _tables({"t0": "a red fox", "t1": "a blue jay"}))
    result = project.build()
    assert result.code == 2
    assert "images.t3.images[0]: out/t2.png does not exist and no target makes it" in result.err


# -- the quick check and the model agree -------------------------------------------------------

SAMPLES: list[dict[str, Any]] = [
    {"prompt": "x"}, {"prompt": "x", "size": "512x512", "quality": "high", "n": 3, "revision": 2, "pinned": True},
    {"prompt_file": "p.md", "output": "a.webp", "output_format": "webp", "output_compression": 80},
    {"prompt": "x", "images": ["a.png"], "mask": "m.png", "background": "opaque", "moderation": "low"},
    {"prompt": "x", "extra": {"style": "vivid", "k": [1, 2]}},
    {"prompt": "x", "quality": "ultra"}, {"prompt": "x", "n": 0}, {"prompt": "x", "n": 11}, {"prompt": "x", "n": True},
    {"prompt": "x", "n": 1.0}, {"prompt": 3}, {"prompt": "x", "revision": -1}, {"prompt": "x", "pinned": 1},
    {"prompt": "x", "images": []}, {"prompt": "x", "images": ["a.png"] * 17}, {"prompt": "x", "images": "a.png"},
    {"prompt": "x", "images": [1]}, {"prompt": "x", "output_compression": 101}, {"prompt": "x", "extra": "no"},
    {"prompt": "x", "colour": "red"}, {"prompt": "x", "size": 1024}, {"prompt": "x", "output_format": "gif"},
    {"prompt": "x", "background": "clear"}, {"prompt": "x", "moderation": "high"}, {"prompt": "x", "mask": ["m"]},
]


def test_the_quick_check_knows_every_field_of_the_model() -> None:
    from imgbuild.manifest import TargetTable
    from imgbuild.tablecheck import FIELDS

    assert FIELDS == tuple(TargetTable.model_fields)


@pytest.mark.parametrize("table", SAMPLES)
def test_the_quick_check_accepts_only_what_the_model_accepts_and_reads_it_the_same(table: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from imgbuild.manifest import TargetTable
    from imgbuild.tablecheck import plain_table

    quick = plain_table(table)
    try:
        model = TargetTable.model_validate(table)
    except ValidationError:
        assert quick is None
        return
    assert quick is not None, "a valid table should not need pydantic"
    assert quick.model_dump(exclude_none=True) == model.model_dump(exclude_none=True)
    for field in ("prompt", "prompt_file", "output", "images", "mask"):
        assert getattr(quick, field) == getattr(model, field)


def test_after_a_one_target_change_the_lock_is_read_back_from_a_small_delta_as_it_is(project: Project) -> None:
    from imgbuild.lockfile import Lock

    _built(project)
    project.manifest(HEAD + _tables({**PROMPTS, "t1": "a blue jay at dusk"}))
    assert project.build().code == 0
    state = project.root / ".imgbuild"
    assert (state / "lock.delta.marshal").stat().st_size < (state / "lock.marshal").stat().st_size
    assert Lock.load(project.root / "images.lock", state).targets == project.lock()["targets"]


def test_a_cycle_made_by_editing_one_table_is_caught(project: Project) -> None:
    _built(project)
    text = HEAD + _tables(PROMPTS)
    project.manifest(text.replace('[images.t2]\nprompt = "a green frog"', '[images.t2]\nprompt = "a green frog"\nimages = ["out/t3.png"]'))
    result = project.build()
    assert result.code == 2
    assert "dependency cycle" in result.err


def test_a_one_target_change_schedules_that_target_and_what_reads_it_only(project: Project, tmp_path: Path) -> None:
    _built(project)
    project.manifest(HEAD + _tables({**PROMPTS, "t2": "a green frog on a leaf"}))
    trace = tmp_path / "scheduled"
    result = project.build(env={"IMGBUILD_TRACE_SCHEDULED": str(trace)})
    assert result.code == 0, result.err
    assert trace.read_text().split() == ["t2", "t3"]  # t0 and t1 are up to date: never walked
    assert result.summary["up_to_date"] == 2
    assert sorted(e["target"] for e in result.events if e["event"] == "built") == ["t2", "t3"]

