"""The executor: dependency order, -j, -k, --max-cost, the run lock and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from conftest import Project

FAILING = """
[provider]
name = "placeholder"

[images.a-base]
prompt = "a base picture"
size = "auto"
output = "out/a.png"

[images.b-bad]
prompt = "an edit whose mask does not fit what a-base came out as"
images = ["out/a.png"]
mask = "art/mask.png"
output = "out/b.png"

[images.c-child]
prompt = "depends on the failure"
images = ["out/b.png"]
output = "out/c.png"

[images.d-free]
prompt = "independent one"
output = "out/d.png"

[images.e-free]
prompt = "independent two"
output = "out/e.png"
"""


def _failing(project: Project) -> None:
    project.manifest(FAILING)
    project.png("art/mask.png", size=(1536, 1024), color=(0, 0, 0, 0))


def _by_event(result: Any, kind: str) -> list[str]:
    return [e["target"] for e in result.events if e["event"] == kind]


def test_a_failure_stops_new_work_without_keep_going(project: Project) -> None:
    _failing(project)
    result = project.build("-j", "1")
    assert result.code == 1
    assert _by_event(result, "built") == ["a-base"]
    assert _by_event(result, "failed") == ["b-bad"]
    assert sorted(_by_event(result, "skipped")) == ["c-child", "d-free", "e-free"]
    failure = [e for e in result.events if e["event"] == "failed"][0]["detail"]
    assert "mask art/mask.png is 1536x1024 but its first input out/a.png came out 1024x1024" in failure
    assert result.requests == 1


def test_keep_going_builds_what_does_not_depend_on_the_failure(project: Project) -> None:
    _failing(project)
    result = project.build("-j", "1", "-k")
    assert result.code == 1
    assert _by_event(result, "built") == ["a-base", "d-free", "e-free"]
    assert _by_event(result, "skipped") == ["c-child"]
    assert result.summary["failed"] == 1 and result.summary["skipped"] == 1
    assert "b-bad" not in project.lock()["targets"]


def test_named_targets_build_with_their_dependencies_only(project: Project) -> None:
    _failing(project)
    result = project.build("e-free", "a-base")
    assert sorted(_by_event(result, "built")) == ["a-base", "e-free"]


def test_unknown_target_is_a_usage_error(project: Project) -> None:
    _failing(project)
    result = project.run("build", "e-fre")
    assert result.code == 2
    assert result.err.strip() == "error: no target named e-fre in images.toml (did you mean e-free?)"


def test_jobs_bounds_requests_in_flight(project: Project) -> None:
    body = ['[provider]\nname = "placeholder"\nconcurrency = 8\n']
    body += [f'[images.t{i}]\nprompt = "picture {i}"\n' for i in range(6)]
    project.manifest("\n".join(body))
    result = project.build("-j", "2", env={"IMGBUILD_PLACEHOLDER_DELAY": "0.4"})
    assert result.requests == 6
    in_flight, most = 0, 0
    for event in result.events:
        in_flight += {"started": 1, "built": -1}.get(event["event"], 0)
        most = max(most, in_flight)
    assert most == 2  # never more than -j, and -j is used (the manifest says 8)


def test_max_cost_refuses_to_start_over_the_estimate(project: Project) -> None:
    project.manifest('[provider]\nname = "openai"\n[images.a]\nprompt = "a"\nquality = "high"\n')
    before = project.snapshot()
    result = project.run("build", "--max-cost", "0.01")
    assert result.code == 1
    assert "over --max-cost $0.01" in result.err
    assert project.snapshot() == before


def test_missing_key_is_one_line_naming_the_variable(project: Project) -> None:
    project.manifest('[provider]\nname = "openai"\n[images.a]\nprompt = "a"\n')
    env = {"OPENAI_API_KEY": ""}
    result = project.run("build", env=env)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "OPENAI_API_KEY" in result.err and "Traceback" not in result.err
    assert not (project.root / "images.lock").exists()


def _slow_manifest(project: Project, n: int) -> None:
    body = ['[provider]\nname = "placeholder"\nconcurrency = 2\n']
    body += [f'[images.t{i}]\nprompt = "slow picture {i}"\noutput = "out/t{i}.png"\n' for i in range(n)]
    project.manifest("\n".join(body))


def _start(project: Project, delay: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json", *args],
        env={**project.env, "IMGBUILD_PLACEHOLDER_DELAY": delay},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _read_until_started(proc: subprocess.Popen[str], count: int) -> list[dict[str, Any]]:
    events = []
    assert proc.stdout is not None
    while sum(1 for e in events if e["event"] == "started") < count:
        line = proc.stdout.readline()
        assert line, "the build ended before starting its requests"
        events.append(json.loads(line))
    return events


def _read_until_warning(proc: subprocess.Popen[str], prefix: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        event = json.loads(line)
        if event["event"] == "warning" and event["message"].startswith(prefix):
            return dict(event)
    raise AssertionError(f"the build ended without a warning starting {prefix!r}")


def test_first_ctrl_c_waits_for_requests_in_flight_and_saves_them(project: Project) -> None:
    _slow_manifest(project, 6)
    proc = _start(project, "1.5")
    _read_until_started(proc, 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e["event"] == "warning" and e["message"].startswith("interrupted") for e in events)
    built = [e["target"] for e in events if e["event"] == "built"]
    assert sorted(built) == ["t0", "t1"]
    assert sorted(project.lock()["targets"]) == ["t0", "t1"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["interrupted"] and summary["skipped"] == 4


def test_second_ctrl_c_abandons_requests_in_flight(project: Project) -> None:
    _slow_manifest(project, 4)
    proc = _start(project, "20")
    _read_until_started(proc, 2)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _read_until_warning(proc, "interrupted")  # the first Ctrl-C was taken: now the second
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert time.monotonic() - started < 10
    assert not (project.root / "out").exists() or not any((project.root / "out").iterdir())


def test_a_second_build_waits_for_the_first_and_then_has_nothing_to_do(project: Project) -> None:
    _slow_manifest(project, 2)
    first = _start(project, "4")  # long enough that the second starts while it runs, even on a busy machine
    _read_until_started(first, 2)
    second = project.build(env={"IMGBUILD_PLACEHOLDER_DELAY": "1.5"})
    first.communicate(timeout=30)
    assert first.returncode == 0
    assert second.code == 0
    assert any(e["event"] == "warning" and "another imgbuild build of this project is running" in e["message"]
               for e in second.events)
    assert second.requests == 0


def test_a_failure_line_names_its_target(project: Project) -> None:
    _failing(project)
    result = project.run("build", "-j", "1")
    assert "failed    b-bad: mask art/mask.png is 1536x1024" in result.err


def test_jobs_must_be_positive(project: Project) -> None:
    _failing(project)
    assert project.run("build", "-j", "0").code == 2


def test_ctrl_c_while_waiting_for_another_build_ends_the_wait(project: Project) -> None:
    _slow_manifest(project, 2)
    first = _start(project, "6")
    _read_until_started(first, 2)
    second = _start(project, "6")
    assert second.stdout is not None
    line = json.loads(second.stdout.readline())
    assert "another imgbuild build of this project is running" in line["message"]
    started = time.monotonic()
    second.send_signal(signal.SIGINT)
    second.communicate(timeout=30)
    assert second.returncode == 130
    assert time.monotonic() - started < 3
    first.kill()  # done with it
    first.communicate(timeout=30)


def test_an_input_saved_while_its_target_waits_is_what_the_lock_records(project: Project) -> None:
    import hashlib

    project.png("art/in.png", color=(1, 1, 1, 255))
    project.manifest('[provider]\nname = "placeholder"\n'
                     '[images.a-slow]\nprompt = "first, and slow"\n'
                     '[images.b-edit]\nprompt = "an edit"\nimages = ["art/in.png"]\n')
    proc = _start(project, "1.0", "-j", "1")
    _read_until_started(proc, 1)  # a-slow is in flight; b-edit waits for the slot
    project.png("art/in.png", color=(2, 2, 2, 255))
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    saved = hashlib.sha256(project.read("art/in.png")).hexdigest()
    assert project.lock()["targets"]["b-edit"]["inputs"][0]["sha256"] == saved
    assert project.run("check").code == 0
