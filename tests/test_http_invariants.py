"""SPEC §2 rows that need a real provider, counted in requests the local API server received."""

from __future__ import annotations

from typing import Any

from apiserver import Fault
from conftest import Project

TARGETS = """
[images.hero]
prompt = "a knight on a hill"
size = "1536x1024"

[images.icon]
prompt = "a round shield icon"
"""


def _env(server: Any, preset: str) -> dict[str, str]:
    key_var = "OPENAI_API_KEY" if preset == "openai" else "AIMLAPI_API_KEY"
    return {key_var: server.key, "IMGBUILD_PROVIDER": preset, "IMGBUILD_BASE_URL": server.base_url}


def test_switching_openai_to_aimlapi_makes_no_request(start_api_server: Any, project: Project) -> None:
    openai, aimlapi = start_api_server("openai"), start_api_server("aimlapi")
    project.manifest('[provider]\nname = "openai"\n' + TARGETS)
    first = project.build(env=_env(openai, "openai"))
    assert first.code == 0, first.err
    assert first.requests == 2 and len(openai.api_requests()) == 2
    status = project.run("status", env=_env(aimlapi, "aimlapi"))
    assert [line.split()[1] for line in status.out.splitlines()] == ["ok", "ok"]
    second = project.build(env=_env(aimlapi, "aimlapi"))
    assert second.code == 0 and second.requests == 0
    assert aimlapi.api_requests() == []


def test_placeholder_to_a_real_provider_requests_every_target(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.manifest('[provider]\nname = "placeholder"\n' + TARGETS)
    assert project.build().requests == 2
    real = project.build(env=_env(server, "openai"))
    assert real.code == 0, real.err
    assert real.requests == 2 and len(server.api_requests()) == 2
    lock = project.lock()["targets"]
    assert lock["hero"]["provider"] == "openai" and lock["hero"]["model"] == "gpt-image-2"
    assert lock["hero"]["cost_usd"] > 0
    assert lock["hero"]["outputs"][0]["width"] == 1536


def test_a_real_build_records_what_the_server_sent(start_api_server: Any, project: Project) -> None:
    import hashlib

    server = start_api_server("openai")
    project.manifest('[provider]\nname = "openai"\n' + TARGETS)
    result = project.build(env=_env(server, "openai"))
    assert result.code == 0, result.err
    sent = set(server.served)
    for name in ("hero", "icon"):
        out = project.lock()["targets"][name]["outputs"][0]
        data = project.read(out["path"])
        assert hashlib.sha256(data).hexdigest() == out["sha256"]
        assert out["sha256"] in sent
    assert result.summary["cost_usd"] > 0


def test_images_of_a_failed_aimlapi_target_are_kept_in_the_cache(start_api_server: Any, project: Project) -> None:
    server = start_api_server("aimlapi")
    project.manifest('[provider]\nname = "aimlapi"\n[images.trio]\nprompt = "three takes"\nn = 3\n')
    server.inject(Fault("moderation"), times=1)  # one of the three requests of one is refused
    result = project.build("-j", "1", env={**_env(server, "aimlapi"), "IMGBUILD_PROVIDER": "aimlapi"})
    assert result.code == 1
    assert len(server.api_requests()) == 3
    kept = [e for e in result.events if e["event"] == "warning" and "kept 2 image(s)" in e["message"]]
    assert kept, result.out
    assert result.summary["cost_usd"] > 0  # the two requests that succeeded were paid for
    objects = {p.parent.name + p.name for p in (project.cache / "objects").rglob("*") if p.is_file()}
    assert set(server.served) == objects  # every image the server sent is in the cache


def test_off_a_terminal_a_build_over_confirm_above_is_not_asked(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.manifest('[provider]\nname = "openai"\nconfirm_above = 0\n' + TARGETS)
    result = project.build(env=_env(server, "openai"))
    assert result.code == 0 and result.requests == 2


def _on_a_terminal(project: Project, env: dict[str, str], *args: str, answer: bytes) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stdout, answering its question."""
    import os
    import pty
    import subprocess
    import sys
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", *args],
                            stdin=follower, stdout=follower, stderr=follower, env={**project.env, **env})
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in seen and b"built" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(leader, 4096)
        except OSError:
            break
    if b"[y/N]" in seen:
        # The question must stay on screen: nothing may repaint over it while it waits.
        import select

        time.sleep(0.6)
        waiting = b""
        while select.select([leader], [], [], 0.1)[0]:
            waiting += os.read(leader, 4096)
        assert b"\x1b[2K" not in waiting, waiting
        os.write(leader, answer)
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen += os.read(leader, 4096)
        except OSError:
            break
    proc.wait(timeout=30)
    os.close(leader)
    return proc.returncode, seen.decode(errors="replace")


def test_on_a_terminal_a_build_over_confirm_above_asks_first(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    project.manifest('[provider]\nname = "openai"\nconfirm_above = 0.01\n' + TARGETS)
    code, screen = _on_a_terminal(project, _env(server, "openai"), answer=b"n\n")
    assert "2 request(s), estimated $" in screen and "Build? [y/N]" in screen
    assert code == 2 and "build cancelled" in screen
    assert server.api_requests() == []
    code, screen = _on_a_terminal(project, _env(server, "openai"), "--yes", answer=b"")
    assert code == 0 and "[y/N]" not in screen
    assert len(server.api_requests()) == 2


def test_targets_left_undone_by_the_budget_make_the_build_fail(start_api_server: Any, project: Project) -> None:
    # The estimate says about $0.05 an image; the server charges $0.20: after the first, the next
    # ones reserve $0.20 each, and the second would pass $0.30.
    server = start_api_server("aimlapi", usd_per_image=0.2)
    body = '[provider]\nname = "aimlapi"\n'
    body += "".join(f'[images.t{i}]\nprompt = "picture {i}"\n' for i in range(4))
    project.manifest(body)
    result = project.build("-j", "1", "--max-cost", "0.3", env=_env(server, "aimlapi"))
    assert result.code == 1
    summary = result.summary
    assert summary["built"] == 1 and summary["not_started"] == 3 and summary["skipped"] == 3
    skipped = [e["detail"] for e in result.events if e["event"] == "skipped"]
    assert all("--max-cost $0.30" in d for d in skipped)
    assert len(server.api_requests()) == 1


def test_a_budget_the_builds_fit_in_is_not_eaten_by_finished_requests(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    body = '[provider]\nname = "openai"\n[provider.prices]\nper_image = 0.01\n'
    body += "".join(f'[images.t{i}]\nprompt = "picture {i}"\n' for i in range(4))
    project.manifest(body)
    result = project.build("-j", "1", "--max-cost", "0.045", env=_env(server, "openai"))
    assert result.code == 0, result.out
    assert result.summary["built"] == 4 and result.summary["cost_usd"] == 0.04


def test_retries_are_shown_as_they_happen(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    server.inject(Fault("503"))
    project.manifest('[provider]\nname = "openai"\n[images.a]\nprompt = "a"\n')
    result = project.build(env=_env(server, "openai"))
    assert result.code == 0 and result.summary["retries"] == 1
    notices = [e["message"] for e in result.events if e["event"] == "warning"]
    assert any(m.startswith("a: the API failed") and "retry 1 of 4" in m for m in notices), notices
