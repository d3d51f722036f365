"""gpt-image-2 over HTTP, for the openai, aimlapi and compatible presets (API.md).

One :class:`OpenAIProvider` per build holds one ``httpx.AsyncClient`` (one connection pool) and one
:class:`AdaptiveLimiter`. A target's request goes through :meth:`OpenAIProvider.generate`:

    generate ── aimlapi generation with n > 1? ── n calls of n=1, concurrently ──┐
             └─ otherwise ── one call ──────────────────────────────────────────┤
    call: up to 1 + max_retries attempts, each  [limiter slot: POST, read body]  then save images
          (b64 decoded / url downloaded without the key), check format, size and truncation.

The key is put on API requests only, one request at a time; the client itself carries no
credentials, so a download URL or a redirect can never receive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import (
    AuthenticationError,
    BadResponse,
    NetworkError,
    ProviderError,
    RateLimited,
    TransientError,
    UsageError,
)
from . import _images, _payload
from ._retry import AdaptiveLimiter, retry_delay_s
from ._transport import MAX_ERROR_BODY_BYTES, CallContext, status_error, translate_errors
from .base import ImageRequest, ImageResult, ProviderSettings

log = logging.getLogger("imgbuild.providers")

CONNECT_TIMEOUT_S = 10.0
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # per image, decoded or downloaded
# One answer (its JSON, inline images included, plus the images it links to) whatever its n: ten
# 3840x2160 PNGs fit; a server cannot make a build hold more than this in memory or on disk.
MAX_ANSWER_BYTES = 256 * 1024 * 1024
MAX_DOWNLOAD_REDIRECTS = 5
_CHUNK = 256 * 1024


@dataclass
class _Tally:
    requests: int = 0
    retries: int = 0


@dataclass
class _Images:
    files: list[Path]
    warnings: list[str] = field(default_factory=list)


class _UnreadAnswer(ProviderError):
    """A 2xx answer over MAX_ANSWER_BYTES: paid for, never read, not asked again."""


class OpenAIProvider:
    """The HTTP provider. ``settings.preset`` picks the dialect: ``aimlapi`` splits generations
    with n > 1 and reports USD per request; ``openai`` and ``compatible`` report token usage."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        key_env = settings.api_key_env or ""
        self._key = os.environ.get(key_env, "").strip() if key_env else ""
        if key_env and not self._key:
            raise AuthenticationError(f"no API key: set the environment variable {key_env}")
        if self._key and not (self._key.isascii() and self._key.isprintable()):
            # httpx would fail deep inside with an encoding error; say what is wrong instead.
            raise AuthenticationError(
                f"the API key in {key_env} has characters that cannot go in an HTTP header"
            )
        base_url = (settings.base_url or "").rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc:
            raise UsageError(
                f"provider {settings.preset}: base URL {base_url or '(none)'} is not an http(s) "
                "URL; set base_url in [provider], IMGBUILD_BASE_URL or --base-url"
            )
        self._base_url = base_url
        self._client: httpx.AsyncClient | None = None
        self._limiter = AdaptiveLimiter(settings.concurrency)

    # -- lifecycle ---------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout_s = self.settings.timeout_s
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
                # Our limiter bounds API requests; downloads ride on top, so no pool cap here
                # (a pool wait would only add a second, invisible queue).
                limits=httpx.Limits(max_connections=None,
                                    max_keepalive_connections=2 * self._limiter.maximum + 4),
                follow_redirects=False,
                max_redirects=MAX_DOWNLOAD_REDIRECTS,  # downloads follow redirects; API requests never do
                headers={"User-Agent": "imgbuild"},
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- one target --------------------------------------------------------------------------

    async def generate(self, request: ImageRequest, folder: Path) -> ImageResult:
        ctx = CallContext(
            target=request.target, key=self._key, preset=self.settings.preset,
            key_env=self.settings.api_key_env or "the API key variable", base_url=self._base_url,
        )
        tally, spend = _Tally(), _payload.Spend()
        split = self.settings.preset == "aimlapi" and not request.is_edit and request.n > 1
        calls = [self._call(ctx, request, 1 if split else request.n, folder, tally, spend)
                 for _ in range(request.n if split else 1)]
        # gather, not a TaskGroup: a sibling's failure must not cancel requests already paid for
        # mid-flight; they finish, and what they brought is kept.
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # The images that did arrive stay in the staging folder: they were paid for, and the
            # engine keeps them in the cache even though the target failed.
            fatal = [f for f in failures if isinstance(f, ProviderError) and f.fatal]
            error = (fatal or failures)[0]
            if isinstance(error, ProviderError):
                # A failed target was still paid for in requests: the summary counts them too.
                error.requests, error.retries = tally.requests, tally.retries
                error.cost_usd = spend.result_cost()
            raise error
        images = [o for o in outcomes if isinstance(o, _Images)]
        return ImageResult(
            files=[f for i in images for f in i.files],
            cost_usd=spend.result_cost(),
            usage=spend.usage,
            requests=tally.requests,
            retries=tally.retries,
            warnings=[w for i in images for w in i.warnings],
        )

    async def _call(self, ctx: CallContext, request: ImageRequest, n: int, folder: Path,
                    tally: _Tally, spend: _payload.Spend) -> _Images:
        """One HTTP request's worth of images, retrying what is plainly transient."""
        max_retries = max(0, self.settings.max_retries)
        for attempt in range(max_retries + 1):
            error: TransientError | None = None
            epoch = await self._limiter.acquire()
            try:  # the limiter's slot covers the API request only, not saving or downloads
                # httpx's read timeout is per read: a server trickling bytes would never trip it.
                async with asyncio.timeout(self.settings.timeout_s):
                    payload, answer_bytes = await self._post(ctx, request, n, tally)
            except TimeoutError as exc:
                error = NetworkError(f"timed out: the {ctx.preset} API took over {self.settings.timeout_s:g} s to answer",
                                     target=ctx.target)
                error.__cause__ = exc
            except _UnreadAnswer:
                spend.add({}, self.settings.prices, request=request, images=n)  # at the estimate
                raise
            except RateLimited as exc:
                self._limiter.rate_limited(epoch)
                error = exc
            except TransientError as exc:
                error = exc
            else:
                self._limiter.succeeded()
            finally:
                self._limiter.release()
            if error is None:
                # Paid for the moment a 2xx body parses, whatever becomes of its images.
                spend.add(payload, self.settings.prices, request=request, images=n)
                try:
                    return await self._save(ctx, request, n, payload, folder,
                                            MAX_ANSWER_BYTES - answer_bytes)
                except TransientError as exc:
                    error = exc
            if attempt == max_retries:
                raise error
            delay = retry_delay_s(error, attempt + 1)
            log.info("%s; retry %d of %d in %.1f s", error, attempt + 1, max_retries, delay)
            tally.retries += 1
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, ctx: CallContext, request: ImageRequest, n: int,
                    tally: _Tally) -> tuple[dict[str, Any], int]:
        """Send one API request and return its JSON body and its size in bytes, or raise the error
        it amounts to."""
        client = self._http()
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        body = _payload.fields(request, n=n)
        with contextlib.ExitStack() as stack:
            if request.is_edit:
                with translate_errors(ctx, phase="inputs"):
                    files = _payload.open_edit_files(request, stack)
                http_request = client.build_request(
                    "POST", f"{self._base_url}/images/edits", headers=headers,
                    data={k: _payload.form_value(v) for k, v in body.items()}, files=files,
                )
            else:
                http_request = client.build_request(
                    "POST", f"{self._base_url}/images/generations", headers=headers, json=body,
                )
            try:
                with translate_errors(ctx, phase="request"):
                    response = await client.send(http_request, stream=True)
            except NetworkError as exc:
                # A connection that never opened never reached the API (and cannot be billed).
                if not isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout)):
                    tally.requests += 1
                raise
            tally.requests += 1
            try:
                ok = response.is_success
                cap = MAX_ERROR_BODY_BYTES if not ok else MAX_ANSWER_BYTES
                with translate_errors(ctx, phase="body"):
                    raw = await _read_capped(response, cap, ctx, truncate=not ok)
            finally:
                await response.aclose()
        if not ok:
            raise status_error(ctx, response, raw)
        try:
            payload = _payload.parse_response(raw)
        except _payload.AnswerTooLarge as exc:
            raise _UnreadAnswer(f"{exc}; not read, and not asked again (it was paid for)",
                                target=ctx.target) from exc
        except ValueError as exc:
            raise BadResponse(f"the API sent a body that is not JSON ({len(raw)} bytes)",
                              target=ctx.target, status=response.status_code) from exc
        if not isinstance(payload, dict):
            raise BadResponse("the API sent JSON that is not an object", target=ctx.target)
        return payload, len(raw)

    async def _save(self, ctx: CallContext, request: ImageRequest, n: int,
                    payload: dict[str, Any], folder: Path, bytes_left: int) -> _Images:
        """Save the first n images of an answer; ``bytes_left`` of MAX_ANSWER_BYTES bound what
        its download URLs may bring in all."""
        data = payload.get("data")
        if not isinstance(data, list):
            raise BadResponse("the API sent no image list", target=ctx.target)
        images = _Images(files=[])
        if len(data) > n:
            # Only what was asked is fetched and kept; what the server added is not looked at.
            images.warnings.append(f"asked for {n} image(s), the API sent {len(data)}; kept the first "
                                   f"{n} and did not fetch or store the rest")
        # Images that arrive whole stay in the staging folder even when a sibling fails: they were
        # paid for, and the engine keeps whatever is left there in the cache.
        with translate_errors(ctx, phase="save"):
            for item in data[:n]:
                via_url = _is_url(item)
                path = await self._save_one(ctx, request, item, folder, max(0, bytes_left))
                bytes_left -= path.stat().st_size if via_url else 0
                try:
                    warning = _images.check_image(path, output_format=request.output_format,
                                                  size=request.size, target=ctx.target)
                except (BadResponse, _images.BrokenImage):
                    _remove([path])  # truncated, undecodable or a bomb: worth nothing
                    raise
                images.files.append(path)
                if warning:
                    images.warnings.append(warning)
        if len(data) < n:
            # Asking again would be paid again and may come back the same: keep these, fail.
            raise ProviderError(f"asked for {n} image(s), the API sent {len(data)} (kept in the cache)",
                                target=ctx.target)
        return images

    async def _save_one(self, ctx: CallContext, request: ImageRequest, item: Any,
                        folder: Path, bytes_left: int) -> Path:
        path = _images.new_staging_file(folder, ctx.target, request.output_format)
        try:
            # pop: the base64 text (10+ MB) is dropped as soon as it is decoded
            encoded = item.pop("b64_json", None) if isinstance(item, dict) else None
            url = item.get("url") if isinstance(item, dict) else None
            if isinstance(encoded, (str, memoryview)) and encoded:
                if len(encoded) > MAX_IMAGE_BYTES * 4 // 3 + 4:
                    raise ProviderError(f"the API sent an image of over {MAX_IMAGE_BYTES:,} bytes; not "
                                        "asked again (it was paid for)", target=ctx.target)
                _images.write_b64(path, encoded, ctx.target)
            elif isinstance(url, str) and url:
                await self._download(ctx, url, path, min(MAX_IMAGE_BYTES, bytes_left))
            else:
                raise BadResponse("the API sent an image with neither b64_json nor url",
                                  target=ctx.target)
        except BaseException:
            _remove([path])
            raise
        return path

    async def _download(self, ctx: CallContext, url: str, path: Path, cap: int) -> None:
        """Fetch an image URL into ``path``: http(s) only, no key, at most ``cap`` bytes.
        A failed download is retried on its own first: the image behind it was paid for."""
        if urlsplit(url).scheme not in ("http", "https"):
            # Not retried: a gateway that sends such URLs sends them again, and each try is paid.
            raise ProviderError(f"the API sent an image URL that is not http(s): "
                                f"{ctx.redact(url)[:200]}", target=ctx.target)
        max_retries = max(0, self.settings.max_retries)
        for attempt in range(max_retries + 1):
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    await self._download_once(ctx, url, path, cap)
                return
            except TimeoutError as exc:
                error: TransientError = NetworkError(
                    f"timed out: downloading the image took over {self.settings.timeout_s:g} s", target=ctx.target)
                error.__cause__ = exc
            except TransientError as exc:
                error = exc
            if attempt == max_retries or (error.status is not None and error.status < 500):
                # Not transient for the target: generating again would be paid again and fetched
                # from the same host. The generation itself was paid for and is counted.
                raise ProviderError(f"{error.message}; gave up after {attempt + 1} download(s)",
                                    target=ctx.target, status=error.status) from error
            delay = retry_delay_s(error, attempt + 1)
            log.info("%s; download retry %d of %d in %.1f s", error, attempt + 1, max_retries, delay)
            await asyncio.sleep(delay)

    async def _download_once(self, ctx: CallContext, url: str, path: Path, cap: int) -> None:
        client = self._http()
        with translate_errors(ctx, phase="download"):
            async with client.stream("GET", url, follow_redirects=True) as response:
                if not response.is_success:
                    raise BadResponse(
                        f"downloading the image failed: HTTP {response.status_code}",
                        target=ctx.target, status=response.status_code)
                declared = response.headers.get("content-length", "")
                # Over the cap is not retried either: the same image would be as large again.
                if declared.isdigit() and int(declared) > cap:
                    raise ProviderError(f"the image download is {int(declared):,} bytes, over "
                                        f"the {cap:,} byte cap", target=ctx.target)
                written = 0
                with open(path, "wb") as f:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        written += len(chunk)
                        if written > cap:
                            raise ProviderError(f"the image download passed the "
                                                f"{cap:,} byte cap", target=ctx.target)
                        f.write(chunk)


async def _read_capped(response: httpx.Response, cap: int, ctx: CallContext, *,
                       truncate: bool) -> bytearray:
    """The body, up to ``cap`` bytes: an error body is cut there, an image body is refused."""
    body = bytearray()  # grows in place: no second copy of a 10 MB body, as a join would make
    declared = response.headers.get("content-length", "")
    if not truncate and declared.isdigit() and int(declared) > cap:
        raise _UnreadAnswer(f"the API answer is {int(declared):,} bytes, over the {cap:,} byte cap; "
                            "not read, and not asked again (it was paid for)", target=ctx.target)
    async for chunk in response.aiter_bytes(_CHUNK):
        body += chunk
        if len(body) > cap:
            if truncate:
                break
            raise _UnreadAnswer(f"the API answer passed the {cap:,} byte cap; not asked again (it "
                                "was paid for)", target=ctx.target)
    return body


def _is_url(item: Any) -> bool:
    return isinstance(item, dict) and not item.get("b64_json") and isinstance(item.get("url"), str)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
