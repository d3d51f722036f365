"""The boundary to obstore: the URL, checked; the client built for it; its errors translated.

The URL names a place and nothing else. Credentials come only from each store's usual
environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), which obstore reads itself; a URL that
carries any (``https://user:pass@host``, a ``?sig=…`` query) is refused, because the URL comes
from ``images.toml`` and that file is committed.

Every foreign error (obstore's, the OS's, a timeout) becomes a :class:`Failure` in
:func:`describe` and nowhere else. obstore's messages are long and multi-line (``Error performing
GET <url> in 3ms, after 2 retries … - Server returned non-2xx status code: 403 Forbidden:
<body>`` and a debug dump); we keep the part after the last `` - `` that says what happened,
without the body.
"""

from __future__ import annotations

import os
import re
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
_STATUS = re.compile(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]*[A-Za-z]))?")
_OFFLINE_HINTS = ("error sending request", "connection refused", "connect", "timed out",
                  "timeout", "dns error", "connection reset", "broken pipe", "unexpected eof")


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
        from ._trust import redact

        first = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, env)
        raise RemoteConfigError(f"remote cache {location.url}: cannot be opened: {first}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Failure:
    """One failed remote operation: what happened, and whether the store is out of reach
    (then nothing more is tried this run) or only refused this one kind of operation."""

    reason: str
    unreachable: bool


def describe(exc: BaseException, timeout_s: float) -> Failure:
    """Translate a foreign error into a :class:`Failure` (not yet redacted)."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    if isinstance(exc, TimeoutError):
        return Failure(f"no answer within {timeout_s:g} s", unreachable=True)
    if isinstance(exc, PermissionDeniedError):
        return Failure("refused: permission denied (HTTP 403)", unreachable=False)
    if isinstance(exc, UnauthenticatedError):
        return Failure("refused: not authenticated (HTTP 401); check the store's credentials",
                       unreachable=False)
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    status = _STATUS.search(first)
    if status:
        code, phrase = status.group(1), status.group(2) or ""
        return Failure(f"HTTP {code} {phrase}".rstrip(), unreachable=False)
    detail = first.rsplit(" - ", 1)[-1].strip()
    if isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    low = first.lower()
    unreachable = any(hint in low for hint in _OFFLINE_HINTS)
    if unreachable and "error sending request" in low:
        detail = "unreachable (no connection, or no answer in time)"
    return Failure(_clip(detail), unreachable)


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
