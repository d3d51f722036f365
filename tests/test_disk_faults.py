"""Disk faults: a read-only or full cache, output folder or ``.imgbuild/``. A paid image is never
dropped (it reaches the cache, else its output, else a rescue folder), its cost is counted, the
build says what went wrong in one line and exits 1, and the next build does not pay again.

Full disks are small tmpfs mounts, made when the tests run as root and skipped (saying why)
otherwise. Read-only folders are read-only bind mounts as root (root ignores permission bits), and
plain ``chmod`` otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apiserver import KEY_ENV, ApiServer
from conftest import Project, Result
from test_http_build import manifest

TARGETS = ("hero", "ship", "tree")


class Disks:
    """Mounts made by one test, undone after it."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []
        self.chmodded: list[Path] = []

    def _mount(self, *args: str) -> None:
        if os.geteuid() != 0:
            pytest.skip(f"needs root to mount a small file system (running as uid {os.geteuid()})")
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"mounting is not permitted here: {result.stderr.strip()}")

    def full(self, folder: Path) -> None:
        """``folder`` becomes a 2 MB file system, filled to the last byte."""
        folder.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder))
        self.mounted.append(folder)
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for chunk in (65536, 4096, 1):  # down to the last byte
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break
        finally:
            os.close(fd)

    def read_only(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._mount("--bind", str(folder), str(folder))
            self.mounted.append(folder)
            self._mount("-o", "remount,bind,ro", str(folder))
        else:
            folder.chmod(0o555)
            self.chmodded.append(folder)
        try:
            (folder / "probe").touch()
        except OSError:
            return
        pytest.skip(f"cannot make {folder} read-only here")

    def undo(self) -> None:
        for folder in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        for folder in self.chmodded:
            folder.chmod(0o755)
        self.mounted.clear()
        self.chmodded.clear()


@pytest.fixture
def disks() -> Iterator[Disks]:
    made = Disks()
    yield made
    made.undo()


@pytest.fixture
def http_project(start_api_server: Callable[..., ApiServer], project: Project) -> tuple[Project, ApiServer]:
    server = start_api_server("openai")
    manifest(project, server, "".join(
        f'[images.{name}]\nprompt = "a picture of a {name}"\noutput = "assets/{name}.png"\nsize = "1024x1024"\n'
        "quality = \"low\"\n" for name in TARGETS))
    project.env[KEY_ENV] = server.key
    return project, server


def error_lines(result: Result) -> list[str]:
    assert "Traceback" not in result.err, result.err
    return [line for line in result.err.splitlines() if line.strip()]


def outputs_match_the_lock(project: Project) -> dict[str, str]:
    """Every target's output exists and is the bytes the lock records; returns path → sha256."""
    found = {}
    for name, entry in project.lock()["targets"].items():
        for out in entry["outputs"]:
            data = (project.root / out["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == out["sha256"], name
            found[out["path"]] = out["sha256"]
    return found


def assert_the_next_build_pays_nothing(project: Project, server: ApiServer, *, restored: int) -> None:
    before = len(server.received)
    rerun = project.build()
    assert rerun.code == 0, rerun.err
    assert len(server.received) == before and rerun.requests == 0
    assert rerun.summary["restored"] == restored
    assert set(outputs_match_the_lock(project)) == {f"assets/{n}.png" for n in TARGETS}


@pytest.mark.parametrize("fault", ["read_only_objects", "read_only", "full"])
def test_a_cache_that_cannot_take_paid_images_leaves_them_in_their_outputs(
        disks: Disks, http_project: tuple[Project, ApiServer], fault: str) -> None:
    project, server = http_project
    if fault == "read_only_objects":
        disks.read_only(project.cache / "objects")
    elif fault == "read_only":
        disks.read_only(project.cache)
    else:
        disks.full(project.cache)

    result = project.build()

    assert result.code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: the cache cannot take paid images"), result.err
    assert len(server.received) == result.requests == 3
    assert result.summary["cost_usd"] > 0 and result.summary["uncached"] == 3
    assert [e for e in result.events if e["event"] == "warning"] == []
    assert len(outputs_match_the_lock(project)) == 3
    assert_the_next_build_pays_nothing(project, server, restored=0)


@pytest.mark.parametrize("fault", ["read_only", "full"])
def test_an_output_folder_that_cannot_be_written_keeps_the_paid_images_in_the_cache(
        disks: Disks, http_project: tuple[Project, ApiServer], fault: str) -> None:
    project, server = http_project
    (disks.read_only if fault == "read_only" else disks.full)(project.root / "assets")

    result = project.build()

    assert result.code == 1 and error_lines(result) == []
    failed = [e for e in result.events if e["event"] == "failed"]
    assert failed and all("assets/" in e["detail"] and "\n" not in e["detail"] for e in failed), result.out
    assert len(server.received) == result.requests == 3
    assert result.summary["cost_usd"] > 0 and result.summary["failed"] == 3
    disks.undo()
    assert_the_next_build_pays_nothing(project, server, restored=3)


def test_a_read_only_state_folder_stops_the_build_before_anything_is_paid(
        disks: Disks, http_project: tuple[Project, ApiServer]) -> None:
    project, server = http_project
    disks.read_only(project.root / ".imgbuild")

    result = project.build()

    assert result.code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and ".imgbuild" in lines[0], result.err
    assert server.received == []


def test_a_full_state_folder_loses_no_paid_image(disks: Disks, http_project: tuple[Project, ApiServer]) -> None:
    project, server = http_project
    disks.full(project.root / ".imgbuild")

    result = project.build()

    assert result.code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and ".imgbuild" in lines[0] and "no space left" in lines[0].lower(), result.err
    # The build's journal cannot even be started there: it stops before paying for anything.
    assert server.received == []
    disks.undo()
    assert project.build().code == 0 and len(server.received) == 3




def test_an_image_neither_the_cache_nor_its_output_can_take_goes_to_the_rescue_folder(
        disks: Disks, http_project: tuple[Project, ApiServer]) -> None:
    project, server = http_project
    disks.read_only(project.cache / "objects")
    disks.read_only(project.root / "assets")

    result = project.build("-j", "1", "hero")

    assert result.code == 1 and len(server.received) == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "kept in .imgbuild/rescue/hero" in lines[0], result.err
    rescued = list((project.root / ".imgbuild" / "rescue" / "hero").iterdir())
    assert [p.read_bytes()[:8] for p in rescued] == [b"\x89PNG\r\n\x1a\n"]
    assert result.summary["cost_usd"] > 0 and result.summary["uncached"] == 1
