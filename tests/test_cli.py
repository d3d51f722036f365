"""The command line: commands, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import Project

SIMPLE = """
[provider]
name = "placeholder"

[images.hero]
prompt = "a knight"
output = "assets/hero.png"

[images.crowned]
prompt = "the knight, crowned"
images = ["assets/hero.png"]
output = "assets/crowned.png"
"""


def test_help_lists_every_command(project: Project) -> None:
    result = project.run("--help")
    assert result.code == 0
    for command in ("build", "status", "check", "watch", "clean", "accept", "gc", "graph", "init", "schema"):
        assert command in result.out


def test_json_summary_has_the_counts(project: Project) -> None:
    project.manifest(SIMPLE)
    summary = project.build().summary
    assert {"built", "restored", "failed", "skipped", "requests", "cost_usd"} <= set(summary)
    assert summary["built"] == 2 and summary["requests"] == 2 and summary["cost_usd"] == 0


def test_plain_output_is_one_line_per_event(project: Project) -> None:
    project.manifest(SIMPLE)
    result = project.run("build")
    lines = result.out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["started", "hero"], ["built", "hero"], ["started", "crowned"], ["built", "crowned"]]
    assert lines[-1].startswith("2 built, 0 restored, 0 up to date; 2 request(s), $0.00")
    assert project.run("build").out.strip() == "nothing to do: 2 target(s) up to date; 0 request(s), $0.00"


def test_quiet_prints_only_the_summary(project: Project) -> None:
    project.manifest(SIMPLE)
    assert len(project.run("build", "-q").out.strip().splitlines()) == 1


def test_manifest_option_and_directory_option(project: Project) -> None:
    project.write("other.toml", SIMPLE)
    result = project.run("-f", "other.toml", "build", "--json")
    assert result.code == 0
    assert (project.root / "other.lock").exists()
    assert not (project.root / "images.lock").exists()


def test_graph_as_dot_and_mermaid(project: Project) -> None:
    project.manifest(SIMPLE)
    dot = project.run("graph")
    assert dot.code == 0
    assert '"hero" -> "crowned";' in dot.out and dot.out.startswith("digraph imgbuild {")
    mermaid = project.run("graph", "--format", "mermaid")
    assert mermaid.out.startswith("graph LR") and 't0["crowned"]' in mermaid.out and "t1 --> t0" in mermaid.out


def test_init_writes_a_starter_that_builds_and_refuses_to_overwrite(project: Project) -> None:
    result = project.run("init")
    assert result.code == 0
    text = (project.root / "images.toml").read_text()
    assert text.startswith("# imgbuild manifest")
    assert project.build().summary["built"] == 2
    again = project.run("init")
    assert again.code == 2 and "already exists" in again.err
    assert (project.root / "images.toml").read_text() == text


def test_clean_named_target_only(project: Project) -> None:
    project.manifest(SIMPLE)
    project.build()
    result = project.run("clean", "crowned")
    assert result.code == 0 and "removed  assets/crowned.png" in result.out
    assert (project.root / "assets/hero.png").exists()
    assert not (project.root / "assets/crowned.png").exists()


def test_gc_prunes_only_objects_no_lock_needs(project: Project) -> None:
    project.manifest(SIMPLE)
    project.build()
    project.manifest(SIMPLE.replace("a knight", "a squire"))
    project.build()  # the knight's outputs are now only in the cache
    objects = lambda: sorted(p.name for p in (project.cache / "objects").rglob("*") if p.is_file())  # noqa: E731
    before = objects()
    assert len(before) == 4
    kept = project.run("gc")  # default: only objects unused for 30 days
    assert kept.code == 0 and objects() == before
    pruned = project.run("gc", "--older-than", "0")
    assert pruned.code == 0 and "removed 2 object(s)" in pruned.out
    assert len(objects()) == 2
    assert project.run("check").code == 0


def test_unknown_command_is_a_usage_error(project: Project) -> None:
    result = project.run("frobnicate")
    assert result.code == 2


def test_errors_are_one_line_without_traceback_unless_verbose(project: Project) -> None:
    project.manifest(SIMPLE)
    (project.root / "images.lock").write_text("<<<<<<< HEAD\nversion = 1\n")
    result = project.run("status")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "images.lock: not valid TOML" in result.err and "merge conflict" in result.err
    verbose = project.run("-v", "status")
    assert "Traceback" in verbose.err


def test_newer_lock_format_fails_clearly(project: Project) -> None:
    project.manifest(SIMPLE)
    (project.root / "images.lock").write_text("version = 99\n")
    result = project.run("build")
    assert result.code == 2 and "newer than this imgbuild understands" in result.err


def test_an_internal_error_says_so_and_saves_the_traceback(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from imgbuild import cli, commands

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(commands, "cmd_schema", broken)
    code = cli.main(["schema"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("internal error (a bug in imgbuild): RuntimeError: boom; traceback saved to ")
    path = err.strip().rsplit(" ", 1)[-1]
    assert "RuntimeError: boom" in open(path).read()
    os.unlink(path)


HEAVY = {"pydantic", "httpx", "PIL", "rich", "watchfiles", "tomli_w", "filelock"}
# Runs the CLI as `imgbuild ARGS` does, then reports on stderr which modules it had imported.
MODULES_AFTER = """
import json, sys
from imgbuild import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["build", "--help"], ["--version"]])
def test_help_builds_the_whole_parser_without_importing_heavy_modules(args: list[str]) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", MODULES_AFTER, *args], capture_output=True, text=True)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and proc.stdout  # the parser was built and printed what was asked
    assert "imgbuild.cli" in report["modules"]
    assert sorted(set(report["modules"]) & HEAVY) == []


def test_status_lines_are_aligned_in_build_order(project: Project) -> None:
    project.manifest(SIMPLE)
    project.build()
    time.sleep(0.01)
    project.manifest(SIMPLE.replace("a knight", "a tall knight"))
    lines = project.run("status").out.splitlines()
    assert lines == ["hero     changed   prompt",
                     "crowned  upstream  input assets/hero.png comes from hero, which will be rebuilt"]


def test_a_reader_that_leaves_early_is_not_a_bug(project: Project) -> None:
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m imgbuild schema | head -c 10", shell=True,
                          capture_output=True, text=True, env=project.env)
    assert proc.stdout == "{\n  \"$defs\""[:10]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_reader_gone_before_the_first_write_is_not_a_bug(project: Project) -> None:
    # Deterministic: the pipe's reader is closed before imgbuild writes, so the write inside the
    # command (not only the final flush) meets a broken pipe.
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "imgbuild", "schema"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=project.env)
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_clean_speaks_json_too(project: Project) -> None:
    project.manifest(SIMPLE)
    project.build()
    result = project.run("clean", "--json", "hero")
    assert result.events == [{"event": "removed", "path": "assets/hero.png"}, {"event": "summary", "removed": 1}]
