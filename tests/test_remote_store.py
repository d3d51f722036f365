"""The remote store against a real S3-compatible server (moto, in its own process) and other
real loopback servers: objects and run entries, trust, failures, modes, secrets."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Awaitable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from imgbuild.remote import (
    RemoteConfigError,
    RemoteOptions,
    RemoteStore,
    object_key,
    open_remote,
    redact,
    run_key,
)

if TYPE_CHECKING:
    from s3server import Bucket, S3Server

pytest_plugins = ["s3server"]  # the moto server and its fixtures
OTHER_SECRET = "imgbuild-fake-endpoint-secret-0f1e2d3c4b5a"
CACHE_KEY = "imgbuild-cache-key-0a1b2c3d4e5f60718293"
FAST = RemoteOptions(connect_timeout_s=0.5, request_timeout_s=0.5, transfer_timeout_s=2)


def blob(path: Path, seed: int, size: int = 300_000) -> tuple[str, Path]:
    """A file of distinct bytes and its sha256."""
    data = hashlib.sha256(b"%d" % seed).digest() * (size // 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


def spec(n: int) -> str:
    return hashlib.sha256(b"spec %d" % n).hexdigest()


def opened(url: str, mode: Any = "readwrite", **kw: Any) -> tuple[RemoteStore, list[str]]:
    seen: list[str] = []
    return open_remote(url, mode, on_warning=seen.append, **kw), seen


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def scan_for(secrets: list[str], *texts: str | bytes) -> list[str]:
    """The secrets that occur in any of ``texts``."""
    blobs = [t if isinstance(t, bytes) else t.encode() for t in texts]
    return [secret for secret in secrets if any(secret.encode() in b for b in blobs)]


# -- objects and entries ---------------------------------------------------------------------

def test_an_object_put_is_found_and_restored_byte_for_byte(s3_bucket: Bucket, tmp_path: Path) -> None:
    sha, path = blob(tmp_path / "a" / "img.png", 1)
    remote, warnings = opened(s3_bucket.url)
    dest = tmp_path / "b" / "objects" / sha[:2] / sha[2:]

    async def scenario() -> tuple[bool, bool, bool, bool]:
        before = await remote.has_object(sha)
        put = await remote.put_object(sha, path)
        return before, put, await remote.has_object(sha), await remote.get_object(sha, dest)

    assert run(scenario()) == (False, True, True, True)
    assert dest.read_bytes() == path.read_bytes()
    assert s3_bucket.stored_keys() == [object_key(sha)] == [f"objects/{sha[:2]}/{sha[2:]}"]
    assert warnings == []


def test_an_object_the_remote_has_is_not_uploaded_again(s3_bucket: Bucket, tmp_path: Path) -> None:
    sha, path = blob(tmp_path / "img.png", 2)
    s3_bucket.write(object_key(sha), b"already here")  # whatever is there, is not replaced
    remote, _ = opened(s3_bucket.url)
    assert run(remote.put_object(sha, path)) is True
    assert s3_bucket.read(object_key(sha)) == b"already here"
    assert remote.stats.objects_up == 0


def test_a_missing_object_or_entry_is_absent_without_a_warning(s3_bucket: Bucket, tmp_path: Path) -> None:
    remote, warnings = opened(s3_bucket.url)
    dest = tmp_path / "out.png"

    async def scenario() -> tuple[Any, ...]:
        return (await remote.has_object(spec(1)), await remote.get_object(spec(1), dest),
                await remote.get_run(spec(2)))

    assert run(scenario()) == (False, False, None)
    assert not dest.exists() and warnings == [] and remote.readable


def test_a_run_entry_comes_back_exactly_as_put(s3_bucket: Bucket) -> None:
    record = b'{"outputs": [{"sha256": "ab"}], "provider": "openai", "note": "caf\xc3\xa9"}'
    remote, warnings = opened(s3_bucket.url)

    async def scenario() -> bytes | None:
        assert await remote.put_run(spec(3), record)
        return await remote.get_run(spec(3))

    assert run(scenario()) == record
    assert s3_bucket.stored_keys() == [run_key(spec(3))] == [f"runs/{spec(3)[:2]}/{spec(3)[2:]}.json"]
    assert warnings == []


def test_two_clones_share_images_through_the_remote(s3_bucket: Bucket, tmp_path: Path) -> None:
    # Given a first clone that built two images and published them with their run entry,
    first = tmp_path / "clone-1"
    outputs = [blob(first / f"img-{i}.png", 10 + i) for i in range(2)]
    record = f'{{"outputs": ["{outputs[0][0]}", "{outputs[1][0]}"]}}'.encode()
    writer, _ = opened(s3_bucket.url)

    async def publish() -> int:
        writer.publish(spec(4), record, outputs)
        return await writer.drain(timeout_s=30)

    assert run(publish()) == 2
    # a second clone with an empty local folder gets the record and identical bytes.
    second = tmp_path / "clone-2"
    reader, warnings = opened(s3_bucket.url)

    async def restore() -> tuple[bytes | None, list[bool]]:
        found = await reader.get_run(spec(4))
        got = [await reader.get_object(sha, second / sha) for sha, _ in outputs]
        return found, got

    assert run(restore()) == (record, [True, True])
    for sha, path in outputs:
        assert (second / sha).read_bytes() == path.read_bytes()
    assert reader.stats.objects_up == 0 and reader.stats.objects_down == 2 and warnings == []


def test_a_file_url_remote_works_like_a_bucket(tmp_path: Path) -> None:
    sha, path = blob(tmp_path / "clone-1" / "img.png", 5)
    shared = tmp_path / "shared cache"
    writer, _ = opened(shared.as_uri())
    reader, warnings = opened(shared.as_uri())

    async def scenario() -> bool:
        assert await writer.put_object(sha, path) and await writer.put_run(spec(5), b"{}")
        return await reader.get_run(spec(5)) == b"{}" and await reader.get_object(sha, tmp_path / "out")

    assert run(scenario())
    assert (shared / "objects" / sha[:2] / sha[2:]).read_bytes() == path.read_bytes()
    assert warnings == []


class _HttpCache(BaseHTTPRequestHandler):
    """A plain HTTP cache (nginx with WebDAV PUT, bazel-remote …): GET, HEAD, PUT of paths."""

    protocol_version = "HTTP/1.1"
    files: ClassVar[dict[str, bytes]] = {}
    status_for_put = 201
    seen: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.seen.append("HEAD")
        data = self.files.get(self.path)
        self.send_response(404 if data is None else 200)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()

    def do_GET(self) -> None:
        self.seen.append("GET")
        data = self.files.get(self.path)
        self._send(404) if data is None else self._send(200, data)

    def do_PUT(self) -> None:
        self.seen.append("PUT")
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.status_for_put < 300:
            self.files[self.path] = data
        self._send(self.status_for_put)


@pytest.fixture
def http_cache() -> Iterator[tuple[ThreadingHTTPServer, type[_HttpCache]]]:
    handler = type("Handler", (_HttpCache,), {"files": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_a_plain_http_cache_stores_and_serves_objects_and_entries(
        http_cache: tuple[ThreadingHTTPServer, type[_HttpCache]], tmp_path: Path) -> None:
    server, handler = http_cache
    sha, path = blob(tmp_path / "img.png", 6)
    remote, warnings = opened(f"http://127.0.0.1:{server.server_port}/cache")

    async def scenario() -> tuple[bytes | None, bool]:
        assert await remote.put_object(sha, path) and await remote.put_run(spec(6), b"{}")
        return await remote.get_run(spec(6)), await remote.get_object(sha, tmp_path / "out")

    assert run(scenario()) == (b"{}", True)
    assert f"/cache/objects/{sha[:2]}/{sha[2:]}" in handler.files
    assert (tmp_path / "out").read_bytes() == path.read_bytes() and warnings == []


# -- trust -------------------------------------------------------------------------------------

def test_a_tampered_object_is_absent_with_one_warning_and_no_file(s3_bucket: Bucket, tmp_path: Path) -> None:
    sha, _ = blob(tmp_path / "img.png", 7)
    s3_bucket.write(object_key(sha), b"not the image" * 1000)
    remote, warnings = opened(s3_bucket.url)
    folder = tmp_path / "restore"
    assert run(remote.get_object(sha, folder / "img.png")) is False
    assert list(folder.iterdir()) == []  # neither the file nor a temp file is left
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0]
    assert remote.readable  # one bad object says nothing about the others


def test_an_unsynced_download_leaves_checked_bytes_at_its_temp_path_and_a_tampered_one_nothing(
        s3_bucket: Bucket, tmp_path: Path) -> None:
    # The batched path (the caller syncs many at once and renames): the same check as get_object.
    good, path = blob(tmp_path / "good.png", 9)
    bad, _ = blob(tmp_path / "bad.png", 10)
    remote, warnings = opened(s3_bucket.url)
    assert run(remote.put_object(good, path))
    s3_bucket.write(object_key(bad), b"not the image" * 1000)
    folder = tmp_path / "incoming"
    folder.mkdir()

    assert run(remote.get_object_unsynced(good, folder / "t1")) is True
    assert run(remote.get_object_unsynced(bad, folder / "t2")) is False

    assert [p.name for p in folder.iterdir()] == ["t1"] and (folder / "t1").read_bytes() == path.read_bytes()
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0]


@pytest.mark.parametrize("off_by", [-1, 1])
def test_an_object_of_another_size_than_expected_is_refused(s3_bucket: Bucket, tmp_path: Path,
                                                            off_by: int) -> None:
    # The run record gives each output's size: a remote object that disagrees is not used,
    # and one larger than said is not downloaded past that size.
    sha, path = blob(tmp_path / "img.png", 8)
    remote, warnings = opened(s3_bucket.url)
    assert run(remote.put_object(sha, path))
    expected = path.stat().st_size + off_by
    assert run(remote.get_object(sha, tmp_path / "out.png", expected_size=expected)) is False
    assert not (tmp_path / "out.png").exists() and len(warnings) == 1


def test_with_a_key_a_tampered_run_entry_is_ignored(s3_bucket: Bucket) -> None:
    remote, warnings = opened(s3_bucket.url, key=CACHE_KEY)
    run(remote.put_run(spec(9), b'{"outputs": ["good"]}'))
    stored = s3_bucket.read(run_key(spec(9)))
    assert b"hmac_sha256" in stored
    s3_bucket.write(run_key(spec(9)), stored.replace(b"good", b"evil"))
    assert run(remote.get_run(spec(9))) is None
    assert len(warnings) == 1 and "bad signature" in warnings[0]


def test_with_a_key_an_entry_written_without_it_is_ignored(s3_bucket: Bucket,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    keyless, _ = opened(s3_bucket.url)
    run(keyless.put_run(spec(10), b'{"outputs": ["chosen by the writer"]}'))
    monkeypatch.setenv("IMGBUILD_CACHE_KEY", CACHE_KEY)  # the team's readers hold the key
    reader, warnings = opened(s3_bucket.url)
    assert reader.signed
    assert run(reader.get_run(spec(10))) is None
    assert len(warnings) == 1 and "not signed" in warnings[0]


def test_with_a_key_an_entry_signed_with_another_key_is_ignored(s3_bucket: Bucket) -> None:
    other, _ = opened(s3_bucket.url, key="some other key")
    run(other.put_run(spec(11), b"{}"))
    reader, warnings = opened(s3_bucket.url, key=CACHE_KEY)
    assert run(reader.get_run(spec(11))) is None and len(warnings) == 1


def test_a_signed_entry_copied_to_another_spec_is_ignored(s3_bucket: Bucket) -> None:
    remote, warnings = opened(s3_bucket.url, key=CACHE_KEY)
    run(remote.put_run(spec(12), b'{"outputs": ["a"]}'))
    s3_bucket.write(run_key(spec(13)), s3_bucket.read(run_key(spec(12))))
    assert run(remote.get_run(spec(13))) is None
    assert run(remote.get_run(spec(12))) == b'{"outputs": ["a"]}'
    assert len(warnings) == 1 and "not an entry for this spec" in warnings[0]


def test_a_signed_entry_is_read_back_with_the_key(s3_bucket: Bucket) -> None:
    writer, _ = opened(s3_bucket.url, key=CACHE_KEY)
    reader, warnings = opened(s3_bucket.url, key=CACHE_KEY)
    run(writer.put_run(spec(14), b'{"outputs": []}'))
    assert run(reader.get_run(spec(14))) == b'{"outputs": []}' and warnings == []


# -- failures: a warning, never a build ----------------------------------------------------------

@pytest.fixture
def silent_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A port that accepts connections (the kernel's backlog) but never answers; S3's
    environment points at it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": OTHER_SECRET,
                       "AWS_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("IMGBUILD_CACHE_KEY", raising=False)
    yield sock
    sock.close()


def connections_waiting(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_a_killed_server_costs_one_warning_then_every_answer_is_immediate(
        own_s3_server: tuple[S3Server, Bucket], tmp_path: Path) -> None:
    server, bucket = own_s3_server
    objects = [blob(tmp_path / "local" / f"{i}.png", 20 + i) for i in range(3)]
    remote, warnings = opened(bucket.url, options=FAST)

    async def before() -> bool:
        return all([await remote.put_object(sha, path) for sha, path in objects]) and \
            await remote.put_run(spec(20), b"{}")

    assert run(before())
    server.kill()

    async def after() -> list[Any]:
        batch: list[Awaitable[Any]] = [remote.get_object(sha, tmp_path / "restore" / sha) for sha, _ in objects]
        batch += [remote.get_run(spec(20)), remote.has_object(objects[0][0])]
        first = await asyncio.gather(*batch)
        rest = [await remote.get_run(spec(20)), await remote.put_object(*objects[0]),
                await remote.put_run(spec(21), b"{}"), await remote.has_object(objects[1][0])]
        return [*first, *rest]

    start = time.perf_counter()
    answers = run(after())
    elapsed = time.perf_counter() - start
    assert answers == [False, False, False, None, False, None, False, False, False]
    assert elapsed < 2.0, f"a dead remote took {elapsed:.2f} s"
    assert len(warnings) == 1 and "going on without the remote cache" in warnings[0]
    assert not remote.readable and not (tmp_path / "restore").exists() or \
        list((tmp_path / "restore").iterdir()) == []


def test_a_remote_that_never_answers_costs_one_short_timeout(silent_socket: socket.socket,
                                                              tmp_path: Path) -> None:
    remote, warnings = opened("s3://bucket/prefix", options=FAST)

    async def scenario() -> tuple[list[Any], float]:
        first = await asyncio.gather(*(remote.has_object(spec(i)) for i in range(8)),
                                     remote.get_run(spec(30)))
        start = time.perf_counter()
        later = [await remote.get_object(spec(31), tmp_path / "x"), await remote.get_run(spec(32))]
        return first + later, time.perf_counter() - start

    start = time.perf_counter()
    answers, later_s = run(scenario())
    elapsed = time.perf_counter() - start
    assert answers == [False] * 8 + [None, False, None]
    assert elapsed < 2.0 and later_s < 0.2, (elapsed, later_s)
    assert len(warnings) == 1 and "no answer within 0.5 s" in warnings[0]


@pytest.fixture
def refusing_s3(http_cache: tuple[ThreadingHTTPServer, type[_HttpCache]],
                monkeypatch: pytest.MonkeyPatch) -> type[_HttpCache]:
    server, handler = http_cache
    for key, value in {"AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": OTHER_SECRET,
                       "AWS_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}.items():
        monkeypatch.setenv(key, value)
    return handler


@pytest.mark.parametrize("status, shown", [(403, "permission denied"), (507, "HTTP 507")])
def test_a_remote_refusing_uploads_stops_uploads_and_keeps_lookups(
        refusing_s3: type[_HttpCache], tmp_path: Path, status: int, shown: str) -> None:
    refusing_s3.status_for_put = status
    sha, path = blob(tmp_path / "img.png", 40)
    remote, warnings = opened("s3://bucket/prefix", options=FAST)

    async def scenario() -> list[Any]:
        return [await remote.put_object(sha, path), await remote.put_run(spec(40), b"{}"),
                await remote.put_object(sha, path), await remote.has_object(sha)]

    assert run(scenario()) == [False, False, False, False]
    puts = refusing_s3.seen.count("PUT")
    assert puts == (1 if status == 403 else 3)  # 5xx is retried twice by obstore, 403 never
    assert refusing_s3.seen[-1] == "HEAD"  # lookups still go to the remote
    assert len(warnings) == 1 and shown in warnings[0] and "no more uploads" in warnings[0]
    assert remote.readable and not remote.writable


def test_drain_waits_for_background_uploads_no_longer_than_its_bound(
        silent_socket: socket.socket, tmp_path: Path) -> None:
    slow = RemoteOptions(request_timeout_s=30, transfer_timeout_s=30)
    remote, warnings = opened("s3://bucket/prefix", options=slow)
    sha, path = blob(tmp_path / "img.png", 50)

    async def scenario() -> int:
        remote.publish(spec(50), b"{}", [(sha, path)])
        return await remote.drain(timeout_s=0.3)

    start = time.perf_counter()
    assert run(scenario()) == 0
    assert time.perf_counter() - start < 2.0
    assert len(warnings) == 1 and "1 uploads not finished after 0.3 s" in warnings[0]


# -- modes ---------------------------------------------------------------------------------------

def test_read_mode_never_writes(s3_bucket: Bucket, tmp_path: Path) -> None:
    sha, path = blob(tmp_path / "img.png", 60)
    remote, warnings = opened(s3_bucket.url, "read")

    async def scenario() -> list[Any]:
        remote.publish(spec(61), b"{}", [(sha, path)])
        drained = await remote.drain(5)
        return [await remote.put_object(sha, path), await remote.put_run(spec(60), b"{}"), drained]

    assert run(scenario()) == [False, False, 0]
    assert s3_bucket.stored_keys() == [] and warnings == []


def test_off_mode_opens_no_connection(silent_socket: socket.socket, tmp_path: Path) -> None:
    port = silent_socket.getsockname()[1]
    sha, path = blob(tmp_path / "img.png", 70)
    stores = [open_remote(url, "off") for url in
              ("s3://bucket/prefix", f"http://127.0.0.1:{port}/cache")] + [open_remote(None)]

    async def use(remote: RemoteStore) -> list[Any]:
        remote.publish(spec(70), b"{}", [(sha, path)])
        return [await remote.has_object(sha), await remote.get_object(sha, tmp_path / "x"),
                await remote.put_object(sha, path), await remote.get_run(spec(70)),
                await remote.put_run(spec(70), b"{}"), await remote.drain(1)]

    for remote in stores:
        assert run(use(remote)) == [False, False, False, None, False, 0]
        assert remote.mode == "off" and remote.warnings == []
    assert connections_waiting(silent_socket) == 0
    # The probe itself works: the same calls in readwrite mode do connect.
    run(open_remote("s3://bucket/prefix", options=FAST).has_object(sha))
    assert connections_waiting(silent_socket) >= 1


# -- configuration and secrets ------------------------------------------------------------------

@pytest.mark.parametrize("url, says", [
    ("ftp://host/cache", "unknown scheme"),
    ("s3://", "names no bucket"),
    ("https://user:hunter22@cache.example/x", "must not carry credentials"),
    ("s3://bucket/x?access_key_id=AKIA&secret=hunter22", "must not carry credentials"),
    ("file://relative/folder", "file:///abs/path"),
])
def test_a_bad_remote_url_is_a_usage_error_that_shows_no_secret(url: str, says: str) -> None:
    with pytest.raises(RemoteConfigError) as caught:
        open_remote(url)
    assert says in str(caught.value) and "hunter22" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_unknown_mode_is_a_usage_error() -> None:
    with pytest.raises(RemoteConfigError, match="use one of readwrite, read, off"):
        open_remote("s3://bucket/x", "write")  # type: ignore[arg-type]


def test_redact_hides_secret_values_url_queries_and_user_info() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AZURE_STORAGE_SAS_TOKEN": "sv=2020&sig=abc",
           "IMGBUILD_CACHE_KEY": "the-team-key", "AWS_REGION": "us-east-1"}
    text = ("s3cr3t-value the-team-key https://acct.blob.core.windows.net/c/x?sv=2020&sig=abc "
            "http://bob:pw@host/p us-east-1")
    assert redact(text, env) == ("*** *** https://acct.blob.core.windows.net/c/x?*** "
                                 "http://***@host/p us-east-1")


def test_credentials_appear_in_no_file_written_and_no_message(
        own_s3_server: tuple[S3Server, Bucket], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    server, bucket = own_s3_server
    session_token = "imgbuild-session-token-31415926535897"
    monkeypatch.setenv("AWS_SESSION_TOKEN", session_token)
    monkeypatch.setenv("IMGBUILD_CACHE_KEY", CACHE_KEY)
    secrets = [server.env()["AWS_SECRET_ACCESS_KEY"], session_token, CACHE_KEY]
    objects = [blob(tmp_path / "clone-1" / f"{i}.png", 80 + i) for i in range(2)]
    writer, warned_w = opened(bucket.url, options=FAST)
    reader, warned_r = opened(bucket.url, options=FAST)

    async def work() -> None:
        writer.publish(spec(80), b'{"outputs": 2}', objects)
        await writer.drain(10)
        await reader.get_run(spec(80))
        for sha, _ in objects:
            await reader.get_object(sha, tmp_path / "clone-2" / sha)

    run(work())
    bucket.write(run_key(spec(81)), b'{"version": 1, "record": "{}", "spec_digest": "x"}')
    remote_bytes = [bucket.read(key) for key in bucket.stored_keys()]
    server.kill()

    async def failing() -> None:
        await reader.get_run(spec(81))
        await writer.put_object(*objects[0])

    run(failing())
    out, err = capfd.readouterr()
    assert warned_r and warned_w  # messages were produced, and are scanned below
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert scan_for(secrets, *warned_w, *warned_r, out, err, *files, *remote_bytes) == []


def test_gs_and_az_urls_open_without_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "teamstudio")
    for url in ("gs://team-bucket/imgbuild", "az://images/imgbuild"):
        remote = open_remote(url)
        assert remote.readable and remote.writable and remote.warnings == []
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME")
    with pytest.raises(RemoteConfigError, match="cannot be opened"):
        open_remote("az://images/imgbuild")
