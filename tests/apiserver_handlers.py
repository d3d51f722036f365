"""What the local API server does with one request: the API endpoints and the download host.
(Split from apiserver.py to keep both readable; the server state lives there.)"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from apiserver_rules import Invalid, Part, check_edit_parts, check_fields, render

if TYPE_CHECKING:
    from apiserver import ApiServer, Fault, Received, _Handler

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}
PATHS = ("/v1/images/generations", "/v1/images/edits")
# Where the base64 goes in the JSON answer: spliced in as bytes, so that an 8 MB string is neither
# escaped by json.dumps nor copied more than once per answer.
IMAGE_SLOT = "@@image@@"


_render_lock = threading.Lock()


@dataclass(frozen=True)
class Rendered:
    data: bytes
    b64: bytes
    sha256: str


def render_b64(width: int, height: int, fmt: str, transparent: bool) -> Rendered:
    # One thread renders while the others wait for the cache: eight threads rendering the same
    # image at once would only fight over the GIL.
    with _render_lock:
        return _rendered(width, height, fmt, transparent)


@functools.lru_cache(maxsize=64)
def _rendered(width: int, height: int, fmt: str, transparent: bool) -> Rendered:
    data = render(width, height, fmt, transparent)
    return Rendered(data, base64.b64encode(data), hashlib.sha256(data).hexdigest())


def _distinct(api: ApiServer, png_data: bytes, n: int) -> list[tuple[bytes, bytes, str]]:
    """``n`` different PNGs, each ``png_data`` with a tEXt chunk holding a serial number before
    its IEND: (bytes, base64, sha256) of each."""
    out = []
    for _ in range(n):
        text = b"imgbuild-test\0" + str(next(api._distinct)).encode()
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text
        chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text) & 0xFFFFFFFF)
        data = png_data[:-12] + chunk + png_data[-12:]  # IEND is the last 12 bytes
        out.append((data, base64.b64encode(data), hashlib.sha256(data).hexdigest()))
    return out


def serve_api(h: _Handler) -> None:
    api = h.api
    rec = api._arrive(h, api=True)
    state = {"left": False}

    def leave() -> None:  # called just before the answer goes out, so counts never overlap
        if not state["left"]:
            state["left"] = True
            api._leave()

    files: list[Part] = []
    try:
        try:
            fields, files = h.read_body_parts()
        except Invalid as exc:
            return _reject(h, rec, leave, 400, exc.message, exc.code)
        rec.fields = dict(fields)
        rec.files = [(p.name, p.filename, p.size, p.sha256) for p in files]
        _answer(h, api, rec, fields, files, leave)
    finally:
        leave()
        for part in files:
            part.file.close()


def _reject(h: _Handler, rec: Received, leave: Any, status: int, message: str,
            code: str | None = None, param: str | None = None,
            headers: dict[str, str] | None = None) -> None:
    rec.status = status
    leave()
    h.send_error_json(status, message, code, param, headers)


def _answer(h: _Handler, api: ApiServer, rec: Received, fields: dict[str, Any],
            files: list[Part], leave: Any) -> None:
    if rec.auth == "absent":
        return _reject(h, rec, leave, 401, "You didn't provide an API key.", "missing_api_key")
    if rec.auth == "wrong":
        given = h.headers.get("Authorization", "").removeprefix("Bearer ")
        return _reject(h, rec, leave, 401, f"Incorrect API key provided: {given}.",
                       "invalid_api_key")
    path = urlsplit(h.path).path
    if path not in PATHS:
        return _reject(h, rec, leave, 404, f"Invalid URL (POST {path})", "unknown_url")
    edit = path.endswith("/edits")
    multipart = h.headers.get("Content-Type", "").startswith("multipart/form-data")
    if edit != multipart:
        return _reject(h, rec, leave, 400, "Edits take multipart/form-data, generations JSON.",
                       "invalid_content_type")
    fault = api._pick_fault(str(fields.get("prompt", "")))
    rec.fault = fault.kind if fault else None
    if fault and _request_fault(h, api, rec, fault, leave):
        return
    try:
        parsed = check_fields(api.mode, edit, fields, api.extra_fields, api.transparent_ok)
        if edit:
            check_edit_parts(api.mode, files)
    except Invalid as exc:
        return _reject(h, rec, leave, 400, exc.message, exc.code, exc.param)
    api.stopping.wait(api.latency_s)
    body, encoded = _success(api, fields, parsed, len([f for f in files if f.name != "mask"]),
                             fault.kind if fault else None, fault)
    rec.status = 200
    leave()
    raw = json.dumps(body).encode().replace(f'"{IMAGE_SLOT}"'.encode(), b'"%s"' % encoded)
    if api.escape_slashes:  # legal JSON that some gateways send (PHP's json_encode does)
        raw = raw.replace(b"/", b"\\/")
    h.send_bytes(200, raw, "application/json",
                 cut_at=len(raw) // 2 if fault and fault.kind == "truncate" else None)


def _request_fault(h: _Handler, api: ApiServer, rec: Received, fault: Fault, leave: Any) -> bool:
    """Faults that replace the answer; True when the request was answered (or dropped)."""
    kind = fault.kind
    if kind == "slow":
        api.stopping.wait(fault.delay_s)  # then answer as usual, to a client that has left
        return False
    if kind in ("wrong_size", "wrong_format", "bad_base64", "undecodable", "truncate",
                "url_scheme", "truncate_download", "oversize_download", "endless_download",
                "gone_download", "extra_images", "bomb", "usage"):
        return False
    api.stopping.wait(fault.delay_s)
    if kind == "reset":
        rec.status = 0
        leave()
        h.reset()
        return True
    status, code, message, headers = {
        "429": (429, "rate_limit_exceeded", "Rate limit reached for images per minute.", {}),
        "500": (500, "server_error", "The server had an error processing your request.", {}),
        "503": (503, "server_error", "The engine is currently overloaded.", {}),
        "400": (400, "invalid_value", fault.message, {}),
        "moderation": (400, "moderation_blocked", "Your request was rejected as a result of our "
                       "safety system.", {}),
        "401": (401, "invalid_api_key", f"Incorrect API key provided: {api.key}.", {}),
        "403": (403, "unverified_organization", "Your organization must be verified to use the "
                "model gpt-image-2.", {}),
    }[kind]
    if kind in ("429", "503") and fault.retry_after is not None:
        headers = {"Retry-After": fault.retry_after}
    _reject(h, rec, leave, status, message, code, None, headers)
    return True


def _success(api: ApiServer, fields: dict[str, Any], parsed: dict[str, Any],
             input_images: int, fault: str | None,
             spec: Fault | None = None) -> tuple[dict[str, Any], bytes]:
    """The answer's JSON with IMAGE_SLOT where the base64 goes, and that base64."""
    size = "1024x1024" if parsed["size"] == "auto" else parsed["size"]
    width, height = (int(v) for v in size.split("x"))
    fmt = parsed["output_format"]
    if fault == "wrong_size":
        width, height = (1024, 1536) if (width, height) == (1024, 1024) else (1024, 1024)
    if fault == "wrong_format":
        fmt = "jpeg" if fmt != "jpeg" else "png"
    transparent = parsed["background"] == "transparent"
    n = parsed["n"] + (spec.count if spec and fault == "extra_images" else 0)
    rendered = render_b64(width, height, fmt, transparent)
    image, encoded, sha256 = rendered.data, rendered.b64, rendered.sha256
    if fault == "bomb":
        image = bomb_png()
        encoded, sha256 = base64.b64encode(image), hashlib.sha256(image).hexdigest()
    if fault == "bad_base64":
        encoded = encoded[:64] + b"!*!" + encoded[64:]
    elif fault == "undecodable":
        image = image[: len(image) // 2]
        encoded, sha256 = base64.b64encode(image), hashlib.sha256(image).hexdigest()
    images = _distinct(api, image, n) if api.distinct_images and fmt == "png" and not fault else None
    for i in range(n):
        api._served(images[i][2] if images else sha256)
    body: dict[str, Any] = {"created": 1_700_000_000}
    if api.mode == "aimlapi":
        inline = parsed["response_format"] == "b64_json"
        host = f"localhost:{api.port}"  # another host name than the API's 127.0.0.1
        data = []
        for i in range(n):
            token = api._store(images[i][0] if images else image, CONTENT_TYPES.get(fmt, "image/png"), fault)
            url = f"http://{host}/files/{token}{EXTENSIONS[fmt]}"
            if fault == "url_scheme":
                url = f"file:///tmp/{token}{EXTENSIONS[fmt]}"
            slot = (images[i][1].decode() if images else IMAGE_SLOT) if inline else None
            data.append({"url": None if inline else url, "b64_json": slot})
        usd = round(api.usd_per_image * n, 6)
        body.update(data=data, meta={"usage": {"credits_used": int(usd * 2_000_000),
                                               "usd_spent": usd}})
        if fault == "usage" and spec and spec.usage:
            body["meta"]["usage"].update(spec.usage)
        return body, encoded
    text_tokens = max(1, len(str(fields.get("prompt", ""))) // 4)
    image_tokens = 1_000 * input_images
    output_tokens = n * round(OUTPUT_TOKENS_1024[parsed["quality"]] * width * height / 1024**2)
    body.update(
        data=[{"b64_json": images[i][1].decode() if images else IMAGE_SLOT} for i in range(n)],
        size=f"{width}x{height}",
        quality=parsed["quality"], output_format=fmt, background=parsed["background"],
        usage={"input_tokens": text_tokens + image_tokens, "output_tokens": output_tokens,
               "total_tokens": text_tokens + image_tokens + output_tokens,
               "input_tokens_details": {"text_tokens": text_tokens,
                                        "image_tokens": image_tokens}},
    )
    if fault == "usage" and spec and spec.usage:
        body["usage"].update(spec.usage)
    return body, encoded


@functools.lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A whole, valid PNG of 20000x20000 1-bit pixels: about 50 KB, 400 million pixels decoded."""
    side = 20_000
    row = b"\0" * (1 + side // 8)  # filter byte, then 8 pixels a byte
    pack = zlib.compressobj(1)
    idat = b"".join(pack.compress(row * 1000) for _ in range(side // 1000)) + pack.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def serve_download(h: _Handler) -> None:
    """The "CDN": serves stored images, and refuses any request that carries a key."""
    api = h.api
    rec = api._arrive(h, api=False)
    if rec.auth != "absent":
        rec.status = 403
        return h.send_error_json(403, "An Authorization header was sent to the download host.",
                                 "key_leaked")
    path = urlsplit(h.path).path
    token = path.removeprefix("/files/").rsplit(".", 1)[0]
    entry = api._take_file(token) if path.startswith("/files/") else None
    if entry is None:
        rec.status = 404
        return h.send_error_json(404, f"No such file: {path}", "not_found")
    data, content_type, fault = entry
    if fault == "gone_download":
        rec.status = 404
        return h.send_error_json(404, f"No such file: {path}", "not_found")
    rec.status = 200
    if fault == "truncate_download":
        return h.send_bytes(200, data, content_type, cut_at=len(data) // 2)
    if fault == "oversize_download":
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(65 * 1024 * 1024))
        h.end_headers()
        h.close_connection = True
        return None
    if fault == "endless_download":
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.close_connection = True
        chunk = b"\0" * 65536
        for _ in range(70 * 16):  # 70 MB, past any sane cap; the client hangs up first
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")
        return None
    return h.send_bytes(200, data, content_type)
