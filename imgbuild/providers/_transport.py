"""Where foreign failures become imgbuild errors: httpx and OS errors, HTTP statuses, server text.

Everything the HTTP layer can raise is translated here and nowhere else, the way httpx's
``map_httpcore_exceptions`` does it: one context manager, ending in ``raise ... from exc``.

    httpx.TimeoutException        -> NetworkError   (timed out; the request may still be billed)
    httpx.ConnectError            -> NetworkError   (never reached the API: not counted)
    httpx.RemoteProtocolError     -> BadResponse    reading a body (truncated), else NetworkError
    httpx.NetworkError            -> NetworkError   (resets, refused connections)
    OSError                       -> ProviderError  (a local file: input gone, disk full)
    httpx.HTTPError (the rest)    -> BadResponse
    400 / 413 / 422 / other 4xx   -> RequestRejected   never retried
    401, 403                      -> AuthenticationError   stops the build
    404                           -> EndpointNotFound      stops the build
    408, 409, 429, 5xx            -> ServerError / RateLimited   retried

Every message built from text the server sent goes through :func:`redact` first: some gateways
echo the key they were given, and the key must never reach an exception, a log or a file.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import (
    AuthenticationError,
    BadResponse,
    EndpointNotFound,
    NetworkError,
    ProviderError,
    RateLimited,
    RequestRejected,
    ServerError,
)

MAX_SERVER_MESSAGE_CHARS = 500
MAX_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class CallContext:
    """What every message about one request needs: the target, the key to hide, where we called."""

    target: str
    key: str
    preset: str
    key_env: str
    base_url: str

    def redact(self, text: str) -> str:
        return redact(text, self.key)


def redact(text: str, key: str) -> str:
    if key and key in text:
        text = text.replace(key, "[redacted]")
    # A gateway may echo a recognisable part of the key ("sk-abc...wxyz"); hide long fragments too.
    if len(key) >= 16:
        for fragment in (key[:12], key[-12:]):
            text = text.replace(fragment, "[redacted]")
    return text


@contextlib.contextmanager
def translate_errors(ctx: CallContext, *, phase: str) -> Iterator[None]:
    """Turn httpx/OS failures into the ProviderError tree. ``phase`` says what was going on
    ("inputs" opening edit inputs, "request" while sending and waiting for headers, "body" while
    reading a response body, "download" fetching an image URL, "save" writing staging files),
    which decides how a cut connection is read."""
    try:
        yield
    except ProviderError:
        raise
    except httpx.TimeoutException as exc:
        what = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        raise NetworkError(
            f"timed out {what} {_where(ctx, phase)} ({type(exc).__name__}); the request may "
            "still have been billed", target=ctx.target,
        ) from exc
    except httpx.ConnectError as exc:
        raise NetworkError(
            f"cannot connect to {_where(ctx, phase)}: {ctx.redact(str(exc)) or type(exc).__name__}",
            target=ctx.target,
        ) from exc
    except httpx.RemoteProtocolError as exc:
        if phase in ("body", "download"):
            raise BadResponse(
                f"truncated response from {_where(ctx, phase)}: {ctx.redact(str(exc))}",
                target=ctx.target,
            ) from exc
        raise NetworkError(
            f"connection to {_where(ctx, phase)} closed: {ctx.redact(str(exc))}", target=ctx.target
        ) from exc
    except OSError as exc:
        # httpx wraps socket errors in its own types, so a bare OSError is a local file: an edit
        # input that vanished, or a staging folder that is full. Retrying would not help.
        raise ProviderError(
            f"cannot {'write the image' if phase == 'save' else 'read an input image'}: {exc}",
            target=ctx.target,
        ) from exc
    except httpx.NetworkError as exc:
        raise NetworkError(
            f"connection to {_where(ctx, phase)} failed: "
            f"{ctx.redact(str(exc)) or type(exc).__name__}", target=ctx.target,
        ) from exc
    except httpx.HTTPError as exc:
        raise BadResponse(
            f"bad response from {_where(ctx, phase)}: {ctx.redact(str(exc))}", target=ctx.target
        ) from exc


def _where(ctx: CallContext, phase: str) -> str:
    return "the image download" if phase == "download" else f"the {ctx.preset} API at {ctx.base_url}"


def status_error(ctx: CallContext, response: httpx.Response,
                 body: bytes | bytearray) -> ProviderError:
    """The error for a non-2xx answer from the API, with the API's own message (redacted)."""
    status = response.status_code
    code, message = _api_message(body)
    message = ctx.redact(message)
    shown = f"{message} ({status}{', ' + code if code else ''})" if message else f"HTTP {status}"
    kw: dict[str, Any] = {"target": ctx.target, "status": status}
    if status in (401, 403):
        advice = f"check the key in the environment variable {ctx.key_env}"
        if status == 403 and ctx.preset == "openai":
            advice = (
                "the OpenAI organisation may need to be verified before it can use GPT image "
                "models (platform.openai.com, Settings, Organization); the key is from "
                f"{ctx.key_env}"
            )
        elif status == 403:
            advice = f"the key in {ctx.key_env} is not allowed to use this model"
        return AuthenticationError(f"the API refused the key: {shown}; {advice}", **kw)
    if status == 404 and code == "model_not_found":
        return RequestRejected(f"the model is not available at {ctx.base_url}: {shown}; check `model` in "
                               "[provider]", **kw)
    if status == 404:
        return EndpointNotFound(
            f"{response.request.method} {response.request.url} was not found: {shown}; "
            f"is the base URL right? It is {ctx.base_url} and should point at the API root, "
            f"usually ending in /v1 (set it with {_base_url_advice(ctx.preset)})", **kw,
        )
    if status == 429:
        return RateLimited(
            f"rate limited: {shown}", retry_after_s=retry_after_s(response.headers), **kw
        )
    if status in (408, 409) or status >= 500:
        return ServerError(f"the API failed: {shown}", retry_after_s=retry_after_s(response.headers), **kw)
    if 300 <= status < 400:
        location = ctx.redact(response.headers.get("location", "?"))
        return EndpointNotFound(
            f"the API answered with a redirect ({status}) to {location}; set the base URL to the "
            f"final address ({_base_url_advice(ctx.preset)})", **kw,
        )
    return RequestRejected(f"rejected by the API: {shown}", **kw)


def _base_url_advice(preset: str) -> str:
    # A manifest cannot move a preset's key elsewhere (SPEC §7), so only `compatible` names it.
    where = "--base-url or IMGBUILD_BASE_URL"
    return where + (" or base_url in [provider]" if preset == "compatible" else "")


def _api_message(body: bytes | bytearray) -> tuple[str, str]:
    """(code, message) from ``{"error": {"message", "type", "code"}}``, or the body's start."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body[:MAX_SERVER_MESSAGE_CHARS].decode("utf-8", "replace").strip()
        return "", " ".join(text.split())
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        message = str(error.get("message") or "")
    elif isinstance(error, str):
        code, message = "", error
    else:
        code, message = "", json.dumps(payload)
    return str(code), message[:MAX_SERVER_MESSAGE_CHARS]


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``Retry-After`` in seconds
    (fractions accepted, as some gateways send them) or as an HTTP date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            if scale != 1.0:
                continue
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if seconds == seconds:  # not NaN
            return max(0.0, seconds)
    return None
