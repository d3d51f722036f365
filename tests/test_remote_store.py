"""The remote store against a real S3-compatible server (moto, in its own process) and other
real loopback servers: objects and run entries, trust, failures, modes, secrets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from s3server import (TEST_SECRET, Bucket, S3Server, own_s3_server, s3_bucket,  # noqa: F401
                      s3_server, scan_for)

from imgbuild.remote import (RemoteConfigError, RemoteOptions, RemoteStore, object_key,
                             open_remote, redact, run_key)

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
    assert s3_bucket.keys() == [object_key(sha)] == [f"objects/{sha[:2]}/{sha[2:]}"]
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
    assert s3_bucket.keys() == [run_key(spec(3))] == [f"runs/{spec(3)[:2]}/{spec(3)[2:]}.json"]
    assert warnings == []


def test_two_clones_share_images_through_the_remote(s3_bucket: Bucket, tmp_path: Path) -> None:
    # Given a first clone that built two images and published them with their run entry,
    first = tmp_path / "clone-1"
    outputs = [blob(first / f"img-{i}.png", 10 + i) for i in range(2)]
    record = ('{"outputs": ["%s", "%s"]}' % (outputs[0][0], outputs[1][0])).encode()
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
    files: dict[str, bytes] = {}
    status_for_put = 201
    seen: list[str] = []

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
    sha, path = blob(tmp_path / "img.png", 7)
    s3_bucket.write(object_key(sha), b"not the image" * 1000)
    remote, warnings = opened(s3_bucket.url)
    folder = tmp_path / "restore"
    assert run(remote.get_object(sha, folder / "img.png")) is False
    assert list(folder.iterdir()) == []  # neither the file nor a temp file is left
    assert len(warnings) == 1 and "does not match its sha256" in warnings[0]
    assert remote.readable  # one bad object says nothing about the others


def test_an_object_larger_than_expected_is_cut_short_and_refused(s3_bucket: Bucket, tmp_path: Path) -> None:
    sha, path = blob(tmp_path / "img.png", 8)
    s3_bucket.write(object_key(sha), path.read_bytes() * 4)
    remote, warnings = opened(s3_bucket.url)
    size = path.stat().st_size
    assert run(remote.get_object(sha, tmp_path / "out.png", expected_size=size)) is False
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
