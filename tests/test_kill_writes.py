"""SIGKILL while writes are in flight: a build of many quick targets is mostly writes (renders into
staging, cache objects, run records, outputs, lock rewrites, state files), so kills at varied
delays land in the middle of them. After every kill the lock parses and tells the truth; after
the next build nothing is left over and nothing finished is made again."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from conftest import Project, Result

TARGETS = 24
BUDGET_S = 8.0  # the kill loop's share of the suite's time (it goes on, bounded, until a kill lands mid-write)


def write_manifest(project: Project, round_no: int) -> None:
    body = ['[provider]\nname = "placeholder"\nconcurrency = 4\n']
    for i in range(TARGETS):
        body.append(f'[images.t{i}]\nprompt = "picture {i}, round {round_no}"\noutput = "out/t{i}.png"\n'
                    'quality = "low"\n')
    project.manifest("\n".join(body))


def lock_targets(project: Project) -> dict[str, dict]:
    path = project.root / "images.lock"
    if not path.exists():
        return {}
    return dict(tomllib.loads(path.read_text()).get("targets", {}))  # raises if torn


def assert_outputs_are_whole_and_true_to_the_lock(project: Project) -> None:
    """Each locked output is absent, the bytes the lock records, or (a rebuild killed between
    writing its output and rewriting the lock: the lock is rewritten after each target completes)
    an image already in the cache, which the next build adopts for free. Never unknown bytes."""
    from PIL import Image

    for name, entry in lock_targets(project).items():
        for out in entry["outputs"]:
            path = project.root / out["path"]
            if path.exists():
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
                cached = (project.cache / "objects" / sha[:2] / sha[2:]).is_file()
                assert sha == out["sha256"] or cached, f"{name}: {out['path']} is neither what the lock says nor cached"
    for path in (project.root / "out").glob("*.png") if (project.root / "out").exists() else ():
        with Image.open(path) as im:
            im.load()  # a torn file raises


def leftovers(project: Project) -> list[Path]:
    temp = [p for p in project.root.rglob(".imgbuild-tmp-*")]
    staged = [p for root in (project.cache / "tmp", project.root / ".imgbuild" / "tmp") if root.exists()
              for p in root.glob("stage-*")]
    return temp + staged


def test_sigkill_during_writes_never_tears_the_lock_or_an_output_and_the_next_build_cleans_up(
        project: Project) -> None:
    rng = random.Random(9)
    started = time.monotonic()
    kills = 0
    caught_mid_write = 0  # kills that left a temp file or a staging folder: writes were in flight
    round_no = 0
    while (time.monotonic() - started < BUDGET_S or kills < 4 or not caught_mid_write) \
            and time.monotonic() - started < 6 * BUDGET_S:
        round_no += 1
        write_manifest(project, round_no)
        proc = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "-q"],
                                env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=rng.uniform(0.4, 3.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            caught_mid_write += bool(leftovers(project))
        else:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        assert_outputs_are_whole_and_true_to_the_lock(project)

    # Finished under the manifest as it is now: these must not be made again.
    finished = {name for name, entry in lock_targets(project).items() if f"round {round_no}" in entry["prompt"]}
    rerun = project.build()
    assert rerun.code == 0, rerun.err
    made = {e["target"] for e in rerun.events if e["event"] == "built"}
    assert made.isdisjoint(finished)
    assert rerun.requests == len(made) <= TARGETS - len(finished)
    assert leftovers(project) == []
    assert_outputs_are_whole_and_true_to_the_lock(project)
    assert set(lock_targets(project)) == {f"t{i}" for i in range(TARGETS)}
    assert project.run("check").code == 0
    assert kills >= 4 and caught_mid_write >= 1, (kills, caught_mid_write)


RESTORED = 120
RESTORE_BUDGET_S = 3.0


def test_sigkill_while_restoring_in_batches_leaves_each_output_absent_or_whole(project: Project) -> None:
    # Restores copy a batch of files to temp names, sync them together, then rename each: a kill
    # at any point leaves an output absent or the locked bytes, never a partial or empty file.
    body = ['[provider]\nname = "placeholder"\nconcurrency = 4\n']
    body += [f'[images.r{i:03d}]\nprompt = "restored {i}"\noutput = "out/r{i:03d}.png"\nquality = "low"\n'
             for i in range(RESTORED)]
    project.manifest("\n".join(body))
    assert project.build("-j", "4").code == 0
    locked = {e["outputs"][0]["path"]: e["outputs"][0]["sha256"] for e in lock_targets(project).values()}
    command = [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "-q"]
    # How long a whole restore takes on this machine: the kills land anywhere within it.
    for path in (project.root / "out").glob("*.png"):
        path.unlink()
    timed = time.monotonic()
    subprocess.run(command, env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    whole = time.monotonic() - timed
    rng = random.Random(3)
    started = time.monotonic()
    kills = caught_mid_write = 0
    while (time.monotonic() - started < RESTORE_BUDGET_S or kills < 3 or not caught_mid_write) \
            and time.monotonic() - started < 10 * RESTORE_BUDGET_S:
        for path in (project.root / "out").glob("*.png"):
            path.unlink()
        proc = subprocess.Popen(command, env=project.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.95) * whole)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            caught_mid_write += any((project.root / "out").glob(".imgbuild-tmp-*"))
        for rel, sha in locked.items():
            path = project.root / rel
            if path.exists():
                assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"{rel} is not whole"
    rerun = project.build()
    assert rerun.code == 0, rerun.err
    assert rerun.requests == 0
    assert leftovers(project) == []
    assert all(hashlib.sha256((project.root / rel).read_bytes()).hexdigest() == sha for rel, sha in locked.items())
    assert kills >= 3 and caught_mid_write >= 1, (kills, caught_mid_write)


LOCK_TARGETS = 40
LOCK_ROUNDS = 2  # builds, each rewriting every entry of the lock


def build_while_reading(project: Project, read_once: Callable[[], None]) -> Result:
    """A build, with ``read_once`` called back to back on a thread until the build has ended."""
    import threading

    building = threading.Event()
    building.set()

    def read_back_to_back() -> None:
        while building.is_set():
            read_once()

    reader = threading.Thread(target=read_back_to_back)
    reader.start()
    try:
        return project.build("-j", "4")
    finally:
        building.clear()
        reader.join()


def test_a_reader_of_the_lock_during_builds_only_ever_sees_a_whole_lock(project: Project) -> None:
    # What a SIGKILL at that instant would leave: the lock is read back-to-back while builds rewrite
    # it (large entries: long prompts), and every state seen must parse as a whole lock. A lock
    # written in place (truncate, then write) shows an empty or cut file here within a few rewrites.
    lock_path = project.root / "images.lock"
    seen: dict[bytes, str] = {}  # the states read, each parsed once → what was wrong with it

    def read_once() -> None:
        try:
            data = lock_path.read_bytes()
        except FileNotFoundError:
            return
        if data not in seen:
            try:
                parsed = tomllib.loads(data.decode("utf-8"))
                seen[data] = "" if parsed.get("version") == 1 else "no version"
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                seen[data] = f"torn: {exc}"

    for rounds in range(1, LOCK_ROUNDS + 1):
        padding = " and a long description of the scene" * 120
        body = ['[provider]\nname = "placeholder"\nconcurrency = 4\n']
        body += [f'[images.p{i:03d}]\nprompt = "round {rounds}, picture {i}{padding}"\n'
                 f'output = "out/p{i:03d}.png"\nquality = "low"\n' for i in range(LOCK_TARGETS)]
        project.manifest("\n".join(body))
        result = build_while_reading(project, read_once)
        assert result.code == 0, result.err
    torn = [why for why in seen.values() if why]
    assert not torn, torn[:3]
    assert len(seen) >= 2 * LOCK_ROUNDS  # the reader saw the lock rewritten during the builds


WHOLE_TARGETS = 24
WHOLE_ROUNDS = 3


def test_a_reader_of_the_outputs_during_restores_only_ever_sees_no_file_or_the_whole_image(
        project: Project) -> None:
    # As the lock's test above, for the outputs: each is copied to a temp name and renamed into
    # place, so a reader (what a SIGKILL at that instant would leave) sees no file or the whole
    # image, never a cut one. Large accepted images (~3 MB of noise each) make each copy last: an
    # output written in place shows an empty or cut file here within a round.
    from PIL import Image

    body = ['[provider]\nname = "placeholder"\n']
    body += [f'[images.w{i:02d}]\nprompt = "whole {i}"\noutput = "out/w{i:02d}.png"\nsize = "1024x1024"\n'
             for i in range(WHOLE_TARGETS)]
    project.manifest("\n".join(body))
    (project.root / "out").mkdir()
    for i in range(WHOLE_TARGETS):
        Image.effect_noise((1024, 1024), 60 + i).convert("RGB").save(project.root / f"out/w{i:02d}.png",
                                                                     compress_level=0)
    assert project.run("accept", *(f"w{i:02d}" for i in range(WHOLE_TARGETS))).code == 0
    locked = {e["outputs"][0]["path"]: e["outputs"][0]["sha256"] for e in lock_targets(project).values()}
    seen_whole = 0
    cut: list[str] = []

    def read_once() -> None:
        nonlocal seen_whole
        for rel, sha in locked.items():
            try:
                data = (project.root / rel).read_bytes()
            except FileNotFoundError:
                continue
            if hashlib.sha256(data).hexdigest() == sha:
                seen_whole += 1
            else:
                cut.append(f"{rel}: {len(data)} bytes")

    for _ in range(WHOLE_ROUNDS):
        for rel in locked:
            (project.root / rel).unlink()
        result = build_while_reading(project, read_once)
        assert result.code == 0, result.err
        assert result.summary["restored"] == WHOLE_TARGETS and result.requests == 0
    assert not cut, cut[:3]
    assert seen_whole >= WHOLE_TARGETS  # the reader did read the outputs as they were restored
