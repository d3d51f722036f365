"""The lock's journal: finished targets survive a SIGKILL though the lock is rewritten only now and
then; the lock is written a bounded number of times, never with the same bytes; restores run side
by side."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Project

TARGETS = 12


def _manifest(project: Project, n: int = TARGETS, concurrency: int = 2) -> None:
    body = [f'[provider]\nname = "placeholder"\nconcurrency = {concurrency}\n']
    for i in range(n):
        body.append(f'[images.t{i:02d}]\nprompt = "picture number {i}"\noutput = "out/t{i:02d}.png"\n')
    project.manifest("\n".join(body))


def _start_build(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json", *args],
        env={**project.env, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _kill_after_built(project: Project, count: int) -> tuple[set[str], set[str]]:
    """Start a slow build, SIGKILL it right after its ``count``-th target is built; returns the
    targets it reported finished and those the lock file held at that moment."""
    proc = _start_build(project, env={"IMGBUILD_PLACEHOLDER_DELAY": "0.5"})
    finished: set[str] = set()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("event") == "built":
                finished.add(event["target"])
                if len(finished) == count:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert len(finished) == count
    locked = set(project.lock()["targets"]) if (project.root / "images.lock").exists() else set()
    return finished, locked


def test_targets_finished_before_a_sigkill_are_ok_on_the_next_status_and_never_requested_again(
        project: Project) -> None:
    _manifest(project)
    finished, locked = _kill_after_built(project, 3)
    assert not finished <= locked, "precondition: the lock file lags behind what the build finished"

    status = project.run("status", "--json")
    states = {e["target"]: e["state"] for e in status.events}
    assert all(states[name] == "ok" for name in finished), states
    # status folded the journal into the lock file itself: a commit now holds every finished target.
    assert finished <= set(project.lock()["targets"])

    rerun = project.build()
    assert rerun.code == 0, rerun.err
    touched = {e["target"] for e in rerun.events if e["event"] in ("built", "restored")}
    assert touched.isdisjoint(finished)
    assert rerun.requests <= TARGETS - len(finished)
    assert project.run("check").code == 0


def test_a_torn_last_journal_record_is_ignored(project: Project) -> None:
    _manifest(project)
    finished, locked = _kill_after_built(project, 3)
    journal = project.root / ".imgbuild" / "lock.journal"
    lines = journal.read_bytes().split(b"\n")
    records = [json.loads(line) for line in lines[1:] if line]
    torn = records[-1]["set"]
    assert torn not in locked, "precondition: the last record is the only place the target is recorded"
    # The process died in the middle of writing its last record.
    whole = b"\n".join(lines[:-2]) + b"\n"
    journal.write_bytes(whole + lines[-2][: len(lines[-2]) // 2])

    status = project.run("status", "--json")
    assert status.code == 0, status.err
    states = {e["target"]: e["state"] for e in status.events}
    assert states[torn] != "ok"
    assert all(states[r["set"]] == "ok" for r in records[:-1])


def _lock_writes(trace: Path) -> list[str]:
    return trace.read_text().split() if trace.exists() else []


def test_the_lock_is_written_at_most_once_a_second_plus_once_at_the_end(project: Project, tmp_path: Path) -> None:
    _manifest(project, 40, concurrency=8)
    trace = tmp_path / "lock-writes"
    started = time.monotonic()
    result = project.build("-j", "8", env={"IMGBUILD_PLACEHOLDER_DELAY": "0.05",
                                           "IMGBUILD_TRACE_LOCK_WRITES": str(trace)})
    elapsed_s = time.monotonic() - started
    assert result.code == 0, result.err
    writes = _lock_writes(trace)
    assert 1 <= len(writes) <= elapsed_s + 1, (len(writes), elapsed_s)
    assert writes[-1] == hashlib.sha256((project.root / "images.lock").read_bytes()).hexdigest()
    assert not (project.root / ".imgbuild" / "lock.journal").exists()


def test_the_lock_is_never_rewritten_with_the_same_bytes(project: Project, tmp_path: Path) -> None:
    _manifest(project)
    assert project.build().code == 0
    before = (project.root / "images.lock").stat()
    for i in range(TARGETS):
        (project.root / f"out/t{i:02d}.png").unlink()
    trace = tmp_path / "lock-writes"
    result = project.build(env={"IMGBUILD_TRACE_LOCK_WRITES": str(trace)})
    assert result.code == 0, result.err
    assert result.summary["restored"] == TARGETS
    assert _lock_writes(trace) == []
    after = (project.root / "images.lock").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _restore_threads(pid: int) -> int:
    count = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/comm") as f:
                    count += f.read().startswith("imgbuild-restor")
            except OSError:
                pass
    except OSError:
        pass
    return count


def test_restores_run_side_by_side(project: Project) -> None:
    # A pool only starts another thread when every thread it has is busy: two of them alive means
    # two restores were in flight at once.
    _manifest(project, 300, concurrency=4)
    assert project.build("-j", "4").code == 0
    for i in range(300):
        (project.root / f"out/t{i:02d}.png").unlink()
    proc = _start_build(project)
    most = 0
    while proc.poll() is None:
        most = max(most, _restore_threads(proc.pid))
        time.sleep(0.005)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["restored"] == 300
    assert most >= 2


def test_recording_the_entry_the_lock_already_holds_writes_no_journal_line(project: Project) -> None:
    # A restore records the very entry the lock holds: 10,000 of them must not cost 10,000 journal
    # lines, nor the rendering of 10,000 entries the lock's text already has.
    from imgbuild.fsutil import allow_writes_under
    from imgbuild.lockfile import Lock

    _manifest(project, 2)
    assert project.build().code == 0
    allow_writes_under(project.root)  # in this process, as Project.load does
    lock = Lock.load(project.root / "images.lock", project.root / ".imgbuild")
    lock.begin_journal()
    try:
        journal = project.root / ".imgbuild" / "lock.journal"
        empty = journal.stat().st_size
        lock.set("t00", json.loads(json.dumps(lock.get("t00"))))  # equal, not the same object
        assert journal.stat().st_size == empty
        changed = {**lock.get("t01"), "built_at": "2001-01-01T00:00:00Z"}  # type: ignore[dict-item]
        lock.set("t01", changed)
        assert journal.stat().st_size > empty
    finally:
        lock.end_journal()
