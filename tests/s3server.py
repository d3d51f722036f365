"""A real S3-compatible server on 127.0.0.1: moto in server mode, in a process of its own.

Tests get it from the fixtures at the bottom (import them into a test module); the benchmark
starts it directly. It is a process, not a thread, so that a test can kill it mid-use as a
crashed or unplugged server would die. The test helpers (:meth:`S3Server.write` …) play
"another writer" with boto3, e.g. to tamper with what imgbuild stored.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

# Distinctive values, so that a test can scan everything written or printed for them.
TEST_ACCESS_KEY = "AKIAIMGBUILDTESTKEY01"
TEST_SECRET = "imgbuild-s3-secret-5e6f7a8b9c0d1e2f3a4b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The store's usual environment, as a user or CI would set it for this server."""
        return {"AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_SECRET,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def start(self, timeout_s: float = 60) -> S3Server:
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout_s} s")

    def kill(self) -> None:
        """Die as a crashed server does: SIGKILL, no goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> Any:
        """A boto3 client: "another writer", signing its requests as any S3 client does."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                        aws_access_key_id=TEST_ACCESS_KEY,
                                        aws_secret_access_key=TEST_SECRET)
        return self._client

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def write(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)


@dataclass
class Bucket:
    """A fresh bucket on a running server, with the store's environment set for it."""

    server: S3Server
    name: str
    prefix: str = "team/imgbuild"

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def stored_keys(self) -> list[str]:
        return [k.removeprefix(self.prefix + "/") for k in self.server.keys(self.name, self.prefix)]

    def read(self, key: str) -> bytes:
        return self.server.read(self.name, f"{self.prefix}/{key}")

    def write(self, key: str, data: bytes) -> None:
        self.server.write(self.name, f"{self.prefix}/{key}", data)


_bucket_numbers = itertools.count(1)


def new_bucket(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    name = f"imgbuild-test-{os.getpid()}-{next(_bucket_numbers)}"
    server.create_bucket(name)
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("IMGBUILD_CACHE_KEY", "AWS_ALLOW_HTTP", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    return Bucket(server, name)


# -- pytest fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session (it takes seconds to start); tests use own buckets."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    return new_bucket(s3_server, monkeypatch)


@pytest.fixture
def own_s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Server, Bucket]]:
    """A server of the test's own, which the test may kill."""
    server = S3Server().start()
    try:
        yield server, new_bucket(server, monkeypatch)
    finally:
        server.stop()
