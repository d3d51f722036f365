"""Crash safety: a build killed with SIGKILL mid-way loses nothing that finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib

from conftest import Project

TARGETS = 8


def _manifest(project: Project) -> None:
    body = ['[provider]\nname = "placeholder"\nconcurrency = 2\n']
    for i in range(TARGETS):
        body.append(f'[images.t{i}]\nprompt = "picture number {i}"\noutput = "out/t{i}.png"\n')
    project.manifest("\n".join(body))


def _wait_for_lock_entries(project: Project, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = tomllib.loads((project.root / "images.lock").read_text()).get("targets", {})
            if len(done) >= at_least:
                return
        except (FileNotFoundError, tomllib.TOMLDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError("the build did not finish any target in time")


def test_sigkill_mid_build_leaves_a_sound_lock_and_the_rerun_redoes_only_the_rest(project: Project) -> None:
    _manifest(project)
    env = {**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "0.6"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        _wait_for_lock_entries(project, 2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    lock = tomllib.loads((project.root / "images.lock").read_text())  # parses: never half-written
    finished = set(lock["targets"])
    assert 2 <= len(finished) < TARGETS

    # No partial file at any output path: every file there is a whole PNG the lock or cache knows.
    from PIL import Image

    for i in range(TARGETS):
        path = project.root / f"out/t{i}.png"
        if path.exists():
            with Image.open(path) as im:
                im.load()  # raises on a truncated file
    for name in finished:
        for out in lock["targets"][name]["outputs"]:
            assert (project.root / out["path"]).exists()

    rerun = project.build()
    assert rerun.code == 0, rerun.err
    built = {e["target"] for e in rerun.events if e["event"] == "built"}
    assert built.isdisjoint(finished)
    # Targets that finished their request but not their lock entry come back from the cache.
    assert rerun.requests + rerun.summary["restored"] + len(finished) == TARGETS
    assert rerun.requests <= TARGETS - len(finished)
    assert project.run("check").code == 0
