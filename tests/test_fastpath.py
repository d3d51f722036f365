"""The no-op fast path: it answers only when nothing changed, and then exactly as the full path does.

Each run goes through a small probe that calls ``imgbuild.cli.main`` in a fresh interpreter and
reports whether the engine (``imgbuild.project``) was imported: the fast path never imports it.
"""

from __future__ import annotations

import atexit
import functools
import json
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Project, Result

MANIFEST = """
[provider]
name = "placeholder"

[images.hero]
prompt_file = "prompts/hero.md"
output = "assets/hero.png"
size = "1024x640"

[images.crowned]
prompt = "the knight, crowned"
images = ["assets/hero.png", "art/crown.png"]
output = "assets/sub/crowned.png"
"""

PROBE = """
import os, sys
if os.environ.get("PROBE_VERSION"):
    import imgbuild
    imgbuild.__version__ = os.environ["PROBE_VERSION"]
from imgbuild.cli import main
code = main(sys.argv[1:])
with open(os.environ["PROBE_OUT"], "w") as f:
    f.write("engine" if "imgbuild.project" in sys.modules else "fast")
sys.exit(code)
"""

STATE = Path(".imgbuild") / "noop.marshal"


def _probe(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[Result, str]:
    """(result, "fast" or "engine") of one CLI run in a fresh interpreter."""
    out = project.root.parent / "probe.txt"
    proc = subprocess.run([sys.executable, "-c", PROBE, "-C", str(project.root), *args], capture_output=True,
                          text=True, timeout=120, env={**project.env, "PROBE_OUT": str(out), **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr), out.read_text()


def _age(project: Project, seconds: float = 10.0) -> None:
    """Make every file of the project look written `seconds` ago: older than the racily-clean
    window, as after a pause between a build and the next command."""
    then = time.time_ns() - int(seconds * 1e9)
    for p in project.root.rglob("*"):
        if p.is_file() and ".imgbuild" not in p.parts:
            os.utime(p, ns=(then, then))


@functools.cache
def _built() -> Project:
    """The project built once for the module; each test starts from a copy of it (and its cache)."""
    base = Path(tempfile.mkdtemp(prefix="imgbuild-fastpath-built-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    template = Project(base / "proj", base / "cache")
    template.write("prompts/hero.md", "a knight on a hill\n")
    template.png("art/crown.png")
    template.manifest(MANIFEST)
    assert template.build().code == 0
    return template


def _ready(project: Project) -> None:
    """A built project whose no-op state is recorded (by a full-path `status` that found all ok).
    The copy has new inodes and mtimes, so no state of the template's could answer for it: the
    `status` below takes the full path and records the copy's own."""
    built = _built()
    shutil.copytree(built.root, project.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(STATE.name))
    shutil.copytree(built.cache, project.cache, dirs_exist_ok=True)
    _age(project)
    result, path = _probe(project, "status")
    assert result.code == 0 and path == "engine"
    assert (project.root / STATE).exists()


def _full(project: Project, *args: str, env: dict[str, str] | None = None) -> Result:
    """The full path's answer, the state put back afterwards."""
    saved = (project.root / STATE).read_bytes()
    (project.root / STATE).unlink()
    result, path = _probe(project, *args, env=env)
    assert path == "engine"
    (project.root / STATE).write_bytes(saved)
    return result


COMMANDS = [
    ("build",), ("build", "-q"), ("build", "--json"), ("--json", "build", "-q", "-j", "2", "-k"),
    ("status",), ("status", "-q"), ("status", "--json"), ("check",), ("check", "--json"),
    ("status", "hero"), ("check", "crowned", "--json"), ("build", "crowned"), ("build", "--json", "hero"),
    ("build", "--max-cost", "0", "--yes"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_no_op_is_answered_without_the_engine_and_byte_for_byte_as_the_full_path(
        project: Project, args: tuple[str, ...]) -> None:
    _ready(project)
    fast, path = _probe(project, *args)
    assert path == "fast"
    full = _full(project, *args)
    assert (fast.code, fast.out, fast.err) == (full.code, full.out, full.err)
    assert fast.code == 0 and (fast.out or "-q" in args)


def test_the_json_no_op_summary_has_the_full_paths_shape(project: Project) -> None:
    _ready(project)
    fast, path = _probe(project, "build", "--json")
    assert path == "fast"
    assert [e["event"] for e in fast.events] == ["summary"]
    assert fast.summary["up_to_date"] == 2 and fast.requests == 0


def _falls_back(project: Project, *args: str, env: dict[str, str] | None = None) -> Result:
    result, path = _probe(project, *args, env=env)
    assert path == "engine", f"the fast path answered: {result.out}"
    return result


def test_an_edited_manifest_byte_falls_back(project: Project) -> None:
    _ready(project)
    project.manifest(MANIFEST + "# a comment\n")
    assert _falls_back(project, "status").out.split() == ["hero", "ok", "crowned", "ok"]


def test_an_edited_prompt_file_falls_back(project: Project) -> None:
    _ready(project)
    project.write("prompts/hero.md", "a knight on a hill at night\n")
    lines = _falls_back(project, "status").out.splitlines()
    assert lines[0].split()[:3] == ["hero", "changed", "prompt"]


def test_an_edited_input_image_falls_back(project: Project) -> None:
    _ready(project)
    project.png("art/crown.png", color=(0, 0, 255, 255))
    assert "changed" in _falls_back(project, "status", "crowned").out


def test_an_edited_output_falls_back(project: Project) -> None:
    _ready(project)
    project.png("assets/sub/crowned.png", color=(1, 2, 3, 255))
    result = _falls_back(project, "check")
    assert result.code == 1 and "edited by hand" in result.out


def test_a_touched_output_falls_back_and_is_still_ok(project: Project) -> None:
    _ready(project)
    os.utime(project.root / "assets/hero.png")
    assert _falls_back(project, "check").code == 0


def test_a_deleted_output_falls_back(project: Project) -> None:
    _ready(project)
    (project.root / "assets/hero.png").unlink()
    assert "restore" in _falls_back(project, "status").out


def test_a_rewritten_lock_falls_back(project: Project) -> None:
    _ready(project)
    lock = project.root / "images.lock"
    lock.write_bytes(lock.read_bytes().replace(b'spec = "', b'spec = "0', 1))
    assert "changed" in _falls_back(project, "status").out


def test_a_deleted_lock_falls_back(project: Project) -> None:
    _ready(project)
    (project.root / "images.lock").unlink()
    assert _falls_back(project, "check").code == 1


def test_another_provider_from_the_environment_falls_back(project: Project) -> None:
    _ready(project)
    result = _falls_back(project, "status", env={"IMGBUILD_PROVIDER": "openai"})
    assert "changed" in result.out


def test_another_imgbuild_version_falls_back(project: Project) -> None:
    _ready(project)
    assert _falls_back(project, "status", env={"PROBE_VERSION": "99.0"}).code == 0


def test_a_state_file_of_another_format_falls_back(project: Project) -> None:
    _ready(project)
    state = list(marshal.loads((project.root / STATE).read_bytes()))
    state[0] += 1
    (project.root / STATE).write_bytes(marshal.dumps(tuple(state)))
    assert _falls_back(project, "status").code == 0
    (project.root / STATE).write_bytes(b"not marshal")
    assert _falls_back(project, "status").code == 0


def test_an_output_folder_swapped_for_a_symlink_falls_back(project: Project) -> None:
    _ready(project)
    elsewhere = project.root.parent / "elsewhere"
    shutil.move(project.root / "assets", elsewhere)  # same inodes, now outside the project
    (project.root / "assets").symlink_to(elsewhere)
    result = _falls_back(project, "status")
    assert result.code == 2 and "outside" in result.err


def test_options_that_change_the_answer_fall_back(project: Project) -> None:
    _ready(project)
    assert "nothing was done" in _falls_back(project, "build", "-n").out
    assert _falls_back(project, "status", "nosuch").code == 2
    assert _falls_back(project, "status", "--jso").code == 0  # argparse's abbreviations are its own


def _racy(path: Path) -> None:
    """Give a file an mtime no earlier than the next run's start, as a write within the same
    timestamp tick as that run's reading of it would have (coarse timestamps, or a fast edit)."""
    later = time.time_ns() + 30 * 10**9
    os.utime(path, ns=(later, later))


def test_a_state_is_not_recorded_while_a_file_is_racily_clean(project: Project) -> None:
    _ready(project)
    (project.root / STATE).unlink()
    _racy(project.root / "assets/hero.png")
    result, path = _probe(project, "status")
    assert result.code == 0 and path == "engine"
    assert not (project.root / STATE).exists()


def test_a_same_size_prompt_edit_that_keeps_its_mtime_is_seen(project: Project) -> None:
    project.write("prompts/hero.md", "a knight on a hill\n")
    project.png("art/crown.png")
    project.manifest(MANIFEST)
    prompt = project.root / "prompts/hero.md"
    _racy(prompt)
    assert project.build().code == 0  # keeps a resolved copy of the manifest in .imgbuild/
    st = prompt.stat()
    with open(prompt, "r+") as f:  # same inode, same size, then the same mtime
        f.write("a knight on a HILL\n")
    os.utime(prompt, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (prompt.stat().st_size, prompt.stat().st_mtime_ns, prompt.stat().st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)
    lines = project.run("status").out.splitlines()
    assert lines[0].split()[:3] == ["hero", "changed", "prompt"]


def test_the_cache_is_no_part_of_a_no_op_answer(project: Project) -> None:
    # Whether a target is ok never depends on the cache: losing it changes neither answer.
    _ready(project)
    shutil.rmtree(project.cache)
    fast, path = _probe(project, "check")
    assert path == "fast"
    full = _full(project, "check")
    assert (fast.code, fast.out) == (full.code, full.out) == (0, "hero     ok\ncrowned  ok\n")


def test_a_full_build_that_drops_removed_targets_is_not_skipped(project: Project) -> None:
    _ready(project)
    lock = project.root / "images.lock"
    project.manifest(MANIFEST.split("[images.crowned]")[0])
    _age(project)
    assert _falls_back(project, "status").code == 0  # records: hero is ok
    result = _falls_back(project, "build")  # ...but a full build must still drop crowned's entry
    assert result.code == 0 and "crowned" not in lock.read_text()



@pytest.mark.parametrize("argv", [
    ["build"], ["-q", "build"], ["build", "-q", "--json"], ["-v", "-C", "sub", "-f", "other.toml", "build"],
    ["build", "-k", "--yes", "-j", "3", "--max-cost", "1.5"], ["build", "--keep-going", "--max-cost", "0"],
    ["build", "--provider", "placeholder", "--base-url", "http://127.0.0.1:9/v1"], ["build", "--remote=read"],
    ["build", "--remote=off", "-j", "12", "--max-cost", "20."], ["--json", "build", "--verbose"],
])
def test_the_command_line_a_scoped_build_takes_is_argparses(argv: list[str]) -> None:
    """A build of every target runs on the fast path's parse (no argparse): the same namespace."""
    from imgbuild import cli, fastpath

    fastpath.answer(argv)  # parses (and finds no project here: None)
    mine = fastpath.build_args()
    assert mine is not None
    theirs = cli.build_parser().parse_args(argv)
    for flag in ("json", "quiet", "verbose"):  # as cli._main fills them in
        if not hasattr(theirs, flag):
            setattr(theirs, flag, False)
    assert vars(mine) == vars(theirs)


@pytest.mark.parametrize("argv", [["build", "hero"], ["status"], ["build", "-n"], ["build", "-B"], ["check"],
                                  ["build", "--remote", "read"], ["build", "-j", "0"]])
def test_other_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    from imgbuild import fastpath

    fastpath.answer(argv)
    assert fastpath.build_args() is None
