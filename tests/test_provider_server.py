"""The test server is as strict as API.md (Deliver 7): otherwise the provider tests prove nothing.
These talk to it with plain httpx, not through imgbuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import TEST_KEY, ApiServer, input_png

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
GOOD = {"model": "gpt-image-2", "prompt": "a cat", "size": "1024x1024", "quality": "low",
        "output_format": "png", "background": "auto", "moderation": "auto", "n": 1}


def post(server: ApiServer, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.base_url}/images/generations", json=body,
                      headers=kw.pop("headers", AUTH), timeout=10, **kw)


def edit(server: ApiServer, files: list[tuple[str, Path]]) -> httpx.Response:
    fields = {k: str(v) for k, v in GOOD.items() if k != "moderation"}  # a generation field
    parts = [(name, (p.name, p.read_bytes(), "image/png")) for name, p in files]
    return httpx.post(f"{server.base_url}/images/edits", data=fields, files=parts, headers=AUTH,
                      timeout=10)


@pytest.mark.parametrize("change,message", [
    ({"response_format": "b64_json"}, "response_format"),
    ({"seed": 7}, "Unrecognized request argument supplied: seed"),
    ({"output_compression": 80}, "only supported for jpeg and webp"),
    ({"size": "1000x1000"}, "Invalid size"),
    ({"quality": "ultra"}, "Invalid value for 'quality'"),
    ({"output_format": "jpeg", "background": "transparent"}, "requires png or webp"),
    ({"n": 11}, "between 1 and 10"),
    ({"model": "dall-e-3"}, "Invalid model"),
])
def test_openai_mode_rejects_what_api_md_says_it_rejects(
        api_server: ApiServer, change: dict[str, Any], message: str) -> None:
    response = post(api_server, {**GOOD, **change})
    assert response.status_code == 400 and message in response.json()["error"]["message"]


@pytest.mark.parametrize("change,message", [
    ({"size": "2048x2048"}, "Supported sizes are"),
    ({"n": 2}, "n must be 1"),
])
def test_aimlapi_mode_takes_three_sizes_and_one_image_per_generation(
        aimlapi_server: ApiServer, change: dict[str, Any], message: str) -> None:
    body = {**GOOD, "model": "openai/gpt-image-2", **change}
    response = post(aimlapi_server, body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_a_good_request_gets_a_real_image_and_usage(api_server: ApiServer) -> None:
    response = post(api_server, {**GOOD, "size": "1536x1024"})
    assert response.status_code == 200
    body = response.json()
    assert body["size"] == "1536x1024" and body["usage"]["output_tokens"] == 408
    assert len(api_server.served) == 1


def test_no_key_is_a_401(api_server: ApiServer) -> None:
    assert post(api_server, GOOD, headers={}).status_code == 401


@pytest.mark.parametrize("case,message", [
    ("mask_without_alpha", "alpha channel"),
    ("mask_of_other_size", "must match"),
    ("input_not_an_image", "must be png, jpeg or webp"),
    ("image_and_image_brackets", "repeated 'image[]'"),
])
def test_edits_check_their_parts(api_server: ApiServer, tmp_path: Path, case: str,
                                 message: str) -> None:
    image = input_png(tmp_path / "a.png")
    files = {
        "mask_without_alpha": [("image", image), ("mask", input_png(tmp_path / "m.png"))],
        "mask_of_other_size": [("image", image),
                               ("mask", input_png(tmp_path / "small.png", (512, 512), alpha=True))],
        "input_not_an_image": [("image", tmp_path / "a.txt")],
        "image_and_image_brackets": [("image", image), ("image[]", image)],
    }[case]
    (tmp_path / "a.txt").write_text("not an image")
    response = edit(api_server, files)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_the_download_host_refuses_a_request_that_carries_a_key(
        aimlapi_server: ApiServer) -> None:
    body = {**GOOD, "model": "openai/gpt-image-2"}
    url = post(aimlapi_server, body).json()["data"][0]["url"]

    assert httpx.get(url, headers=AUTH).status_code == 403
    assert httpx.get(url).status_code == 200
    assert [d.auth for d in aimlapi_server.downloads] == ["ok", "absent"]
