"""A strict local gpt-image-2 API (API.md) on 127.0.0.1, for tests and benchmarks.

In tests it runs in a thread, started by the fixtures at the bottom (this module is a pytest
plugin: ``pytest_plugins = ["apiserver"]``). For benchmarks it runs as its own process:

    python tests/apiserver.py --port 8123 --mode openai --latency 1.0 --key sk-...

It answers like the real endpoints, in the ``openai`` dialect (b64_json + token ``usage``) or the
``aimlapi`` one (download URLs on another host name + ``meta.usage.usd_spent``), with real images
of the requested size and format; it rejects what the real ones reject (every field and value,
multipart parts, masks); it records every request it receives, so that tests assert exactly what
arrived; and it injects faults on demand (:meth:`ApiServer.inject`, :meth:`ApiServer.inject_for`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from apiserver_handlers import render_b64, serve_api, serve_download
from apiserver_rules import MODELS, Invalid, Part, parse_multipart

TEST_KEY = "sk-imgbuild-test-4f7c2a9e81b35d60c7e2f19a8b4d3c56"
KEY_ENV = "IMGBUILD_TEST_API_KEY"

FAULTS = {
    "429": "rate limited, with Retry-After when given",
    "500": "internal server error", "503": "service unavailable",
    "400": "invalid request (message as given)", "moderation": "400 moderation_blocked",
    "401": "bad key (the message echoes the key, as careless gateways do)", "403": "forbidden",
    "slow": "answer after delay_s (longer than the client's timeout)",
    "reset": "close the connection without answering",
    "truncate": "Content-Length larger than the body sent, then close",
    "bad_base64": "b64_json that is not base64", "undecodable": "base64 of a cut image",
    "wrong_size": "an image of other dimensions", "wrong_format": "an image of another format",
    "url_scheme": "aimlapi: a file:// image URL", "truncate_download": "aimlapi: cut download",
    "gone_download": "aimlapi: the URL answers 404, every time",
    "oversize_download": "aimlapi: download announcing 65 MB",
    "endless_download": "aimlapi: chunked download that never ends",
    "extra_images": "count more images than the n asked for (paid for, as the server says)",
    "bomb": "a decompression bomb: a whole, valid PNG of 20000x20000 pixels, 50 KB on the wire",
    "usage": "the answer's usage (openai) or meta.usage (aimlapi) with the fields of `usage` merged in",
}


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: str | None = None
    delay_s: float = 0.0
    message: str = "Invalid request."
    count: int = 1  # extra_images: how many more
    usage: dict[str, Any] | None = None  # usage: fields to merge in (Infinity, NaN are sent as such)

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {sorted(FAULTS)}")


@dataclass
class Received:
    """One request as the server saw it. The Authorization value itself is never kept."""

    method: str
    path: str
    auth: str  # "ok", "wrong", "absent"
    headers: dict[str, str]
    client_port: int
    at: float  # time.monotonic() on arrival
    in_flight: int  # API requests being processed at arrival, this one included
    fields: dict[str, Any] = field(default_factory=dict)
    # (part name, file name, bytes, sha256) of each file part, in the order received
    files: list[tuple[str, str | None, int, str]] = field(default_factory=list)
    status: int | None = None
    fault: str | None = None

    @property
    def part_names(self) -> list[str]:
        return [f[0] for f in self.files]


class ApiServer:
    """The server. ``mode`` is the dialect; ``extra_fields`` are further fields it accepts beyond
    the published schema (apiserver_rules.ENDPOINT_FIELDS), as a newer API version would."""

    def __init__(self, mode: str = "openai", *, key: str = TEST_KEY, latency_s: float = 0.0,
                 port: int = 0, extra_fields: tuple[str, ...] = (), transparent_ok: bool = True,
                 usd_per_image: float = 0.0537, escape_slashes: bool = False,
                 distinct_images: bool = False) -> None:
        self.mode, self.key, self.latency_s = mode, key, latency_s
        # As the real API: every PNG served is another image (a counter in a tEXt chunk), so that
        # the takes of one request differ. Off by default: most tests compare bytes across requests.
        self.distinct_images = distinct_images
        self._distinct = itertools.count(1)
        self.escape_slashes = escape_slashes
        self.extra_fields, self.transparent_ok, self.usd_per_image = (
            extra_fields, transparent_ok, usd_per_image)
        self.received: list[Received] = []
        self.downloads: list[Received] = []
        self.served: list[str] = []  # sha256 of every image sent, in order
        self._lock = threading.Lock()
        self._faults: collections.deque[Fault] = collections.deque()
        self._rules: list[list[Any]] = []  # [substring, fault, times left or None]
        self._files: dict[str, tuple[bytes, str, str | None]] = {}  # token -> bytes, type, fault
        self._tokens = itertools.count(1)
        self._in_flight = 0
        self.stopping = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- what tests use ----------------------------------------------------------------------

    def inject(self, fault: Fault, times: int = 1) -> None:
        """The next ``times`` API requests get ``fault``, in order after those queued before."""
        with self._lock:
            self._faults.extend([fault] * times)

    def inject_for(self, prompt_part: str, fault: Fault, times: int | None = None) -> None:
        """Requests whose prompt contains ``prompt_part`` get ``fault`` (``times`` of them, or
        all of them)."""
        with self._lock:
            self._rules.append([prompt_part, fault, times])

    def api_requests(self, path_end: str = "") -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.endswith(path_end)]

    # -- internals used by the handler ---------------------------------------------------------

    def _pick_fault(self, prompt: str) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            for rule in self._rules:
                if rule[0] in prompt and rule[2] != 0:
                    if rule[2] is not None:
                        rule[2] -= 1
                    return rule[1]  # type: ignore[no-any-return]
        return None

    def _arrive(self, handler: _Handler, api: bool) -> Received:
        auth_header = handler.headers.get("Authorization")
        auth = "absent" if auth_header is None else (
            "ok" if auth_header == f"Bearer {self.key}" else "wrong")
        headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() != "authorization"}
        with self._lock:
            if api:
                self._in_flight += 1
            rec = Received(handler.command, handler.path, auth, headers,
                           handler.client_address[1], time.monotonic(), self._in_flight)
            (self.received if api else self.downloads).append(rec)
        return rec

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _store(self, data: bytes, content_type: str, fault: str | None) -> str:
        with self._lock:
            token = f"{next(self._tokens):06d}-{hashlib.sha256(data).hexdigest()[:12]}"
            self._files[token] = (data, content_type, fault)
        return token

    def _take_file(self, token: str) -> tuple[bytes, str, str | None] | None:
        """A stored image; its download fault strikes once, so a retried download succeeds."""
        with self._lock:
            entry = self._files.get(token)
            if entry is not None and entry[2] != "gone_download":
                self._files[token] = (entry[0], entry[1], None)
            return entry

    def _served(self, sha256: str) -> None:
        with self._lock:
            self.served.append(sha256)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of 8 connections, and the
    # kernel retries them a second later: a benchmark would measure that, not the client.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API: tests can see one shared client
    disable_nagle_algorithm = True  # else each answer's last segment waits for a delayed ACK
    timeout = 30

    @property
    def api(self) -> ApiServer:
        return self.server.api  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout): nothing to answer

    def do_GET(self) -> None:
        serve_download(self)

    def do_POST(self) -> None:
        serve_api(self)

    # -- small writers the handlers share ------------------------------------------------------

    def send_bytes(self, status: int, body: bytes, content_type: str,
                   headers: dict[str, str] | None = None, *, cut_at: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if cut_at is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut_at])
        self.wfile.flush()
        self.close_connection = True

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                  *, cut_at: int | None = None) -> None:
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers,
                        cut_at=cut_at)

    def send_error_json(self, status: int, message: str, code: str | None = None,
                        param: str | None = None, headers: dict[str, str] | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self.send_json(status, {"error": {"message": message, "type": kind, "param": param,
                                          "code": code}}, headers)

    def reset(self) -> None:
        """Close with a TCP reset, as a crashed proxy does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def read_body_parts(self) -> tuple[dict[str, Any], list[Part]]:
        """The request's fields and file parts (JSON or multipart, per Content-Type)."""
        length = int(self.headers.get("Content-Length") or 0)
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            boundary = ctype.partition("boundary=")[2].strip('"').encode()
            parts = parse_multipart(self.rfile.read, length, boundary)
            fields = {p.name: p.text() for p in parts if p.filename is None}
            return fields, [p for p in parts if p.filename is not None]
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise Invalid("We could not parse the JSON body of your request.",
                          "invalid_json") from None
        if not isinstance(payload, dict):
            raise Invalid("The body must be a JSON object.", "invalid_json")
        return payload, []


# -- driving a provider against it --------------------------------------------------------------

def image_request(mode: str = "openai", **fields: Any) -> Any:
    """An ImageRequest with imgbuild's defaults, as the engine would hand it to the provider."""
    from imgbuild.providers import ImageRequest

    values: dict[str, Any] = dict(
        target="hero", model=MODELS[mode], prompt="A knight on a hill at dawn", size="1024x1024",
        quality="medium", output_format="png", background="auto", moderation="auto",
        output_compression=None, n=1,
    )
    values.update(fields)
    return ImageRequest(**values)


def input_png(path: Path, size: tuple[int, int] = (1024, 1024), *, alpha: bool = False,
              noise_bytes: int = 0) -> Path:
    """A PNG input for edits; ``alpha`` for masks; ``noise_bytes`` pads it with incompressible
    pixels to about that many bytes (for streaming and memory checks)."""
    import os

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if noise_bytes:
        side = int((noise_bytes / 3) ** 0.5)
        im = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        im.save(path, "PNG", compress_level=0)
        return path
    mode = "RGBA" if alpha else "RGB"
    Image.new(mode, size, (90, 160, 60, 0)[: len(mode)]).save(path)
    return path


def settings_for(server: ApiServer, **overrides: Any) -> Any:
    from imgbuild.providers import ProviderSettings

    values: dict[str, Any] = dict(
        preset=server.mode, model=MODELS[server.mode], api_key_env=KEY_ENV,
        base_url=server.base_url, concurrency=4, timeout_s=5.0, max_retries=2,
    )
    values.update(overrides)
    return ProviderSettings(**values)


def run_provider(settings: Any, requests: list[Any], staging_dir: Path) -> list[Any]:
    """Open a provider as the engine does, run the requests concurrently, close it; each
    outcome is an ImageResult or the exception that request raised."""
    from imgbuild.providers import open_provider

    async def main() -> list[Any]:
        provider = open_provider(settings)
        try:
            return await asyncio.gather(*(provider.generate(r, staging_dir) for r in requests),
                                        return_exceptions=True)
        finally:
            await provider.aclose()

    staging_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(main())


def generate(server: ApiServer, staging_dir: Path, request: Any = None, **overrides: Any) -> Any:
    """One request through a fresh provider: its ImageResult, or the exception, raised."""
    request = request or image_request(server.mode)
    (outcome,) = run_provider(settings_for(server, **overrides), [request], staging_dir)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


# -- pytest fixtures ---------------------------------------------------------------------------

@pytest.fixture
def start_api_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory: ``start_api_server(mode="aimlapi", latency_s=0.1)`` -> a running ApiServer.
    Sets the test key in ``KEY_ENV``; every server is stopped after the test."""
    servers: list[ApiServer] = []

    def start(mode: str = "openai", **options: Any) -> ApiServer:
        server = ApiServer(mode, **options).start()
        monkeypatch.setenv(KEY_ENV, server.key)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api_server(start_api_server: Any) -> ApiServer:
    """The openai dialect."""
    return start_api_server("openai")  # type: ignore[no-any-return]


@pytest.fixture
def aimlapi_server(start_api_server: Any) -> ApiServer:
    return start_api_server("aimlapi")  # type: ignore[no-any-return]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-off of milliseconds instead of seconds (Retry-After is still honoured as sent)."""
    from imgbuild.providers import _retry

    monkeypatch.setattr(_retry, "BACKOFF_BASE_S", 0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description="A strict local gpt-image-2 API server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=("openai", "aimlapi"), default="openai")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per generation")
    parser.add_argument("--key", default=TEST_KEY)
    parser.add_argument("--warm", nargs="*", default=[], metavar="WxH",
                        help="render these PNG sizes before listening (benchmarks time the "
                             "client, not the server's first render)")
    args = parser.parse_args()
    for size in args.warm:
        width, height = (int(v) for v in size.split("x"))
        render_b64(width, height, "png", False)
    server = ApiServer(args.mode, key=args.key, latency_s=args.latency, port=args.port)
    print(f"listening on {server.base_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
