"""Hostile input (issue 9, Deliver 6): every bad input is exit 2 with one located line, every
fault of the machine exit 1 with one clear line, never an internal error; nothing is written on
exit 2; control characters never reach the terminal raw."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver import KEY_ENV, ApiServer, Fault
from conftest import Project, Result

ESC = "\x1b"


def one_line(result: Result, code: int, *fragments: str) -> str:
    """The run exited ``code`` and said exactly one line on stderr, holding every fragment."""
    lines = result.err.splitlines()
    assert result.code == code, result.err
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    for fragment in fragments:
        assert fragment.casefold() in lines[0].casefold(), lines[0]  # the system words its errors in either case
    return lines[0]


def nothing_written(project: Project, before: dict[str, tuple[int, int]]) -> None:
    assert project.snapshot() == before
    assert not (project.root / ".imgbuild").exists()
    assert not project.cache.exists() or not any(project.cache.rglob("*"))


def bad_manifest(project: Project, text: str, *fragments: str, command: str = "build") -> str:
    """``text`` as the manifest: exit 2, one located line, nothing written."""
    project.manifest(text)
    before = project.snapshot()
    line = one_line(project.run(command, "--provider", "placeholder"), 2, "images.toml: ", *fragments)
    nothing_written(project, before)
    return line


# -- the manifest ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, toml", [
    ("out_dir", 'out_dir = "art\\u0000x"\n[images.a]\nprompt = "x"'),
    ("images.a.output", '[images.a]\nprompt = "x"\noutput = "a\\u0000.png"'),
    ("images.a.images[0]", '[images.a]\nprompt = "x"\nimages = ["in\\u0000.png"]'),
    ("images.a.mask", '[images.a]\nprompt = "x"\nimages = ["in.png"]\nmask = "m\\u0000.png"'),
    ("images.a.prompt_file", '[images.a]\nprompt_file = "p\\u0000.md"'),
])
def test_a_nul_byte_in_any_path_field_is_a_located_error(project: Project, field: str, toml: str) -> None:
    project.png("in.png")
    line = bad_manifest(project, toml, f"images.toml: {field}: ", "control character")
    assert "\\x00" in line and "\x00" not in line


def test_toml_nested_1000_deep_is_a_located_error(project: Project) -> None:
    bad_manifest(project, "x = " + "[" * 1000 + "]" * 1000, "nested too deeply")


@pytest.mark.parametrize("depth", [900, 300, 40])
def test_extra_nested_deep_is_a_located_error_before_any_request(project: Project, depth: int) -> None:
    # 900 levels broke the TOML parser; 300 passed it and broke the lock's writer after the request.
    line = bad_manifest(project, '[images.a]\nprompt = "x"\nextra = {k = ' + "[" * depth + "]" * depth + "}",
                        "nested")
    assert "images.a.extra" in line or depth == 900


def test_extra_nested_within_the_limit_builds(project: Project) -> None:
    project.manifest('[images.a]\nprompt = "x"\nextra = {k = ' + "[" * 8 + "1" + "]" * 8 + "}")
    assert project.build("--provider", "placeholder").code == 0


@pytest.mark.parametrize("toml, where", [
    ('[images.a]\nprompt = "x"\noutput = "' + "a" * 300 + '.png"', "images.a.output"),
    ('[images.a]\nprompt = "x"\nimages = ["' + "a" * 300 + '.png"]', "images.a.images[0]"),
    ('[images.' + "a" * 300 + ']\nprompt = "x"', "images." + "a" * 300),
    ('out_dir = "' + "d" * 256 + '"\n[images.a]\nprompt = "x"', "out_dir"),
])
def test_a_path_part_over_255_bytes_is_a_located_error(project: Project, toml: str, where: str) -> None:
    bad_manifest(project, toml, f"images.toml: {where}: ", "255 bytes")


@pytest.mark.parametrize("value", ['"' + "1" * 4300 + "x" + "1" * 4300 + '"', "1" * 4300])
def test_a_size_of_4300_digits_is_a_located_error(project: Project, value: str) -> None:
    bad_manifest(project, f'[images.a]\nprompt = "x"\nsize = {value}', "images.a.size" if value[0] == '"' else "")


@pytest.mark.parametrize("size", ['"1024x1024\\n"', '"１０２４x１０２４"', '" 1024x1024"', '"1024X1024"'])
def test_a_size_that_only_looks_right_is_refused_offline(project: Project, size: str) -> None:
    bad_manifest(project, f'[images.a]\nprompt = "x"\nsize = {size}', "images.toml: images.a.size: ")


def test_a_target_named_with_a_trailing_newline_is_refused(project: Project) -> None:
    line = bad_manifest(project, '[images."hero\\n"]\nprompt = "x"', "not a valid target name")
    assert "hero\\n" in line
    assert not list(project.root.rglob("hero*"))


def bomb(path: Path, color_type: int = 6) -> Path:
    """A PNG of a few hundred bytes whose header declares 30000x30000 pixels (900 million; Pillow
    refuses to open more than twice its 89-million-pixel warning limit)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("command", ["build", "status"])
def test_a_decompression_bomb_as_mask_is_a_located_error(project: Project, command: str) -> None:
    project.png("in.png")
    bomb(project.root / "m.png")
    line = bad_manifest(project, '[images.a]\nprompt = "x"\nimages = ["in.png"]\nmask = "m.png"',
                        "images.toml: images.a.mask: m.png", "pixels", command=command)
    assert "900,000,000 pixels" in line


@pytest.mark.parametrize("command", ["build", "status"])
def test_a_decompression_bomb_as_the_input_of_a_masked_edit_is_a_located_error(project: Project,
                                                                               command: str) -> None:
    bomb(project.root / "in.png", color_type=2)
    project.png("m.png")
    bad_manifest(project, '[images.a]\nprompt = "x"\nimages = ["in.png"]\nmask = "m.png"',
                 "images.toml: images.a.images[0]: in.png", "pixels", command=command)


@pytest.mark.parametrize("command", ["build", "status"])
def test_a_decompression_bomb_as_an_input_is_a_located_error(project: Project, command: str) -> None:
    # Without a mask nothing decoded it before the request: the placeholder failed at build time,
    # a server would have been sent it.
    bomb(project.root / "in.png", color_type=2)
    bad_manifest(project, '[images.a]\nprompt = "x"\nimages = ["in.png"]',
                 "images.toml: images.a.images[0]: in.png declares 900,000,000 pixels", command=command)


@pytest.mark.parametrize("value", ['"\\u001b[2J\\u001b[Hgone"', '"low\\nimages.toml: all is well"',
                                   '"a\\rb\\u0007\\u009b31m"'])
def test_control_characters_in_a_value_are_escaped_in_the_message(project: Project, value: str) -> None:
    line = bad_manifest(project, f'[images.a]\nprompt = "x"\nquality = {value}', "images.a.quality")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in line)


def test_control_characters_in_a_missing_targets_name_are_escaped(project: Project) -> None:
    project.manifest('[images.a]\nprompt = "x"')
    line = one_line(project.run("build", "--provider", "placeholder", "b\x1b[2J\nc"), 2, "no target named")
    assert ESC not in line and "\\x1b[2J\\nc" in line


# -- the lock and the state folder ---------------------------------------------------------------------

GOOD = '[images.a]\nprompt = "x"\n[images.b]\nprompt = "y"'


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project built once (placeholder): tests copy it rather than build again."""
    base = tmp_path_factory.mktemp("built")
    project = Project(base / "proj", base / "cache")
    project.root.mkdir()
    project.manifest(GOOD)
    assert project.run_in_process("build", "--provider", "placeholder").code == 0
    return project


def copy_of(built: Project, tmp_path: Path) -> Project:
    import shutil

    shutil.copytree(built.root, tmp_path / "proj")
    shutil.copytree(built.cache, tmp_path / "cache")
    return Project(tmp_path / "proj", tmp_path / "cache")


@pytest.mark.parametrize("entry", [
    "[targets]\na = 5",
    '[targets.a]\noutputs = 5',
    '[targets.a]\noutputs = [5]',
    '[targets.a]\nspec = 3\nparams = "x"',
    '[targets.a]\ninputs = [{path = 1}]',
    '[targets.a]\n[[targets.a.outputs]]\npath = "build/images/a.png"\nsha256 = "../../../etc/passwd"',
    '[targets.a]\n[[targets.a.outputs]]\npath = "a\\u0000.png"\nsha256 = "' + "0" * 64 + '"',
    '[targets.a]\nparams = {size = 1979-05-27}',
    '[targets.a]\ncost_usd = "lots"',
    '[targets.a]\nextra = {when = 1979-05-27}',
    '[targets.a]\nwhen = 1979-05-27',
    '[targets.a]\nrevision = true',
    '[targets."a\\u001b[2J"]\noutputs = 1',
])
def test_a_lock_entry_of_the_wrong_shape_is_dropped_with_one_warning(built: Project, tmp_path: Path,
                                                                      entry: str) -> None:
    project = copy_of(built, tmp_path)
    locked_b = project.lock()["targets"]["b"]
    text = (project.root / "images.lock").read_text()
    a, b = text.index("\n[targets.a]\n"), text.index("\n[targets.b]\n")
    project.write("images.lock", text[:a] + "\n" + entry + "\n" + text[b:])

    status = project.run_in_process("status", "--provider", "placeholder")
    line = one_line(status, 0, "warning: images.lock: targets.a", "ignored")
    assert ESC not in line
    build = project.run_in_process("build", "--provider", "placeholder", "--json")
    assert build.code == 0 and build.requests == 0, build.err  # a's output comes back from the cache
    assert project.lock()["targets"]["b"] == locked_b
    assert project.run_in_process("check", "--provider", "placeholder").code == 0


def test_a_lock_nested_too_deep_is_one_line(project: Project) -> None:
    project.manifest(GOOD)
    project.write("images.lock", "version = 1\n[targets.a]\nextra = {k = " + "[" * 1000 + "]" * 1000 + "}\n")
    one_line(project.run("status", "--provider", "placeholder"), 2, "images.lock: ", "nested too deeply")


def test_the_lock_as_a_folder_is_one_line_and_nothing_written(project: Project) -> None:
    project.manifest(GOOD)
    (project.root / "images.lock").mkdir()
    before = project.snapshot()
    for command in ("status", "build"):
        one_line(project.run(command, "--provider", "placeholder"), 2, "images.lock", "is a folder")
    nothing_written(project, before)


def test_the_state_folder_as_a_file_is_one_line_and_nothing_written(project: Project) -> None:
    project.manifest(GOOD)
    project.write(".imgbuild", "not a folder")
    before = project.snapshot()
    one_line(project.build("--provider", "placeholder"), 2, ".imgbuild", "a file")
    assert project.snapshot() == before and not (project.root / "build").exists()
    # status writes nothing, but reads state from there: the same one line
    one_line(project.run("status", "--provider", "placeholder"), 2, ".imgbuild", "a file")


def test_a_lock_file_that_escapes_is_escaped(project: Project) -> None:
    project.manifest(GOOD)
    project.write("images.lock", "<<<<<<< \x1b[2J\nversion = 1\n")
    line = one_line(project.run("status", "--provider", "placeholder"), 2, "images.lock: not valid TOML")
    assert ESC not in line


# -- faults of the machine: read-only and full file systems (root only: mount) --------------------------

@pytest.fixture
def mounts() -> Iterator[Any]:
    """``mount(path, ro=True)`` binds ``path`` onto itself read-only; ``mount(path, size_kb=8)``
    puts a small tmpfs there. Everything is unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only or full file system needs root")
    done: list[Path] = []

    def mount(path: Path, *, ro: bool = False, rw: bool = False, size_kb: int = 0) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if size_kb:
            cmds = [["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)]]
        else:
            flag = "ro" if ro else "rw"
            cmds = [["mount", "--bind", str(path), str(path)], ["mount", "-o", f"remount,bind,{flag}", str(path)]]
        for i, cmd in enumerate(cmds):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
            if i == 0:
                done.append(path)

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_project_root_is_one_line_exit_1(project: Project, mounts: Any) -> None:
    project.manifest(GOOD)
    mounts(project.root, ro=True)
    one_line(project.build("--provider", "placeholder"), 1, "read-only file system", ".imgbuild")
    assert project.run("status", "--provider", "placeholder").code == 0


def test_a_read_only_root_with_a_writable_state_folder_is_one_line_exit_1(project: Project,
                                                                            mounts: Any) -> None:
    # The lock cannot be written while the outputs can: this printed "Task exception was never
    # retrieved" and a traceback, then exit 3.
    project.manifest(GOOD)
    for sub in (".imgbuild", "build/images"):
        (project.root / sub).mkdir(parents=True)
    mounts(project.root, ro=True)
    for sub in (".imgbuild", "build/images"):
        mounts(project.root / sub, rw=True)
    result = project.build("--provider", "placeholder")
    one_line(result, 1, "read-only file system", str(project.root))
    assert "Task exception" not in result.err


def test_a_read_only_cache_is_one_line_exit_1(project: Project, mounts: Any) -> None:
    project.manifest(GOOD)
    mounts(project.cache, ro=True)
    # The images still reach their outputs and the lock (test_disk_faults.py has the details).
    one_line(project.build("--provider", "placeholder"), 1, "Read-only file system", str(project.cache))


def test_a_full_disk_under_the_state_folder_is_one_line_exit_1_and_loses_nothing(project: Project,
                                                                                  mounts: Any) -> None:
    project.manifest(GOOD)
    mounts(project.root / ".imgbuild", size_kb=64)
    with pytest.raises(OSError), open(project.root / ".imgbuild" / "filler", "wb") as filler:
        while True:
            filler.write(b"x" * 4096)
            filler.flush()
    result = project.build("--provider", "placeholder")
    # The build's journal cannot be started there: it stops before making anything.
    one_line(result, 1, "no space left on device", ".imgbuild")
    assert not (project.root / "images.lock").exists() and not (project.root / "build").exists()
    (project.root / ".imgbuild" / "filler").unlink()
    assert project.build("--provider", "placeholder").code == 0
    assert project.run("check", "--provider", "placeholder").code == 0


# -- what a server says ----------------------------------------------------------------------------------

def test_a_servers_message_with_control_characters_is_one_escaped_line(start_api_server: Any,
                                                                        project: Project) -> None:
    server: ApiServer = start_api_server("openai")
    project.manifest(f"""
        [provider]
        name = "compatible"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        [images.a]
        prompt = "x"
        """)
    server.inject(Fault("400", message="no\n\x1b[2J\x1b[Hall good\r\x07"))
    result = project.run("build", env={KEY_ENV: server.key})
    assert result.code == 1
    failed = [line for line in result.err.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "\\x1b[2J" in failed[0], result.err
    assert ESC not in result.err and "\r" not in result.err and "\x07" not in result.err


# -- the test suite itself ------------------------------------------------------------------------------

def test_the_suite_never_sees_a_real_key(project: Project) -> None:
    from conftest import key_variables

    names = key_variables() | {"OPENAI_API_KEY", "AIMLAPI_API_KEY", "IMGBUILD_API_KEY"}
    assert not names & set(os.environ)
    seen = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(sorted(os.environ)))"],
                          capture_output=True, text=True, env=project.env, check=True).stdout
    assert not names & set(json.loads(seen))


@pytest.mark.parametrize("stat", ['{"version": 2, "saved_ns": 0, "entries": [1, 2]}',
                                  '{"version": 2, "saved_ns": 0, "entries": {"build/images/a.png": 7}}',
                                  '{"version": 2, "saved_ns": "x", "entries": {"build/images/a.png": [1]}}'])
def test_a_mangled_stat_cache_is_started_over(built: Project, tmp_path: Path, stat: str) -> None:
    project = copy_of(built, tmp_path)
    project.write(".imgbuild/stat.json", stat)
    result = project.run_in_process("status", "--provider", "placeholder")
    assert result.code == 0 and result.err == "", result.err
    assert result.out.split() == ["a", "ok", "b", "ok"]


def test_an_output_that_is_a_symlink_loop_is_a_located_error(project: Project) -> None:
    (project.root / "build/images").mkdir(parents=True)
    (project.root / "build/images/a.png").symlink_to("a.png")
    line = bad_manifest(project, GOOD, "images.toml: images.a: ", "leads back to itself", command="status")
    assert "build/images/a.png" in line
