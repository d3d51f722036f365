"""The scoped path (scoped.py): a change to a few target tables is built without loading the
project, and gives what the full path gives — the same lock bytes, outputs, lines and exit code.
Every other kind of change leaves the build to the full path, and after a scoped build the next
no-op takes the fast path and the next change the scoped path again."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project, Result, copy_of_built

HEAD = 'out_dir = "out"\n\n[provider]\nname = "placeholder"\n\n[vars]\nstyle = "flat"\n\n'
TABLES = {
    "t0": 'prompt = "a red fox, ${style}"\nsize = "1024x640"\n',
    "t1": 'prompt = "a blue jay"\nsize = "1024x640"\n',
    "t2": 'prompt = "a green frog"\nsize = "1024x640"\n',
    "t3": 'prompt = "t2 with a hat"\nimages = ["out/t2.png", "art/base.png"]\n',  # reads t2's output
}


def manifest(tables: dict[str, str], head: str = HEAD) -> str:
    return head + "\n".join(f"[images.{name}]\n{body}" for name, body in tables.items())


def settle(project: Project) -> None:
    """Make every file look written long ago (not racily clean), then run the no-op build that
    records the fast path's state and the scoped path's."""
    past = time.time() - 30
    for path in project.root.rglob("*"):
        if path.is_file() and ".imgbuild" not in path.parts:
            os.utime(path, (past, past))
    result = project.build()
    assert result.code == 0 and result.summary["built"] == 0, result.err
    assert (project.root / ".imgbuild" / "change.marshal").exists()


def _base_png(project: Project) -> None:
    project.png("art/base.png", size=(1024, 640))


def ready(project: Project, tables: dict[str, str] = TABLES) -> Project:
    copy_of_built(project, manifest(tables), _base_png)  # its first build, made once
    settle(project)
    return project


def traced(project: Project, tmp_path: Path, *args: str, env: dict[str, str] | None = None
           ) -> tuple[Result, list[str]]:
    trace = tmp_path / f"trace-{project.root.name}"
    trace.unlink(missing_ok=True)
    result = project.build(*args, env={"IMGBUILD_TRACE_SCOPED": str(trace), **(env or {})})
    return result, trace.read_text().splitlines() if trace.exists() else []


def same_text(text: str) -> str:
    """Output with what differs between two runs of the same build (timings, dates, the folder)
    taken out."""
    text = re.sub(r'"seconds": [0-9.]+', '"seconds": 0', text)
    text = re.sub(r'built_at = "[^"]*"', 'built_at = ""', text)
    text = re.sub(r'"built_at": "[^"]*"', '"built_at": ""', text)
    return re.sub(r"/\S*/proj-[ab]\b", "<root>", text)


def outputs(project: Project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((project.root / "out").glob("*.png"))}


@pytest.fixture
def pair(make_project: Callable[..., Project]) -> tuple[Project, Project]:
    """Two identical projects with caches of their own: ``a`` may take the scoped path, ``b`` not
    (its scoped state is removed before each change), so ``b`` shows what the full path does."""
    return ready(make_project("proj-a", cache="cache-a")), ready(make_project("proj-b", cache="cache-b"))


def both(pair: tuple[Project, Project], tmp_path: Path, text: str) -> tuple[list[str], list[str], Result]:
    a, b = pair
    (b.root / ".imgbuild" / "change.marshal").unlink()
    results = []
    traces = []
    for project in (a, b):
        project.manifest(text)
        result, trace = traced(project, tmp_path)
        results.append(result)
        traces.append(trace)
    ra, rb = results
    assert ra.code == rb.code, (ra.err, rb.err)
    assert same_text(ra.out) == same_text(rb.out)
    assert same_text(ra.err) == same_text(rb.err)
    assert same_text(a.read("images.lock").decode()) == same_text(b.read("images.lock").decode())
    assert outputs(a) == outputs(b)
    return traces[0], traces[1], ra


def test_an_edited_prompt_builds_that_target_alone_as_the_full_path_would(pair: tuple[Project, Project],
                                                                          tmp_path: Path) -> None:
    edited = manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'})
    scoped, full, result = both(pair, tmp_path, edited)
    assert scoped == ["scoped t1"]
    assert full[0].startswith("full:")
    assert (result.summary["built"], result.summary["up_to_date"]) == (1, 3)


def test_an_edited_size_builds_that_target_alone_as_the_full_path_would(pair: tuple[Project, Project],
                                                                        tmp_path: Path) -> None:
    edited = manifest({**TABLES, "t0": 'prompt = "a red fox, ${style}"\nsize = "1024x1024"\n'})
    scoped, _, _ = both(pair, tmp_path, edited)
    assert scoped == ["scoped t0"]


def test_an_edited_target_that_others_read_builds_them_too(pair: tuple[Project, Project], tmp_path: Path) -> None:
    edited = manifest({**TABLES, "t2": 'prompt = "a green frog on a leaf"\nsize = "1024x640"\n'})
    scoped, _, result = both(pair, tmp_path, edited)
    assert scoped == ["scoped t2"]
    assert sorted(e["target"] for e in result.events if e["event"] == "built") == ["t2", "t3"]
    assert pair[0].build().summary["built"] == 0  # and the next build finds all four up to date


def test_a_table_made_invalid_gets_the_full_paths_located_error(pair: tuple[Project, Project], tmp_path: Path) -> None:
    scoped, _, _ = both(pair, tmp_path, manifest({**TABLES, "t1": 'prompt = "a blue jay"\nquality = "ultra"\n'}))
    assert scoped[0].startswith("full:")
    assert "images.t1.quality" in pair[0].build().err


def test_a_new_table_takes_the_full_path(pair: tuple[Project, Project], tmp_path: Path) -> None:
    scoped, _, _ = both(pair, tmp_path, manifest({**TABLES, "t4": 'prompt = "a grey owl"\nsize = "1024x640"\n'}))
    assert scoped[0].startswith("full:")


def test_a_removed_table_takes_the_full_path(pair: tuple[Project, Project], tmp_path: Path) -> None:
    tables = dict(TABLES)
    del tables["t1"]
    scoped, _, _ = both(pair, tmp_path, manifest(tables))
    assert scoped[0].startswith("full:")


def test_an_edit_back_to_a_prompt_built_before_restores_it_from_the_cache(pair: tuple[Project, Project],
                                                                         tmp_path: Path) -> None:
    both(pair, tmp_path, manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    for project in pair:
        settle(project)
    scoped, _, result = both(pair, tmp_path, manifest(TABLES))
    assert scoped == ["scoped t1"]
    assert (result.summary["built"], result.summary["restored"]) == (0, 1)


def test_the_next_change_takes_the_scoped_path_again_and_a_no_op_the_fast_path(project: Project,
                                                                                tmp_path: Path) -> None:
    ready(project)
    for prompt in ("a blue jay at dusk", "a blue jay at dawn"):
        project.manifest(manifest({**TABLES, "t1": f'prompt = "{prompt}"\nsize = "1024x640"\n'}))
        result, trace = traced(project, tmp_path)
        assert result.code == 0 and result.summary["built"] == 1, result.err
        assert trace == ["scoped t1"]
    result, trace = traced(project, tmp_path)
    assert result.summary == {**result.summary, "built": 0, "up_to_date": 4}
    assert trace == []  # the fast path answered: the build command never ran


def test_an_output_rewritten_in_place_right_after_a_scoped_build_is_not_taken_for_ok(project: Project,
                                                                                     tmp_path: Path) -> None:
    ready(project)
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    assert traced(project, tmp_path)[1] == ["scoped t1"]
    out = project.root / "out" / "t1.png"
    st = out.stat()
    data = bytearray(out.read_bytes())
    data[-20] ^= 0xFF  # same size; and the same mtime below: only its bytes tell
    with open(out, "r+b") as f:
        f.write(data)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = project.run("status")
    assert "t1" in result.out and "edited by hand" in result.out


def _racy(project: Project) -> list[str]:
    """The files the no-op state trusts by their bytes, not their stat (racily clean)."""
    import marshal

    state = marshal.loads((project.root / ".imgbuild" / "noop.marshal").read_bytes())
    return sorted(rel for rel, _ in state[15])


def test_a_racily_clean_output_is_trusted_by_its_stat_once_a_later_build_checked_it_past_the_tick(
        project: Project, tmp_path: Path) -> None:
    """Else every scoped build adds its outputs to the files each later run reads and hashes."""
    ready(project)
    t1 = 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'
    project.manifest(manifest({**TABLES, "t1": t1}))
    assert traced(project, tmp_path)[1] == ["scoped t1"]
    assert _racy(project) == ["images.lock", "out/t1.png"]
    time.sleep(1.1)  # fastpath.RACY_NS
    project.manifest(manifest({**TABLES, "t1": t1, "t0": 'prompt = "a red fox at dusk"\nsize = "1024x640"\n'}))
    assert traced(project, tmp_path)[1] == ["scoped t0"]  # it checked t1's bytes: t1 is no longer racy
    assert _racy(project) == ["images.lock", "out/t0.png"]
    out = project.root / "out" / "t1.png"
    data = bytearray(out.read_bytes())
    data[-20] ^= 0xFF  # rewritten in place now: a new mtime, seen by its stat
    out.write_bytes(data)
    result = project.run("status")
    assert "t1" in result.out and "edited by hand" in result.out


HELPER = {"IMGBUILD_STAT_HELPER_FILES": "1"}  # the other files' stats taken by a helper process, as at scale


def test_with_the_stat_helper_an_edited_prompt_builds_that_target_alone_as_the_full_path_would(
        pair: tuple[Project, Project], tmp_path: Path) -> None:
    a, b = pair
    (b.root / ".imgbuild" / "change.marshal").unlink()
    edited = manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'})
    for project in pair:
        project.manifest(edited)
    (ra, trace), rb = traced(a, tmp_path, env=HELPER), b.build()
    assert trace == ["stat helper: 1", "scoped t1"]
    assert (ra.code, same_text(ra.out)) == (rb.code, same_text(rb.out))
    assert same_text(a.read("images.lock").decode()) == same_text(b.read("images.lock").decode())
    assert outputs(a) == outputs(b)


@pytest.mark.parametrize("helper", [False, True], ids=["here", "helper"])
def test_a_lock_rewritten_in_place_right_after_a_scoped_build_is_seen_by_the_next(project: Project, tmp_path: Path,
                                                                                helper: bool) -> None:
    """Same size, same mtime: only its bytes tell, which this process checks (not the helper)."""
    ready(project)
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    assert traced(project, tmp_path)[1] == ["scoped t1"]
    lock = project.root / "images.lock"
    st = lock.stat()
    text = lock.read_bytes()
    at = text.index(b'built_at = "') + len(b'built_at = "')
    with open(lock, "r+b") as f:
        f.seek(at)
        f.write(b"1" if text[at:at + 1] != b"1" else b"2")
    os.utime(lock, ns=(st.st_atime_ns, st.st_mtime_ns))
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dawn"\nsize = "1024x640"\n'}))
    result, trace = traced(project, tmp_path, env=HELPER if helper else None)
    assert result.code == 0, result.err
    assert trace[-1] == "full: a file changed"


@pytest.mark.parametrize("helper", [False, True], ids=["here", "helper"])
@pytest.mark.parametrize("other", ["input", "output", "lock", "global"])
def test_a_change_to_another_kind_of_file_leaves_the_build_to_the_full_path(project: Project, tmp_path: Path,
                                                                           other: str, helper: bool) -> None:
    ready(project)
    head = HEAD
    if other == "input":
        project.png("art/base.png", size=(1024, 640), color=(1, 2, 3, 255))
    elif other == "output":
        os.utime(project.root / "out" / "t0.png")
    elif other == "lock":
        os.utime(project.root / "images.lock")
    else:
        head = HEAD.replace('style = "flat"', 'style = "flat, bold"')
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}, head))
    result, trace = traced(project, tmp_path, env=HELPER if helper else None)
    assert result.code == 0, result.err
    if helper and other != "global":  # (a global table is seen before the stats are asked for)
        assert trace == ["stat helper: 0", "full: a file changed"]
    else:
        assert len(trace) == 1 and trace[0].startswith("full:")


def test_a_scoped_build_killed_after_its_first_target_keeps_it(project: Project, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    ready(project)
    project.manifest(manifest({**TABLES, "t2": 'prompt = "a green frog on a leaf"\nsize = "1024x640"\n'}))
    trace = tmp_path / "trace"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
        env={**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "1.5", "IMGBUILD_TRACE_SCOPED": str(trace)},
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("event") == "built":  # t2, whose reader t3 is rendering now
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=30)
    assert trace.read_text().splitlines() == ["scoped t2"]
    assert "t2" in (project.root / ".imgbuild" / "lock.journal").read_text()
    result = project.build()
    assert result.code == 0, result.err
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["t3"]  # t2 came back from the journal
    assert project.run("check").code == 0


def test_a_change_while_another_build_holds_the_project_waits_as_the_full_path_does(project: Project,
                                                                                   tmp_path: Path) -> None:
    import subprocess
    import sys
    import threading

    from filelock import FileLock

    ready(project)
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    held = FileLock(str(project.root / ".imgbuild" / "run.lock"), thread_local=False)  # as Project takes it
    held.acquire()
    trace = tmp_path / "trace"
    # Let go once the build says it waits (however long it takes to get there), or after a minute
    # whatever happens, so that a build that never waits fails the test instead of hanging it.
    timer = threading.Timer(60.0, held.release)
    timer.daemon = True
    timer.start()
    proc = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**project.env, "IMGBUILD_TRACE_SCOPED": str(trace), "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "another imgbuild build of this project is running; waiting" in line:
            held.release()
            break
    out, err = proc.communicate(timeout=120)
    timer.cancel()
    result = Result(proc.returncode, "".join(lines) + out, err)
    assert trace.read_text().splitlines() == ["full: busy"]
    assert "another imgbuild build of this project is running; waiting" in result.out
    assert result.code == 0 and result.summary["built"] == 1


def test_the_spliced_lock_writes_only_other_bytes_and_knows_their_digest(project: Project) -> None:
    import copy
    import hashlib

    from imgbuild.fsutil import allow_writes_under
    from imgbuild.splice import SplicedLock

    ready(project)
    allow_writes_under(project.root)  # as a build does (this process may have confined writes elsewhere)
    path = project.root / "images.lock"
    data = path.read_bytes()
    lock = SplicedLock(path, project.root / ".imgbuild", data, hashlib.sha256(data).hexdigest(), ["t1", "t2"])
    assert lock.problem is None
    original = copy.deepcopy(lock.targets["t1"])
    lock.set("t1", {**original, "built_at": "2001-01-01T00:00:00Z"})
    lock.set("t1", original)  # and back: the same bytes
    inode = path.stat().st_ino
    assert lock.save(json_copy=False) is False
    assert path.stat().st_ino == inode and path.read_bytes() == data
    changed = copy.deepcopy(lock.targets["t2"])
    changed["built_at"] = "2001-01-01T00:00:00Z"
    lock.set("t2", changed)
    assert lock.save(json_copy=False) is True
    written = path.read_bytes()
    assert written != data and b'built_at = "2001-01-01T00:00:00Z"' in written
    assert lock.saved_digest() == hashlib.sha256(written).hexdigest()
    inode = path.stat().st_ino
    assert lock.save(json_copy=False) is False  # nothing changed since it wrote
    assert path.stat().st_ino == inode


def test_a_placeholder_change_is_built_without_loading_asyncio(project: Project) -> None:
    """sequential.py: no event loop for a few local renders (its import is a tenth of the change)."""
    import subprocess
    import sys

    ready(project)
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    probe = ("import sys; from imgbuild import cli; code = cli.main(['-C', sys.argv[1], 'build', '-q']); "
             "print(code, 'asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(project.root)], env=project.env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "0 False", out.stderr
    assert project.run("check").code == 0


def test_the_first_ctrl_c_in_a_placeholder_change_lets_the_render_under_way_finish(project: Project,
                                                                                   tmp_path: Path) -> None:
    """As the executor does: start nothing new, keep what is under way, exit 130."""
    import signal
    import subprocess
    import sys

    ready(project)
    project.manifest(manifest({**TABLES, "t0": 'prompt = "a red fox at dusk"\nsize = "1024x640"\n',
                               "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    trace = tmp_path / "trace"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json"],
        env={**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "1.5", "IMGBUILD_TRACE_SCOPED": str(trace)},
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == "started":  # t0: rendering now
            proc.send_signal(signal.SIGINT)
            break
    out, _ = proc.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 130
    assert trace.read_text().splitlines() == ["scoped t0 t1"]
    assert any(e["event"] == "warning" and e["message"].startswith(
        "interrupted: starting nothing new; waiting for 1 request(s) in flight") for e in events)
    assert [e["target"] for e in events if e["event"] == "built"] == ["t0"]
    assert [e["target"] for e in events if e["event"] == "skipped"] == ["t1"]
    assert events[-1]["event"] == "summary" and events[-1]["interrupted"]
    assert "a red fox at dusk" in project.read("images.lock").decode()
    assert project.build().events[-1]["built"] == 1  # t1, now


def test_the_stat_helper_loads_nothing_from_the_project(project: Project, tmp_path: Path) -> None:
    """A pull request may add an ``imgbuild/`` package to the project, the helper's working
    directory: the helper runs imgbuild's own code all the same (as the console script does)."""
    import subprocess
    import sys

    ready(project)
    marker = tmp_path / "hijacked"
    planted = project.root / "imgbuild"
    planted.mkdir()
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "fastpath.py").write_text(f"open({str(marker)!r}, 'w').close()\n_helper = lambda *a: '1'\n")
    project.manifest(manifest({**TABLES, "t1": 'prompt = "a blue jay at dusk"\nsize = "1024x640"\n'}))
    os.utime(project.root / "out" / "t0.png")  # a changed file only the real helper sees
    trace = tmp_path / "trace"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "imgbuild", "build", "-q"], cwd=project.root, capture_output=True, text=True,
        env={**project.env, **HELPER, "IMGBUILD_TRACE_SCOPED": str(trace)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert trace.read_text().splitlines() == ["stat helper: 0", "full: a file changed"]
    assert not marker.exists()
