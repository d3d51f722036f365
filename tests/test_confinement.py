"""Nothing is written or followed outside the project root and the cache: not state, not outputs,
not temp files. A symlink that leads out is refused with one located line, when the manifest is
checked and again at the moment of writing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Project

PLACEHOLDER = '[provider]\nname = "placeholder"\n'


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A sibling folder of the project, with a file in it: it must stay exactly as it is."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "keep.txt").write_text("not imgbuild's")
    return folder


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_state_folder_that_is_a_symlink_out_is_refused_and_nothing_is_written_there(
        project: Project, outside: Path) -> None:
    before = tree(outside)
    (project.root / ".imgbuild").symlink_to(outside, target_is_directory=True)
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "hero.png"\n')

    for command in (("build",), ("status",)):
        result = project.run(*command)
        assert result.code == 2, result.err
        line = one_line(result.err)
        assert ".imgbuild" in line and "outside the project" in line
    assert tree(outside) == before
    assert not (project.root / "hero.png").exists()


def test_an_output_folder_swapped_for_a_symlink_after_a_build_is_refused_by_status_and_build(
        project: Project, outside: Path) -> None:
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "assets/hero.png"\n')
    assert project.build().code == 0
    assert project.build().code == 0  # the machine-local copy of the resolved manifest is now used
    shutil.rmtree(project.root / "assets")
    (project.root / "assets").symlink_to(outside, target_is_directory=True)
    before = tree(outside)

    for command in (("status",), ("build",), ("check",)):
        result = project.run(*command)
        assert result.code == 2, (command, result.err)
        line = one_line(result.err)
        assert line.startswith("images.toml: images.hero.output: assets/hero.png is outside the project"), line
    assert tree(outside) == before


def test_an_output_folder_swapped_for_a_symlink_during_a_build_is_not_written_through(
        project: Project, outside: Path) -> None:
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "assets/hero.png"\n')
    (project.root / "assets").mkdir()
    before = tree(outside)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
        env={**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "1.0"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the request is in flight: the manifest was checked, the write is to come
        if json.loads(line).get("event") == "started":
            break
    (project.root / "assets").rename(project.root / "assets-moved")
    (project.root / "assets").symlink_to(outside, target_is_directory=True)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 1, err
    assert tree(outside) == before
    failed = [e for e in map(json.loads, out.splitlines()) if e["event"] == "failed"]
    assert len(failed) == 1 and "assets leads to" in failed[0]["detail"], out
    # The image was paid for and is in the cache: with the folder back, it is restored, not bought again.
    (project.root / "assets").unlink()
    rerun = project.build()
    assert rerun.code == 0 and rerun.requests == 0 and rerun.summary["restored"] == 1


@pytest.mark.parametrize("output, why", [
    (".git/hero.png", "inside .git/"),
    ("vendor/lib/.git/hero.png", "inside .git/"),
    (".imgbuild/hero.png", "inside .imgbuild/"),
    (".IMGBUILD/hero.png", "inside .imgbuild/"),
])
def test_git_and_imgbuild_folders_are_not_outputs(project: Project, output: str, why: str) -> None:
    project.manifest(PLACEHOLDER + f'[images.hero]\nprompt = "a knight"\noutput = "{output}"\n')
    result = project.build()
    assert result.code == 2
    line = one_line(result.err)
    assert line.startswith(f"images.toml: images.hero.output: {output} is {why}"), line
    assert not (project.root / output).exists()


def test_an_out_dir_inside_git_is_refused_at_its_place(project: Project) -> None:
    project.manifest('out_dir = ".git/images"\n' + PLACEHOLDER + '[images.hero]\nprompt = "a knight"\n')
    result = project.build()
    assert result.code == 2
    assert one_line(result.err).startswith("images.toml: out_dir: .git/images is inside .git/")


def test_the_lock_file_is_not_an_output(project: Project) -> None:
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "images.lock"\n')
    result = project.build()
    assert result.code == 2 and not (project.root / "images.lock").exists()
    assert "images.toml: images.hero.output: images.lock is the lock file" in result.err.splitlines()[-1]


def test_a_state_file_that_is_a_symlink_out_is_replaced_not_written_through(
        project: Project, outside: Path) -> None:
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "hero.png"\n')
    assert project.build().code == 0
    (project.root / "hero.png").unlink()
    stat = project.root / ".imgbuild" / "stat.json"
    stat.unlink()
    stat.symlink_to(outside / "keep.txt")
    before = tree(outside)
    assert project.build().code == 0
    assert tree(outside) == before
    assert not stat.is_symlink()


def test_leftover_temp_files_of_a_dead_build_are_removed_and_a_live_ones_kept(project: Project) -> None:
    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "assets/hero.png"\n'
                     '[images.ship]\nprompt = "a ship"\noutput = "assets/ship.png"\n')
    assert project.build("hero").code == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    leftovers = [project.root / "assets" / f".imgbuild-tmp-{dead.stdout.strip()}-0a1b2c",
                 project.root / f".imgbuild-tmp-{dead.stdout.strip()}-3d4e5f",
                 project.root / ".imgbuild" / f".imgbuild-tmp-{dead.stdout.strip()}-6a7b8c"]
    live = project.root / "assets" / f".imgbuild-tmp-{os.getpid()}-9d0e1f"  # this test's own pid: alive
    for path in (*leftovers, live):
        path.write_bytes(b"half an image")

    assert project.build().code == 0
    assert [p for p in leftovers if p.exists()] == []
    assert live.exists()


def test_a_killed_builds_staged_images_go_into_the_cache(project: Project) -> None:
    from PIL import Image

    project.manifest(PLACEHOLDER + '[images.hero]\nprompt = "a knight"\noutput = "hero.png"\n')
    stage = project.cache / "tmp" / "stage-killed"
    stage.mkdir(parents=True)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(stage / "hero-0a1b2c.png")
    from imgbuild.cache import file_sha256

    sha = file_sha256(stage / "hero-0a1b2c.png")
    time.sleep(0.01)
    assert project.build().code == 0
    assert (project.cache / "objects" / sha[:2] / sha[2:]).is_file()
    assert not stage.exists()
