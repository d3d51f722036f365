"""What status, check and build print: every reason, aligned columns, numbers that show what they
mean, and a word about an option that is ignored."""

from __future__ import annotations

import re
from typing import Any

from apiserver import Fault
from conftest import Project, copy_of_built

PRICED = """
[provider]
name = "openai"
[provider.prices]
per_image = 0.5

[images.hero]
prompt = "a knight"
output = "assets/hero.png"

[images.hero-with-sword]
prompt = "the knight holds the sword"
images = ["assets/hero.png", "art/sword.png"]
"""


def _sword(project: Project) -> None:
    project.png("art/sword.png", size=(1024, 1024))


def _placeholder(project: Project) -> Project:
    """PRICED under the placeholder, built (a copy of it built once)."""
    return copy_of_built(project, PRICED.replace('name = "openai"', 'name = "placeholder"'), _sword)


def _column(rows: list[str], word: str) -> set[int]:
    return {row.index(word) for row in rows if word in row}


def test_status_shows_every_reason_of_an_upstream_target(project: Project) -> None:
    _placeholder(project)
    project.manifest(PRICED.replace('name = "openai"', 'name = "placeholder"').replace("a knight", "a tall knight"))
    project.png("art/sword.png", size=(1024, 1024), color=(0, 0, 255, 255))
    rows = project.run("status").out.splitlines()
    assert rows[1].split("  ", 1)[0] == "hero-with-sword"
    assert rows[1].endswith("upstream  input assets/hero.png comes from hero, which will be rebuilt; "
                            "input art/sword.png")


def test_check_quiet_names_each_target_not_ok_and_why(project: Project) -> None:
    _placeholder(project)
    project.manifest(PRICED.replace('name = "openai"', 'name = "placeholder"').replace("a knight", "a tall knight"))
    result = project.run("check", "-q")
    assert result.code == 1
    assert result.out.splitlines() == [
        "hero             changed   prompt",
        "hero-with-sword  upstream  input assets/hero.png comes from hero, which will be rebuilt",
    ]
    assert result.err.strip() == "check: 2 of 2 target(s) not ok"


def test_dry_run_columns_are_aligned(project: Project) -> None:
    project.png("art/sword.png", size=(1024, 1024))
    project.manifest(PRICED.replace("per_image = 0.5", "per_image = 0.25") + '\n[images.a]\nprompt = "x"\nn = 10\n')
    rows = project.run("build", "-n").out.splitlines()[:-1]
    assert len(rows) == 3
    assert len(_column(rows, "new")) == 1 and len(_column(rows, "~$")) == 1, rows
    assert rows[0].split() == ["a", "new", "~$2.50"]


def test_dry_run_under_the_placeholder_shows_what_the_manifests_provider_would_charge(project: Project) -> None:
    project.png("art/sword.png", size=(1024, 1024))
    project.manifest(PRICED)
    result = project.run("build", "-n", "--provider", "placeholder")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == ("plan: 2 request(s) at most, estimated $0.00 with the placeholder "
                                           "(openai would charge ~$1.00); nothing was done (-n)")


def test_a_base_url_ignored_by_the_placeholder_is_said_once(project: Project) -> None:
    _placeholder(project)
    result = project.run("build", "--base-url", "http://127.0.0.1:9/v1")
    assert result.code == 0
    assert result.err.splitlines() == [
        "warning: --base-url is ignored: the placeholder provider renders locally and calls no endpoint"]


def test_a_manifest_base_url_ignored_by_the_placeholder_is_said_once(project: Project) -> None:
    project.manifest('[provider]\nname = "compatible"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "MY_KEY"\n'
                     '[images.a]\nprompt = "a"\n[images.b]\nprompt = "b"\n')
    result = project.run("build", "--provider", "placeholder")
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        "warning: [provider] base_url is ignored: the placeholder provider renders locally and calls no endpoint"]


def test_a_max_cost_refusal_shows_the_difference(project: Project) -> None:
    project.manifest('[provider]\nname = "openai"\n[provider.prices]\nper_image = 0.0213\n[images.a]\nprompt = "a"\n')
    result = project.run("build", "--max-cost", "0.02")
    assert result.code == 1
    assert result.err.strip() == ("error: the estimate is $0.0213, over --max-cost $0.02: build fewer targets, "
                                  "or raise the limit")


def test_a_target_not_started_says_why_in_one_pair_of_parentheses(start_api_server: Any, project: Project) -> None:
    from apiserver import KEY_ENV

    server = start_api_server("openai")
    project.manifest(f"""
        [provider]
        name = "compatible"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        concurrency = 1
        [images.a]
        prompt = "a bloody battle"
        [images.b]
        prompt = "b"
    """)
    server.inject_for("bloody", Fault("moderation"))
    result = project.run("build", env={KEY_ENV: server.key})
    assert result.code == 1
    assert "skipped   b  (not started: the build is stopping)" in result.out.splitlines()


def test_the_live_view_aligns_the_names_in_flight(project: Project) -> None:
    import os
    import pty
    import subprocess
    import sys
    import time

    project.manifest('[provider]\nname = "placeholder"\n[images.a]\nprompt = "a"\n'
                     '[images.a-much-longer-name]\nprompt = "b"\n')
    leader, follower = pty.openpty()
    env = {**project.env, "IMGBUILD_PLACEHOLDER_DELAY": "1.5", "TERM": "xterm", "COLUMNS": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "-j", "2"],
                            stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen += os.read(leader, 4096)
        except OSError:
            break
    proc.wait(timeout=30)
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))
    rows = [r.rstrip() for r in re.split(r"[\r\n]+", screen) if re.fullmatch(r"  (a|a-much-longer-name) +\d+s", r.rstrip())]
    assert {r.split()[0] for r in rows} == {"a", "a-much-longer-name"}, screen
    both = rows[[r.split()[0] for r in rows].index("a-much-longer-name"):]  # once both are in flight
    assert len({len(r) for r in both}) == 1, rows
