"""Whole builds over HTTP (issue 3's acceptance): the CLI in a subprocess against the local API
server, asserting what the server received and what the build left on disk and printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from apiserver import KEY_ENV, ApiServer, Fault
from conftest import Project


def manifest(project: Project, server: ApiServer, targets: str, concurrency: int = 4) -> None:
    project.manifest(f"""
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        concurrency = {concurrency}
        max_retries = 2
        """ + targets)


def everything_written(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_the_key_is_in_no_file_the_build_wrote_and_in_nothing_it_printed(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    key_env = {KEY_ENV: server.key}
    project.png("art/base.png", size=(1024, 1024))
    manifest(project, server, """
        [images.hero]
        prompt = "A knight on a hill"
        [images.crowned]
        prompt = "Add a crown"
        images = ["art/base.png"]
        [images.battle]
        prompt = "A bloody battle"
        """)
    server.inject(Fault("429", retry_after="0"))
    server.inject(Fault("500"))
    server.inject_for("bloody", Fault("moderation"))

    first = project.build("-v", env=key_env)
    server.inject(Fault("401"))  # its message echoes the key
    second = project.build("-B", "-v", "hero", env=key_env)
    status = project.run("status", "-v", env=key_env)

    assert first.code == 1 and second.code == 1, (first.err, second.err)
    assert "battle" in first.err + first.out and "moderation_blocked" in first.err + first.out
    assert KEY_ENV in second.err + second.out
    printed = "".join(r.out + r.err for r in (first, second, status))
    assert server.key not in printed
    written = everything_written(project.root, project.cache)
    assert any(p.name == "images.lock" for p in written)
    leaking = [p for p in written if server.key.encode() in p.read_bytes()]
    assert leaking == []


def _lock_targets(project: Project) -> dict[str, Any]:
    try:
        return dict(tomllib.loads((project.root / "images.lock").read_text()).get("targets", {}))
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return {}


def test_a_build_killed_mid_way_reruns_only_what_the_lock_lacks(
        start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai", latency_s=0.5)
    count = 8
    manifest(project, server, "".join(
        f'[images.t{i}]\nprompt = "picture number {i}"\noutput = "out/t{i}.png"\n'
        for i in range(count)), concurrency=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
        env={**project.env, KEY_ENV: server.key}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_lock_targets(project)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)

    finished = set(_lock_targets(project))
    assert 2 <= len(finished) < count
    before = len(server.received)
    from PIL import Image

    for path in (project.root / "out").iterdir():  # only whole images at output paths
        assert path.suffix == ".png", path
        with Image.open(path) as im:
            im.load()

    rerun = project.build(env={KEY_ENV: server.key})

    assert rerun.code == 0, rerun.err
    asked_again = {r.fields["prompt"] for r in server.received[before:]}
    assert asked_again.isdisjoint({f"picture number {name[1:]}" for name in finished})
    assert len(asked_again) == rerun.requests == len(server.received) - before
    assert rerun.requests + rerun.summary["restored"] == count - len(finished)
    assert project.run("check").code == 0
