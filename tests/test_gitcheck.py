"""A fresh clone's `check` takes git's word for the outputs git has verified, and hashes the rest.

Which files imgbuild reads is observed with an audit hook on `open`: a file that is hashed is
opened; one git vouches for is only stat'ed (git itself is a separate process).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git on PATH")

MANIFEST = """
[provider]
name = "placeholder"

[images.hero]
prompt = "a knight"
output = "assets/hero.png"

[images.castle]
prompt = "a castle"
output = "assets/castle.png"

[images.crowned]
prompt = "the knight, crowned"
images = ["assets/hero.png"]
output = "assets/crowned.png"
"""

_opened: list[str] = []
_watching: list[Path] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _watching and isinstance(args[0], (str, Path)):
        path = str(args[0])
        if path.startswith(str(_watching[0])):
            _opened.append(path)


sys.addaudithook(_audit)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def _clone(make_project: Callable[..., Project], *, settled: bool = True) -> Project:
    """A built project committed to git, and a fresh clone of it (no .imgbuild/, new mtimes).
    ``settled``: as if the checkout were written a while before git wrote its index (else files
    written in the same second as the index are racily clean, and git's word is not taken)."""
    origin = make_project("origin")
    origin.manifest(MANIFEST)
    assert origin.build().code == 0
    _git(origin.root, "init", "-q")
    _git(origin.root, "add", "-A")
    _git(origin.root, "commit", "-q", "-m", "built")
    clone = make_project("clone")
    shutil.rmtree(clone.root)
    _git(origin.root.parent, "clone", "-q", str(origin.root), str(clone.root))
    assert not (clone.root / ".imgbuild").exists()
    if settled:
        then = time.time_ns() - 10 * 10**9
        for p in clone.root.rglob("*"):
            if p.is_file() and ".git" not in p.parts:
                os.utime(p, ns=(then, then))
        _git(clone.root, "update-index", "-q", "--really-refresh")  # git reads them, records their stat
    return clone


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as f:  # one byte changed, the size kept
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))


def _check_in_process(clone: Project, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[str]]:
    """`imgbuild check` in the clone; returns its exit code and the outputs it opened."""
    from imgbuild import cli, gitcheck

    monkeypatch.setattr(gitcheck, "ASK_GIT_AFTER_BYTES", 0)  # ask git even for these small files
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(clone.cache))
    _opened.clear()
    _watching[:] = [clone.root / "assets"]
    try:
        code = cli.main(["-C", str(clone.root), "check"])
    finally:
        _watching.clear()
    return code, sorted(Path(p).name for p in _opened)


def test_the_lock_records_each_outputs_git_blob_id(project: Project) -> None:
    project.manifest(MANIFEST)
    assert project.build().code == 0
    for entry in project.lock()["targets"].values():
        for output in entry["outputs"]:
            blob = subprocess.run(["git", "hash-object", str(project.root / output["path"])],
                                  capture_output=True, text=True, check=True).stdout.strip()
            assert output["git_blob"] == blob


def test_a_fresh_clone_is_checked_without_hashing_its_outputs(make_project, monkeypatch,  # type: ignore[no-untyped-def]
                                                              capsys) -> None:
    clone = _clone(make_project)
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 0, capsys.readouterr()
    assert opened == []
    assert capsys.readouterr().out.split() == ["castle", "ok", "hero", "ok", "crowned", "ok"]


def test_an_output_git_sees_modified_is_hashed(make_project, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    clone = _clone(make_project)
    castle = clone.root / "assets/castle.png"
    st = castle.stat()
    _flip_a_byte(castle)
    os.utime(castle, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime kept: only ctime tells
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 1
    assert opened == ["castle.png"]
    assert "assets/castle.png was edited by hand" in capsys.readouterr().out


def test_an_output_whose_locked_blob_id_is_not_gits_is_hashed(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clone = _clone(make_project)
    lock = clone.root / "images.lock"
    hero_blob = clone.lock()["targets"]["hero"]["outputs"][0]["git_blob"]
    lock.write_text(lock.read_text().replace(hero_blob, "0" * 40))  # git's index holds other bytes
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 0  # hashed: the bytes are the locked ones after all
    assert opened == ["hero.png"]


def test_outputs_written_in_the_same_second_as_gits_index_are_hashed(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clone = _clone(make_project)
    st = (clone.root / "assets/hero.png").stat()
    os.utime(clone.root / ".git" / "index", ns=(st.st_mtime_ns, st.st_mtime_ns))  # racily clean, all of them
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 0
    assert opened == ["castle.png", "crowned.png", "hero.png"]


def test_outside_a_git_work_tree_every_output_is_hashed(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clone = _clone(make_project)
    shutil.rmtree(clone.root / ".git")
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 0
    assert opened == ["castle.png", "crowned.png", "hero.png"]


def test_outputs_hashed_ahead_on_threads_are_decided_as_when_hashed_in_turn(make_project, monkeypatch,  # type: ignore[no-untyped-def]
                                                                              capsys) -> None:
    from imgbuild import statcache

    monkeypatch.setattr(statcache, "PREFETCH_MIN_BYTES", 0)  # hash these small files ahead too
    clone = _clone(make_project)
    castle = clone.root / "assets/castle.png"
    st = castle.stat()
    _flip_a_byte(castle)
    os.utime(castle, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(clone.root / ".git" / "index", ns=(st.st_mtime_ns, st.st_mtime_ns))  # git vouches for none
    code, opened = _check_in_process(clone, monkeypatch)
    assert code == 1
    assert opened == ["castle.png", "crowned.png", "hero.png"]
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [words[:2] for words in lines] == [["castle", "modified"], ["hero", "ok"], ["crowned", "ok"]]
    assert "assets/castle.png was edited by hand" in " ".join(lines[0])
