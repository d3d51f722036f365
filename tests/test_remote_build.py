"""The remote cache in whole builds (issue 13's acceptance): the CLI in subprocesses, two clones
with separate local caches, a real S3-compatible server (moto, its own process) and the local
image API server; what each build requested, wrote, printed and stored."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver import KEY_ENV, ApiServer
from conftest import Project, Result
from s3server import TEST_ACCESS_KEY, TEST_SECRET, Bucket, S3Server

pytest_plugins = ["s3server"]
CACHE_KEY = "imgbuild-cache-key-9f8e7d6c5b4a39281706"
TARGETS = """
    [images.hero]
    prompt = "A knight on a hill"
    [images.map]
    prompt = "A map of the valley"
    size = "1536x1024"
    [images.sky]
    prompt = "A stormy sky"
    size = "1024x1536"
    """  # three sizes: the local server draws one image per size, and each must have bytes of its own
OUTPUTS = ["build/images/hero.png", "build/images/map.png", "build/images/sky.png"]


def write_manifest(project: Project, server: ApiServer, remote: str | None, targets: str = TARGETS) -> None:
    cache = f'\n[cache]\nremote = "{remote}"\n' if remote else ""
    project.manifest(f"""
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{server.base_url}"
        max_retries = 0
        """ + targets + cache)


@pytest.fixture
def clones(make_project: Callable[..., Project], api_server: ApiServer, s3_bucket: Bucket
           ) -> tuple[Project, Callable[..., Project]]:
    """A first clone with the remote in its manifest, and a factory for further clones of it
    (its committed files, without outputs or machine-local state), each with its own cache."""
    first = make_project("first", cache="cache-first")
    write_manifest(first, api_server, s3_bucket.url)
    names = iter(range(2, 100))

    def clone(*, lock: bool = True) -> Project:
        n = next(names)
        other = make_project(f"clone{n}", cache=f"cache-{n}")
        shutil.copy(first.root / "images.toml", other.root / "images.toml")
        if lock:
            shutil.copy(first.root / "images.lock", other.root / "images.lock")
        return other

    return first, clone


def requests_of(server: ApiServer) -> int:
    return len(server.api_requests("/images/generations"))


def warnings_of(result: Result) -> list[str]:
    return [e["message"] for e in result.events if e.get("event") == "warning"]


def outputs_of(project: Project) -> list[bytes]:
    return [project.read(rel) for rel in OUTPUTS]


# -- restoring from the remote -----------------------------------------------------------------

def test_a_second_clone_restores_by_its_lock_with_no_request_and_the_same_bytes(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    built = first.build()
    assert built.code == 0, built.err
    assert requests_of(api_server) == 3 and built.summary["uploaded"] == 3
    second = clone()

    restored = second.build()

    assert restored.code == 0, restored.err
    assert requests_of(api_server) == 3  # none more
    assert restored.requests == 0 and restored.summary["restored"] == 3 and restored.summary["fetched"] == 3
    assert outputs_of(second) == outputs_of(first)
    assert warnings_of(restored) == []
    assert {(e["state"], e["detail"].rsplit("; ", 1)[-1]) for e in restored.events if e.get("event") == "restored"} \
        == {("remote", "in the remote cache")}


def test_a_clone_without_the_lock_restores_by_the_remote_run_entries(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer) -> None:
    first, clone = clones
    assert first.build().code == 0
    second = clone(lock=False)

    restored = second.build()

    assert restored.code == 0, restored.err
    assert requests_of(api_server) == 3 and restored.requests == 0
    assert outputs_of(second) == outputs_of(first)
    assert second.lock()["targets"]["hero"]["spec"] == first.lock()["targets"]["hero"]["spec"]


def test_a_budget_of_nothing_restores_by_run_entries_that_were_asked_for_before_the_build(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer) -> None:
    # docs/ci.md's pull-request job: --max-cost 0 holds only if what the remote restores is
    # known before the budget's check, so the entries are asked for first there.
    first, clone = clones
    assert first.build().code == 0
    second = clone(lock=False)

    restored = second.build("--remote=read", "--max-cost", "0")

    assert restored.code == 0, restored.err
    assert restored.requests == 0 and restored.summary["restored"] == 3
    assert requests_of(api_server) == 3


class RecordingProxy:
    """An HTTP forwarder on 127.0.0.1 in front of the S3 server that notes each request's
    method and path, in the order they reach it."""

    def __init__(self, upstream: str) -> None:
        import http.server

        import httpx

        seen: list[tuple[str, str]] = []
        client = httpx.Client(base_url=upstream, timeout=30)
        hop = {"host", "connection", "transfer-encoding", "content-length", "keep-alive"}

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                seen.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                answer = client.request(self.command, self.path, headers=headers, content=body)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in hop:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.seen = seen
        self._client = client
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def test_a_build_restores_by_run_entries_as_they_come_not_after_the_last(
        make_project: Callable[..., Project], s3_server: S3Server, s3_bucket: Bucket) -> None:
    # A fresh clone without a lock asks for each target's run entry as the target starts: the
    # first restores fetch their objects while later targets' entries are still being asked for.
    manifest = ['[provider]\nname = "placeholder"\n', f'[cache]\nremote = "{s3_bucket.url}"\n']
    manifest += [f'[images.e{i:02d}]\nprompt = "entry {i}"\noutput = "out/e{i:02d}.png"\n' for i in range(24)]
    first = make_project("first", cache="cache-first")
    first.manifest("\n".join(manifest))
    assert first.build().code == 0
    second = make_project("second", cache="cache-second")
    shutil.copy(first.root / "images.toml", second.root / "images.toml")
    proxy = RecordingProxy(s3_server.endpoint)
    try:
        restored = second.build(env={"AWS_ENDPOINT_URL": proxy.endpoint})
    finally:
        proxy.close()

    assert restored.code == 0, restored.err
    assert restored.requests == 0 and restored.summary["restored"] == 24 and warnings_of(restored) == []
    gets = [path for method, path in proxy.seen if method == "GET"]
    entries = [i for i, path in enumerate(gets) if "/runs/" in path]
    objects = [i for i, path in enumerate(gets) if "/objects/" in path]
    assert len(entries) == 24 and len(objects) == 24
    assert objects[0] < entries[-1], gets


def test_an_object_two_targets_share_is_fetched_once(
        make_project: Callable[..., Project], api_server: ApiServer, s3_bucket: Bucket) -> None:
    # The local server draws one image per size: two targets of one size get the same bytes.
    twins = TARGETS + """
    [images.knight]
    prompt = "Another knight on another hill"
    """
    first = make_project("first", cache="cache-first")
    write_manifest(first, api_server, s3_bucket.url, twins)
    assert first.build().code == 0
    assert first.read("build/images/knight.png") == first.read("build/images/hero.png")
    second = make_project("second", cache="cache-second")
    shutil.copy(first.root / "images.toml", second.root / "images.toml")
    shutil.copy(first.root / "images.lock", second.root / "images.lock")

    restored = second.build()

    assert restored.code == 0, restored.err
    assert restored.summary["restored"] == 4 and restored.summary["fetched"] == 3
    assert second.read("build/images/knight.png") == first.read("build/images/hero.png")


def test_the_summary_says_how_many_images_went_up(
        clones: tuple[Project, Callable[..., Project]], s3_bucket: Bucket) -> None:
    first, _ = clones

    built = first.run("build")

    assert built.code == 0, built.err
    assert "3 uploaded to the remote cache" in built.out
    assert len([k for k in s3_bucket.stored_keys() if k.startswith("objects/")]) == 3
    assert len(set(outputs_of(first))) == 3
    assert len([k for k in s3_bucket.stored_keys() if k.startswith("runs/")]) == 3


def test_status_says_remote_and_a_dry_run_counts_it_at_no_cost(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer) -> None:
    first, clone = clones
    assert first.build().code == 0
    second = clone(lock=False)

    status = second.run("status", "--json")
    dry = second.run("build", "-n", "--json")

    states = {e["target"]: (e["state"], e["reason"]) for e in status.events if e.get("event") == "status"}
    assert states == {n: ("remote", "in the remote cache") for n in ("hero", "map", "sky")}
    estimate = [e for e in dry.events if e.get("event") == "estimate"]
    assert estimate[0]["estimate_usd"] == 0.0
    assert {e["action"] for e in dry.events if e.get("event") == "plan"} == {"restore"}
    assert requests_of(api_server) == 3


def test_read_mode_restores_but_uploads_nothing(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    assert first.build("hero").code == 0
    before = s3_bucket.stored_keys()
    second = clone(lock=False)

    result = second.build("--remote=read")

    assert result.code == 0, result.err
    assert result.summary["fetched"] == 1 and result.summary["built"] == 2
    assert "uploaded" not in result.summary
    assert s3_bucket.stored_keys() == before


# -- what cannot be trusted --------------------------------------------------------------------

def test_a_tampered_object_is_one_warning_and_a_request_never_an_output(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    assert first.build().code == 0
    sha = first.lock()["targets"]["hero"]["outputs"][0]["sha256"]
    real = s3_bucket.read(f"objects/{sha[:2]}/{sha[2:]}")
    middle = len(real) // 2
    forged = real[:middle] + bytes([real[middle] ^ 0xFF]) + real[middle + 1:]  # same size, one byte off
    s3_bucket.write(f"objects/{sha[:2]}/{sha[2:]}", forged)
    second = clone()

    result = second.build()

    assert result.code == 0, result.err
    assert requests_of(api_server) == 4 and result.requests == 1
    warnings = warnings_of(result)
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0], warnings
    assert forged not in [p.read_bytes() for p in second.root.rglob("*") if p.is_file()]
    assert not any(forged == p.read_bytes() for p in second.cache.rglob("*") if p.is_file())


def test_a_tampered_run_entry_is_one_warning_and_a_request(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    key = {"IMGBUILD_CACHE_KEY": CACHE_KEY}
    assert first.build(env=key).code == 0
    lock = first.lock()["targets"]
    spec, map_sha = lock["hero"]["spec"], lock["map"]["outputs"][0]["sha256"]
    hero_sha = lock["hero"]["outputs"][0]["sha256"]
    entry_key = f"runs/{spec[:2]}/{spec[2:]}.json"
    entry = json.loads(s3_bucket.read(entry_key))
    entry["record"] = entry["record"].replace(hero_sha, map_sha)  # "hero's spec made map's image"
    s3_bucket.write(entry_key, json.dumps(entry).encode())
    second = clone(lock=False)

    result = second.build("hero", env=key)

    assert result.code == 0, result.err
    assert result.requests == 1
    warnings = warnings_of(result)
    assert len(warnings) == 1 and "bad signature" in warnings[0], warnings
    assert second.read(OUTPUTS[0]) != first.read(OUTPUTS[1])


def test_with_a_key_an_entry_written_without_it_is_ignored(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer) -> None:
    first, clone = clones
    assert first.build("hero").code == 0  # no key: unsigned entries
    second = clone(lock=False)

    result = second.build("hero", env={"IMGBUILD_CACHE_KEY": CACHE_KEY})

    assert result.code == 0, result.err
    assert result.requests == 1
    warnings = warnings_of(result)
    assert len(warnings) == 1 and "not signed" in warnings[0], warnings


def test_a_run_entry_that_is_not_imgbuilds_is_one_warning_and_a_request(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    assert first.build("hero").code == 0
    spec = first.lock()["targets"]["hero"]["spec"]
    s3_bucket.write(f"runs/{spec[:2]}/{spec[2:]}.json", b"{not json")
    second = clone(lock=False)

    result = second.build("hero")

    assert result.code == 0 and result.requests == 1, result.err
    assert len(warnings_of(result)) == 1


KILLED_TARGETS = 80
KILL_BUDGET_S = 4.0


def test_sigkill_while_restoring_from_the_remote_leaves_the_cache_true_and_outputs_whole(
        make_project: Callable[..., Project], s3_bucket: Bucket) -> None:
    # Objects come down into temp files, are synced in batches and only then renamed into the
    # cache; outputs are copied from the cache. A kill at any point: no object whose bytes are not
    # its name's, no output that is not whole, and the next build restores the rest for nothing.
    manifest = ['[provider]\nname = "placeholder"\n', f'[cache]\nremote = "{s3_bucket.url}"\n']
    manifest += [f'[images.k{i:03d}]\nprompt = "kept {i}"\noutput = "out/k{i:03d}.png"\n' for i in range(KILLED_TARGETS)]
    first = make_project("first", cache="cache-first")
    first.manifest("\n".join(manifest))
    assert first.build().code == 0
    second = make_project("second", cache="cache-second")
    shutil.copy(first.root / "images.toml", second.root / "images.toml")
    shutil.copy(first.root / "images.lock", second.root / "images.lock")
    locked = {rel: hashlib.sha256(first.root.joinpath(rel).read_bytes()).hexdigest()
              for rel in (f"out/k{i:03d}.png" for i in range(KILLED_TARGETS))}
    command = [sys.executable, "-m", "imgbuild", "-C", str(second.root), "build", "-q"]
    # How long a whole restore takes on this machine now: the kills land anywhere within it (fixed
    # delays all landed before the first object came down on a loaded machine).
    timed = time.monotonic()
    subprocess.run(command, env=second.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    whole = time.monotonic() - timed
    rng = random.Random(5)
    started, kills, mid_restore = time.monotonic(), 0, 0
    while (time.monotonic() - started < KILL_BUDGET_S or kills < 3 or not mid_restore) \
            and time.monotonic() - started < 10 * KILL_BUDGET_S:
        shutil.rmtree(second.cache, ignore_errors=True)  # an empty local cache: every object comes down
        shutil.rmtree(second.root / "out", ignore_errors=True)
        proc = subprocess.Popen(command, env=second.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.3, 0.95) * whole)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            mid_restore += any((second.cache / "objects").glob("*/*"))
        for obj in (second.cache / "objects").glob("*/*"):
            if not obj.name.startswith(".imgbuild-tmp-"):
                assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name
        for rel, sha in locked.items():
            if (second.root / rel).exists():
                assert hashlib.sha256(second.read(rel)).hexdigest() == sha, f"{rel} is not whole"

    rerun = second.build()

    assert rerun.code == 0, rerun.err
    assert rerun.requests == 0 and warnings_of(rerun) == []
    assert all(hashlib.sha256(second.read(rel)).hexdigest() == sha for rel, sha in locked.items())
    assert list(second.root.rglob(".imgbuild-tmp-*")) == []
    assert kills >= 3 and mid_restore >= 1, (kills, mid_restore)


# -- a remote that fails -----------------------------------------------------------------------

def test_the_remote_killed_mid_build_costs_one_warning_and_the_build_succeeds(
        make_project: Callable[..., Project], start_api_server: Any,
        own_s3_server: tuple[S3Server, Bucket]) -> None:
    server, bucket = own_s3_server
    api = start_api_server("openai", latency_s=0.4)
    project = make_project("killed")
    targets = "".join(f'[images.t{i}]\nprompt = "Picture number {i}"\n' for i in range(6))
    write_manifest(project, api, bucket.url, targets)
    proc = subprocess.Popen([sys.executable, "-m", "imgbuild", "-C", str(project.root), "build", "--json", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=project.env)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the first image is up (or on its way): now the server dies
        lines.append(line)
        if '"built"' in line:
            server.kill()
            break
    rest, err = proc.communicate(timeout=120)
    result = Result(proc.returncode, "".join(lines) + rest, err)

    assert result.code == 0, result.err
    assert result.summary["built"] == 6
    warnings = warnings_of(result)
    assert len(warnings) == 1 and "remote cache" in warnings[0], warnings
    assert "rest of this run" in warnings[0] or "no more uploads" in warnings[0]


def test_an_unreachable_remote_costs_one_warning_and_the_build_goes_on(
        make_project: Callable[..., Project], api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    project = make_project("down")
    write_manifest(project, api_server, "s3://nowhere/imgbuild")

    result = project.build()

    assert result.code == 0, result.err
    assert result.summary["built"] == 3
    assert len(warnings_of(result)) == 1


def test_status_with_an_unreachable_remote_is_one_warning_and_the_local_answer(
        make_project: Callable[..., Project], api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    project = make_project("status-down")
    write_manifest(project, api_server, "s3://nowhere/imgbuild")

    status = project.run("status")

    assert status.code == 0
    assert [line.split()[1] for line in status.out.splitlines()] == ["new"] * 3
    assert status.err.count("warning:") == 1 and "remote cache s3://nowhere/imgbuild" in status.err


def test_a_bad_remote_url_in_the_environment_is_one_line_and_exit_2(
        make_project: Callable[..., Project], api_server: ApiServer) -> None:
    project = make_project("bad-env")
    write_manifest(project, api_server, None)

    result = project.build(env={"IMGBUILD_REMOTE_CACHE": "ftp://cache.example.com/x"})

    assert result.code == 2
    assert result.err.count("\n") == 1 and "unknown scheme" in result.err
    assert requests_of(api_server) == 0


# -- no connection when off, or on a no-op -----------------------------------------------------

class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def counter() -> Iterator[ConnectionCounter]:
    c = ConnectionCounter()
    yield c
    c.close()


def test_remote_off_opens_no_connection(make_project: Callable[..., Project], api_server: ApiServer,
                                        counter: ConnectionCounter) -> None:
    project = make_project("off")
    write_manifest(project, api_server, f"http://127.0.0.1:{counter.port}/cache")
    other = make_project("on", cache="cache-on")
    write_manifest(other, api_server, f"http://127.0.0.1:{counter.port}/cache")

    off = project.build("--remote=off")
    status_off = project.run("status", "--remote=off", "--json")
    counted_off = counter.count
    on = other.build()  # the same build with the remote on: the counter sees it

    assert off.code == 0 and off.summary["built"] == 3 and warnings_of(off) == []
    assert status_off.code == 0
    assert counted_off == 0
    assert on.code == 0 and counter.count > 0


def test_a_no_op_with_a_remote_configured_opens_no_connection(
        make_project: Callable[..., Project], api_server: ApiServer, counter: ConnectionCounter) -> None:
    project = make_project("noop")
    write_manifest(project, api_server, f"http://127.0.0.1:{counter.port}/cache")
    assert project.build("--remote=off").code == 0

    again = project.build()
    status = project.run("status")
    check = project.run("check")

    assert again.code == 0 and again.summary["up_to_date"] == 3
    assert status.code == 0 and check.code == 0
    assert counter.count == 0


# -- secrets -----------------------------------------------------------------------------------

def test_the_stores_credentials_are_in_no_file_written_and_nothing_printed(
        make_project: Callable[..., Project], api_server: ApiServer, own_s3_server: tuple[S3Server, Bucket],
        tmp_path: Path) -> None:
    server, bucket = own_s3_server
    key = {"IMGBUILD_CACHE_KEY": CACHE_KEY}
    first, second, third = (make_project(n, cache=f"cache-{n}") for n in ("first", "second", "third"))
    for project in (first, second, third):
        write_manifest(project, api_server, bucket.url)
    results = [first.build("-v", env=key), first.run("status", "-v", env=key),
               second.build("-v", env=key), second.run("cache", "push", env=key),
               second.run("cache", "pull", env=key)]
    server.kill()  # a failing remote's messages too
    results += [third.build("-v", env=key), third.run("status", env=key)]

    assert all(r.code == 0 for r in results), [r.err for r in results]
    secrets = [TEST_SECRET, CACHE_KEY]
    printed = "".join(r.out + r.err for r in results)
    assert "remote cache" in printed  # the dead server's warning was printed, without them
    assert [s for s in secrets if s in printed] == []
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 10
    assert [p for p in written for s in secrets if s.encode() in p.read_bytes()] == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- cache push | pull -------------------------------------------------------------------------

def test_cache_push_uploads_what_a_build_without_the_remote_made_and_a_clone_restores_it(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    assert first.build("--remote=off").code == 0
    assert s3_bucket.stored_keys() == []

    pushed = first.run("cache", "push")
    again = first.run("cache", "push")
    second = clone(lock=False)
    restored = second.build()

    assert pushed.code == 0, pushed.err
    assert "push: 3 image(s) uploaded to" in pushed.out
    assert "push: 0 image(s) uploaded to" in again.out and "3 the remote had already" in again.out
    assert len([k for k in s3_bucket.stored_keys() if k.startswith("runs/")]) == 3
    assert restored.requests == 0 and outputs_of(second) == outputs_of(first)


def test_cache_pull_fills_the_local_cache_so_that_the_build_needs_no_network(
        clones: tuple[Project, Callable[..., Project]], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, clone = clones
    assert first.build().code == 0
    second = clone()

    pulled = second.run("cache", "pull", "hero", "map")
    offline = second.build("--remote=off", "hero", "map")

    assert pulled.code == 0, pulled.err
    assert "pull: 2 image(s) fetched from" in pulled.out
    assert offline.code == 0 and offline.requests == 0 and offline.summary["restored"] == 2
    assert second.read(OUTPUTS[0]) == first.read(OUTPUTS[0])


def test_cache_push_without_a_remote_says_how_to_configure_one(project: Project, api_server: ApiServer) -> None:
    write_manifest(project, api_server, None)

    result = project.run("cache", "push")

    assert result.code == 2
    assert result.err.count("\n") == 1 and "[cache] remote" in result.err and "IMGBUILD_REMOTE_CACHE" in result.err


# -- configuration -----------------------------------------------------------------------------

def test_a_remote_url_with_credentials_in_the_manifest_is_refused_at_its_place(
        project: Project, api_server: ApiServer) -> None:
    write_manifest(project, api_server, "https://user:hunter2-secret@cache.example.com/imgbuild")

    result = project.run("status")

    assert result.code == 2
    assert "cache.remote" in result.err and "credentials" in result.err
    assert "hunter2-secret" not in result.out + result.err


def test_the_environment_names_the_remote_when_the_manifest_does_not(
        make_project: Callable[..., Project], api_server: ApiServer, s3_bucket: Bucket) -> None:
    first, second = make_project("a", cache="cache-a"), make_project("b", cache="cache-b")
    env = {"IMGBUILD_REMOTE_CACHE": s3_bucket.url}
    for p in (first, second):
        write_manifest(p, api_server, None)
    assert first.build(env=env).code == 0

    restored = second.build(env=env)

    assert restored.code == 0 and restored.requests == 0 and restored.summary["fetched"] == 3


NO_OP_PROBE = """
import os, sys
from imgbuild.cli import main
code = main(sys.argv[1:])
with open(os.environ["PROBE_OUT"], "w") as f:
    f.write(" ".join(m for m in ("obstore", "imgbuild.project") if m in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize("args", [("build",), ("build", "--remote=read"), ("status",), ("check",)],
                         ids=" ".join)
def test_a_no_op_with_a_remote_takes_the_fast_path_and_never_imports_obstore(
        make_project: Callable[..., Project], api_server: ApiServer, s3_bucket: Bucket, args: tuple[str, ...]) -> None:
    project = make_project("fast")
    write_manifest(project, api_server, s3_bucket.url)
    assert project.build().code == 0
    probe = project.root.parent / "probe.txt"

    def run() -> str:
        proc = subprocess.run([sys.executable, "-c", NO_OP_PROBE, "-C", str(project.root), *args],
                              capture_output=True, text=True, timeout=60, env={**project.env, "PROBE_OUT": str(probe)})
        assert proc.returncode == 0, proc.stderr
        return probe.read_text()

    full = run()  # the full path's no-op (it records the state the fast path answers from)
    time.sleep(1.1)  # past the racily-clean window
    run()
    fast = run()

    assert "obstore" not in full
    assert fast == ""
