"""Where the remote cache is: the URL, checked, and the obstore client built for it.

The URL names a place and nothing else. Credentials come only from each store's usual
environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), which obstore reads itself; a URL that
carries any (``https://user:pass@host``, a ``?sig=…`` query) is refused, because the URL comes
from ``images.toml`` and that file is committed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from ..errors import UsageError

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

RemoteMode = Literal["readwrite", "read", "off"]
REMOTE_MODES: tuple[RemoteMode, ...] = ("readwrite", "read", "off")

# The schemes we document and test; obstore knows a few more spellings of the same stores.
SCHEMES = {"s3": "S3", "s3a": "S3", "gs": "Google Cloud Storage", "az": "Azure",
           "azure": "Azure", "abfs": "Azure", "abfss": "Azure", "file": "a folder",
           "http": "an HTTP cache", "https": "an HTTP cache"}
_S3_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")


class RemoteConfigError(UsageError):
    """The remote cache's URL or mode is unusable: a setting to fix, so exit 2."""


@dataclass(frozen=True)
class RemoteOptions:
    """Timeouts and limits of the remote cache, kept short and apart from the image API's:
    a cache that does not answer quickly is worth less than the time spent waiting for it."""

    connect_timeout_s: float = 2.0
    request_timeout_s: float = 10.0     # a HEAD, or a run entry of a few hundred bytes
    transfer_timeout_s: float = 30.0    # one object, up or down
    max_retries: int = 2                # obstore retries 5xx and dropped connections itself
    concurrency: int = 16               # operations in flight at most, per store
    durable: bool = True                # fsync a downloaded object before renaming it into place


@dataclass(frozen=True)
class Location:
    url: str            # as configured, without a trailing slash
    scheme: str

    @property
    def kind(self) -> str:
        return SCHEMES[self.scheme]


def parse_location(url: str) -> Location:
    """Check a remote cache URL; raise :class:`RemoteConfigError` saying what to fix."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RemoteConfigError(f"remote cache URL is not a URL ({exc}); "
                                "write e.g. s3://bucket/prefix") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in ("s3", "gs", "az", "file", "http", "https"))
        raise RemoteConfigError(f"remote cache URL {_shown(url)!r} has an unknown scheme; "
                                f"use one of {known}")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise RemoteConfigError(
            "remote cache URL must not carry credentials or parameters; give the store's "
            "credentials in its usual environment variables (AWS_*, GOOGLE_*, AZURE_*)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise RemoteConfigError(f"remote cache URL {url!r}: write a folder as file:///abs/path")
    elif not parts.netloc:
        raise RemoteConfigError(f"remote cache URL {url!r} names no bucket or host")
    return Location(url.rstrip("/"), scheme)


def _shown(url: str) -> str:
    """The URL without anything after '?' or before '@', for a message about a bad URL."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


def build_store(location: Location, options: RemoteOptions,
                env: Mapping[str, str] | None = None) -> ObjectStore:
    """The obstore client for ``location``: no connection is made until the first operation."""
    # Imported here: the no-op build path never pays for it when no remote is used.
    from obstore.exceptions import BaseError
    from obstore.store import HTTPStore, LocalStore, from_url

    env = os.environ if env is None else env
    client: ClientConfig = {
        "connect_timeout": timedelta(seconds=options.connect_timeout_s),
        "timeout": timedelta(seconds=options.transfer_timeout_s),
    }
    retry: RetryConfig = {
        "max_retries": options.max_retries,
        "retry_timeout": timedelta(seconds=options.transfer_timeout_s),
        "backoff": {"init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=1), "base": 2},
    }
    try:
        if location.scheme == "file":
            return LocalStore(unquote(urlsplit(location.url).path), mkdir=True)
        if location.scheme in ("http", "https"):
            client["allow_http"] = location.scheme == "http"
            return HTTPStore(location.url, client_options=client, retry_config=retry)
        if location.scheme in ("s3", "s3a"):
            # An endpoint the user chose to reach over plain HTTP (MinIO, moto, a LAN box).
            endpoint = next((env[v] for v in _S3_ENDPOINT_VARS if env.get(v)), "")
            if endpoint.startswith("http://") or _truthy(env.get("AWS_ALLOW_HTTP")):
                client["allow_http"] = True
        return from_url(location.url, client_options=client, retry_config=retry)
    except (BaseError, ValueError, TypeError) as exc:  # obstore's answers to bad config
        from ._failures import redact

        first = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, env)
        raise RemoteConfigError(f"remote cache {location.url}: cannot be opened: {first}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
