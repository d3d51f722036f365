"""The CLI process: no collector passes over what a run loads, and an exit without teardown."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project

MANIFEST = """
[provider]
name = "placeholder"
""" + "".join(f"""
[images.t{i:03d}]
prompt = "target {i}"
output = "assets/t{i:03d}.png"
size = "1024x640"
""" for i in range(12))


class _Collections:
    """Counts the collector's passes, and how many objects were frozen during each."""

    def __init__(self) -> None:
        self.frozen: list[int] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.frozen.append(gc.get_freeze_count())

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def test_a_status_runs_without_a_collector_pass(project: Project, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from imgbuild import cli

    project.manifest(MANIFEST)
    assert project.build().code == 0
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(project.cache))
    with _Collections() as passes:
        assert cli.main(["-C", str(project.root), "status"]) == 0
    assert passes.frozen == []
    assert gc.isenabled()  # in-process callers get their collector back
    assert len(capsys.readouterr().out.splitlines()) == 12


def test_a_build_collects_but_never_over_what_it_loaded(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild import cli

    project.manifest(MANIFEST)
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(project.cache))
    with _Collections() as passes:
        assert cli.main(["-C", str(project.root), "build", "-q"]) == 0
    assert passes.frozen, "a long build must collect its garbage"
    assert min(passes.frozen) > 10_000  # the loaded project sits in the permanent generation
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_the_console_entry_point_flushes_and_exits_without_teardown(project: Project, tmp_path: Path) -> None:
    project.manifest(MANIFEST)
    assert project.build().code == 0
    marker = tmp_path / "atexit-ran"
    code = (f"import atexit, sys; atexit.register(lambda: open({str(marker)!r}, 'w').close()); "
            f"sys.argv = ['imgbuild', '-C', {str(project.root)!r}, 'status', '--json']; "
            "from imgbuild.cli import run; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=project.env)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 12 and proc.stdout.endswith("}\n")  # all of it, flushed
    assert not marker.exists()  # no teardown: atexit handlers (and the rest) were skipped


def test_the_console_entry_point_passes_the_exit_code_on(project: Project) -> None:
    project.manifest(MANIFEST)
    proc = subprocess.run([sys.executable, "-m", "imgbuild", "-C", str(project.root), "check"],
                          capture_output=True, text=True, env=project.env)
    assert proc.returncode == 1 and "check: 12 of 12 target(s) not ok" in proc.stderr
