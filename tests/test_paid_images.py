"""A paid image is never dropped: the user cache's project registry survives builds of many
projects at once (so gc keeps what their locks need), and what an edit uploads is exactly what its
lock records."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from apiserver import KEY_ENV, ApiServer
from conftest import Project
from test_http_build import manifest

PROJECTS = 10


def test_projects_building_at_once_all_stay_registered_and_gc_keeps_what_their_locks_need(
        make_project: Callable[[str], Project]) -> None:
    projects = [make_project(f"p{i}") for i in range(PROJECTS)]
    for i, project in enumerate(projects):
        project.manifest(f'[provider]\nname = "placeholder"\n[images.only]\nprompt = "picture of project {i}"\n'
                         'quality = "low"\n')
    # Each build waits for its project's run lock, held here and let go of all at once: the ten
    # register themselves within the same moment, not spread over their start-up times.
    held = []
    for project in projects:
        (project.root / ".imgbuild").mkdir()
        fd = os.open(project.root / ".imgbuild" / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    procs = [subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(p.root), "build", "-q"],
                              env=p.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in projects]
    for proc in procs:  # every build says it waits
        assert proc.stderr is not None
        assert "waiting" in proc.stderr.readline().decode()
    for fd in held:
        os.close(fd)
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    cache = projects[0].cache

    registered = json.loads((cache / "projects.json").read_text())
    assert sorted(registered) == sorted(str(p.root.resolve()) for p in projects)
    gc = projects[0].run("gc", "--older-than", "0")
    assert gc.code == 0, gc.err
    for project in projects:
        for out in project.lock()["targets"]["only"]["outputs"]:
            assert (cache / "objects" / out["sha256"][:2] / out["sha256"][2:]).is_file()


def test_gc_removes_nothing_when_the_project_registry_cannot_be_read(project: Project) -> None:
    project.manifest('[provider]\nname = "placeholder"\n[images.only]\nprompt = "a picture"\nquality = "low"\n')
    assert project.build().code == 0
    (project.cache / "projects.json").write_text("{not json")
    objects = sorted((project.cache / "objects").rglob("*"))

    gc = project.run("gc", "--older-than", "0")

    assert gc.code == 2 and len(gc.err.strip().splitlines()) == 1 and "projects.json" in gc.err
    assert sorted((project.cache / "objects").rglob("*")) == objects


def _noise_png(path: Path, seed: int, size: int) -> bytes:
    """A PNG of random pixels (it compresses to nothing: a big upload)."""
    from PIL import Image

    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3) if seed else bytes(size * size * 3)).save(path)
    return path.read_bytes()


def test_an_input_rewritten_while_its_edit_uploads_is_recorded_as_the_bytes_sent(
        start_api_server: Callable[..., ApiServer], project: Project) -> None:
    server = start_api_server("openai")
    art = project.root / "art"
    art.mkdir()
    contents = [_noise_png(art / f"v{i}.png", i, 512 + 64 * i) for i in range(3)]
    (art / "base.png").write_bytes(contents[0])
    manifest(project, server, '[images.edit]\nprompt = "Add a crown"\nimages = ["art/base.png"]\n'
                              'size = "1024x1024"\nquality = "low"\n')
    stop = threading.Event()

    def rewrite_in_place_and_by_rename() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            data = contents[i % len(contents)]
            if i % 2:  # in place, as an editor that truncates and writes does
                fd = os.open(art / "base.png", os.O_WRONLY)
                os.write(fd, data)
                os.ftruncate(fd, len(data))
                os.close(fd)
            else:
                (art / "next.png").write_bytes(data)
                os.replace(art / "next.png", art / "base.png")
            time.sleep(0.05)

    writer = threading.Thread(target=rewrite_in_place_and_by_rename, daemon=True)
    writer.start()
    outcomes: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline and len(outcomes) < 8:
            before = len(server.received)
            result = project.build("-B", env={KEY_ENV: server.key})
            text = result.out + result.err
            assert "Too much data" not in text and "Traceback" not in text, text
            sent = server.received[before:]
            if result.code == 0:
                locked = project.lock()["targets"]["edit"]["inputs"][0]["sha256"]
                assert sent and sent[-1].files[0][3] == locked, "the lock records other bytes than those sent"
                outcomes.append((0, locked))
            else:
                # Refused before sending (changed while being prepared), or a corrupt mix the server
                # rejected: either way the lock did not record bytes that were not sent.
                assert result.code in (1, 2), text
                outcomes.append((result.code, text))
    finally:
        stop.set()
        writer.join()
    assert sum(1 for code, _ in outcomes if code == 0) >= 2, outcomes



def test_gc_removes_nothing_while_a_registered_projects_lock_cannot_be_read(project: Project) -> None:
    project.manifest('[provider]\nname = "placeholder"\n[images.only]\nprompt = "a picture"\nquality = "low"\n')
    assert project.build().code == 0
    lock = project.root / "images.lock"
    lock.write_text("<<<<<<< HEAD\n" + lock.read_text() + "=======\n>>>>>>> other\n")  # a merge conflict
    (project.root / "poetry.lock").write_text("# not imgbuild's\n")
    objects = sorted((project.cache / "objects").rglob("*"))

    gc = project.run("gc", "--older-than", "0")

    assert gc.code == 2 and len(gc.err.strip().splitlines()) == 1 and "images.lock" in gc.err, gc.err
    assert sorted((project.cache / "objects").rglob("*")) == objects
