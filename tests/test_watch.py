"""`imgbuild watch` as a user runs it: a real subprocess, real file changes, JSON events read as
they come. Each test asserts exactly which targets a change rebuilt (``built`` events and the
summary's counts). The placeholder provider counts its requests in the summary; where a build must
be in flight, IMGBUILD_PLACEHOLDER_DELAY makes each render slow."""

from __future__ import annotations

import hashlib
import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Project

TWO_PROMPT_FILES = """
    out_dir = "assets"

    [provider]
    name = "placeholder"

    [defaults]
    quality = "low"

    [images.a]
    prompt_file = "prompts/a.md"

    [images.b]
    prompt_file = "prompts/b.md"

    [images.c]
    prompt = "an inline prompt"
"""

EDITS = """
    out_dir = "assets"

    [provider]
    name = "placeholder"

    [images.a]
    prompt = "no inputs at all"

    [images.b]
    prompt = "the base, framed"
    images = ["art/base.png"]

    [images.c]
    prompt = "b, in a landscape"
    images = ["assets/b.png"]

    [images.d]
    prompt = "another input"
    images = ["art/other.png"]
"""


@dataclass
class Rebuild:
    """One batch: the `watch` event, what the build reported, and its summary."""

    changed: list[str]
    events: list[dict[str, Any]]
    summary: dict[str, Any]

    def targets(self, kind: str) -> list[str]:
        return sorted(e["target"] for e in self.events if e.get("event") == kind)


class Watching:
    """`imgbuild watch --json` in a subprocess; stdout is parsed line by line in a thread."""

    def __init__(self, project: Project, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgbuild", "-C", str(project.root), "watch", "--json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**project.env, **(env or {})},
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read_out, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "not-json", "line": line})

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def transcript(self) -> str:
        return "\n".join(json.dumps(e) for e in self.seen) + "\nstderr:\n" + "".join(self.err)

    def next(self, timeout: float) -> dict[str, Any] | None:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        self.seen.append(event)
        return event

    def wait_for(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            event = self.next(left)
            if event is not None and event.get("event") == kind:
                return event
        raise AssertionError(f"no {kind!r} event within {timeout}s:\n{self.transcript()}")

    def started(self) -> None:
        """Wait for the initial build to finish and the watch to begin."""
        self.wait_for("watching")

    def rebuild(self, timeout: float = 15.0, *, on_start: Callable[[], None] | None = None) -> Rebuild:
        """The next batch, up to its summary; ``on_start`` runs once its first request starts."""
        changed = self.wait_for("watch", timeout)["changed"]
        events = []
        while (event := self.wait_for_any(timeout))["event"] != "summary":
            assert event["event"] not in ("watch", "error"), f"the batch did not build:\n{self.transcript()}"
            events.append(event)
            if event["event"] == "started" and on_start is not None:
                on_start()
                on_start = None
        return Rebuild(changed, events, event)

    def wait_for_any(self, timeout: float) -> dict[str, Any]:
        event = self.next(timeout)
        if event is None:
            raise AssertionError(f"no event within {timeout}s:\n{self.transcript()}")
        return event

    def batches_until(self, rel: str, timeout: float = 15.0) -> list[list[str]]:
        """What each batch changed, up to the first batch that holds ``rel``. File events arrive
        in the order they happen, so whatever was written before ``rel`` would trigger a batch
        before it or with it: writing ``rel`` and reading up to its batch proves that nothing
        earlier triggered one, where a quiet window would pass as soon as the event came late."""
        batches = []
        while rel not in (changed := self.wait_for("watch", timeout)["changed"]):
            batches.append(changed)
        return [*batches, changed]

    def rest(self) -> list[dict[str, Any]]:
        """Every event not read yet, once the process has ended: its output is then complete."""
        assert self.proc.poll() is not None, "the watch is still running"
        self._reader.join(timeout=10)
        got = []
        while (event := self.next(0)) is not None:
            got.append(event)
        return got

    def interrupt(self, timeout: float = 5.0) -> tuple[int, float]:
        """Send Ctrl-C; the exit code and how long the watch took to end."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def watch() -> Iterator[Callable[..., Watching]]:
    running: list[Watching] = []

    def start(project: Project, *args: str, env: dict[str, str] | None = None) -> Watching:
        w = Watching(project, *args, env=env)
        running.append(w)
        w.started()
        return w

    yield start
    for w in running:
        w.close()


def prompt_files_project(project: Project) -> Project:
    project.manifest(TWO_PROMPT_FILES)
    project.write("prompts/a.md", "a red kite over a harbour")
    project.write("prompts/b.md", "a blue boat in the harbour")
    return project


def edits_project(project: Project) -> Project:
    project.manifest(EDITS)
    project.png("art/base.png", color=(200, 40, 40, 255))
    project.png("art/other.png", color=(40, 200, 40, 255))
    return project


def locked_sha(project: Project, target: str) -> str:
    return str(project.lock()["targets"][target]["outputs"][0]["sha256"])


def test_initial_build_then_its_own_writes_never_retrigger_a_build(project: Project) -> None:
    w = Watching(prompt_files_project(project))
    try:
        initial = w.rebuild()
        w.wait_for("watching")
        # Its outputs, lock and state files land after the summary; none of them is a change:
        # the first batch is the one a real edit, made after them, causes.
        project.write("prompts/b.md", "a blue boat, later")
        batches = w.batches_until("prompts/b.md")
    finally:
        w.close()
    assert initial.targets("built") == ["a", "b", "c"] and initial.summary["requests"] == 3
    assert batches == [["prompts/b.md"]]


def test_prompt_file_edit_rebuilds_exactly_its_target(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    project.write("prompts/a.md", "a red kite over a harbour at dusk")
    rebuild = w.rebuild()
    assert rebuild.changed == ["prompts/a.md"]
    assert rebuild.targets("built") == ["a"]
    assert rebuild.summary["built"] == 1 and rebuild.summary["requests"] == 1
    assert rebuild.summary["up_to_date"] == 2
    assert project.lock()["targets"]["a"]["prompt"] == "a red kite over a harbour at dusk"


def test_input_image_edit_rebuilds_its_dependents_only(project: Project, watch: Any) -> None:
    w = watch(edits_project(project))
    project.png("art/base.png", color=(20, 20, 220, 255))
    rebuild = w.rebuild()
    # b reads the image; c reads b's output, which changed with it; a and d are untouched.
    assert rebuild.changed == ["art/base.png"]
    assert rebuild.targets("built") == ["b", "c"]
    assert rebuild.summary["requests"] == 2 and rebuild.summary["up_to_date"] == 2
    # b's new output is its own write, not a change: the next batch is the next real edit's
    project.png("art/other.png", color=(1, 2, 3, 255))
    assert w.batches_until("art/other.png") == [["art/other.png"]]


def test_broken_then_fixed_manifest_reports_the_error_then_builds_the_fix(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    project.manifest(TWO_PROMPT_FILES.replace('[images.c]', '[images.c]\n    size = "1000x1000"'))
    assert w.wait_for("watch")["changed"] == ["images.toml"]
    error = w.wait_for("error")
    assert error["message"].startswith("images.toml: images.c.size: ")
    project.manifest(TWO_PROMPT_FILES.replace('[images.c]', '[images.c]\n    size = "1536x1024"'))
    rebuild = w.rebuild()
    assert rebuild.changed == ["images.toml"]
    assert rebuild.targets("built") == ["c"] and rebuild.summary["requests"] == 1
    assert project.lock()["targets"]["c"]["params"]["size"] == "1536x1024"


def test_missing_input_reports_the_error_and_its_return_is_built(project: Project, watch: Any) -> None:
    w = watch(edits_project(project))
    (project.root / "art" / "other.png").unlink()
    error = w.wait_for("error")
    assert error["message"] == ("images.toml: images.d.images[0]: "
                                "art/other.png does not exist and no target makes it")
    project.png("art/other.png", color=(240, 240, 0, 255))
    rebuild = w.rebuild()
    assert rebuild.changed == ["art/other.png"]
    assert rebuild.targets("built") == ["d"] and rebuild.summary["requests"] == 1


def test_deleted_output_is_restored_without_a_request(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    before = project.read("assets/b.png")
    (project.root / "assets" / "b.png").unlink()
    rebuild = w.rebuild()
    assert rebuild.changed == ["assets/b.png"]
    assert rebuild.targets("restored") == ["b"] and rebuild.targets("built") == []
    assert rebuild.summary["requests"] == 0 and rebuild.summary["restored"] == 1
    assert project.read("assets/b.png") == before


def test_overwritten_output_is_reported_modified_and_left_alone(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    project.png("assets/a.png", size=(1024, 1024), color=(0, 0, 0, 255))
    mine = project.read("assets/a.png")
    rebuild = w.rebuild()
    assert rebuild.changed == ["assets/a.png"]
    skipped = [e for e in rebuild.events if e["event"] == "skipped"]
    assert [(e["target"], e["state"]) for e in skipped] == [("a", "modified")]
    assert rebuild.summary["requests"] == 0 and rebuild.summary["built"] == 0
    assert project.read("assets/a.png") == mine


def test_burst_of_20_saves_within_200ms_gives_one_rebuild(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    saved_at = []
    for i in range(20):  # 20 saves, 10 ms apart: about 200 ms in all
        project.write("prompts/a.md", f"a red kite, take {i}")
        saved_at.append(time.monotonic())
        time.sleep(0.01)
    # What one rebuild relies on is that no pause between saves reaches the 150 ms debounce (a
    # loaded machine may stretch the whole burst past 200 ms; that is not the watch's doing).
    assert max(b - a for a, b in itertools.pairwise(saved_at)) < 0.14
    rebuild = w.rebuild()
    assert rebuild.targets("built") == ["a"] and rebuild.summary["requests"] == 1
    assert project.lock()["targets"]["a"]["prompt"] == "a red kite, take 19"
    # no second batch of the burst: the next one is that of a later, other edit
    project.write("prompts/b.md", "a blue boat, later")
    assert w.batches_until("prompts/b.md") == [["prompts/b.md"]]


def test_change_during_a_build_is_built_after_it_without_cancelling_it(project: Project, watch: Any) -> None:
    assert prompt_files_project(project).build().code == 0
    w = watch(project, env={"IMGBUILD_PLACEHOLDER_DELAY": "1.0"})
    project.write("prompts/a.md", "first change")
    first = w.rebuild(on_start=lambda: project.write("prompts/b.md", "second change, while a is in flight"))
    second = w.rebuild()
    assert first.targets("built") == ["a"] and not first.summary["interrupted"]
    assert second.changed == ["prompts/b.md"]
    assert second.targets("built") == ["b"] and second.summary["requests"] == 1


def test_ctrl_c_while_idle_exits_0_promptly(project: Project, watch: Any) -> None:
    w = watch(prompt_files_project(project))
    code, seconds = w.interrupt()
    assert code == 0 and seconds < 3


def test_ctrl_c_during_a_build_saves_the_request_in_flight_and_exits_130(project: Project, watch: Any) -> None:
    assert prompt_files_project(project).build().code == 0
    w = watch(project, env={"IMGBUILD_PLACEHOLDER_DELAY": "1.5"})
    project.write("prompts/a.md", "changed just before Ctrl-C")
    assert w.wait_for("started")["target"] == "a"
    code, seconds = w.interrupt()
    assert code == 130 and seconds < 5
    rest = w.rest()
    assert [e["target"] for e in rest if e["event"] == "built"] == ["a"], w.transcript()
    assert [e["interrupted"] for e in rest if e["event"] == "summary"] == [True]
    assert list(project.root.rglob(".imgbuild-tmp-*")) == []
    assert hashlib.sha256(project.read("assets/a.png")).hexdigest() == locked_sha(project, "a")


def test_ctrl_c_while_waiting_for_another_build_ends_the_watch_without_a_request(project: Project) -> None:
    prompt_files_project(project)
    other = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "-q"],
                             env={**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "6"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not (project.root / ".imgbuild" / "run.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        w = Watching(project)  # not started(): its first build cannot begin while the other runs
        warning = w.wait_for("warning")
        assert "another imgbuild build of this project is running" in warning["message"]
        code, seconds = w.interrupt()
        assert code == 130 and seconds < 3
        assert [e for e in w.rest() if e["event"] == "started"] == []
    finally:
        other.kill()
        other.wait()
        if "w" in locals():
            w.close()
