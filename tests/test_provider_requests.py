"""What goes on the wire (issue 3, Deliver 1): the fields, the parts, the number of requests."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from apiserver import (
    ApiServer,
    generate,
    image_request,
    input_png,
    run_provider,
    settings_for,
)

from imgbuild.errors import RequestRejected
from imgbuild.providers import open_provider

pytestmark = pytest.mark.usefixtures("fast_retries")

EDIT_DEFAULTS = {"size": "1024x1024", "quality": "medium", "output_format": "png",
                 "background": "auto"}
DEFAULTS = {**EDIT_DEFAULTS, "moderation": "auto"}  # the edit endpoint defines no moderation


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_generation_is_one_json_request_with_every_default_and_nothing_else(
        api_server: ApiServer, tmp_path: Path) -> None:
    generate(api_server, tmp_path)

    (received,) = api_server.received
    assert (received.method, received.path) == ("POST", "/v1/images/generations")
    assert received.headers["content-type"] == "application/json"
    assert received.fields == {"model": "gpt-image-2", "prompt": "A knight on a hill at dawn",
                               "n": 1, **DEFAULTS}


def test_output_compression_is_sent_with_jpeg_and_webp_but_never_with_png(
        api_server: ApiServer, tmp_path: Path) -> None:
    requests = [
        image_request(prompt="jpeg one", output_format="jpeg", output_compression=80),
        image_request(prompt="webp one", output_format="webp", output_compression=100),
        image_request(prompt="png one", output_format="png", output_compression=100),
    ]
    outcomes = run_provider(settings_for(api_server), requests, tmp_path)

    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    sent = {r.fields["prompt"]: r.fields.get("output_compression") for r in api_server.received}
    assert sent == {"jpeg one": 80, "webp one": 100, "png one": None}


def test_extra_fields_are_sent_as_they_are(start_api_server: Any, tmp_path: Path) -> None:
    server = start_api_server("openai", extra_fields=("seed",))  # a field a newer API might add
    generate(server, tmp_path, image_request(extra={"user": "build-42", "seed": 7}))

    (received,) = server.received
    assert received.fields["user"] == "build-42" and received.fields["seed"] == 7


def test_an_extra_field_the_api_does_not_know_is_rejected_once_with_its_message(
        api_server: ApiServer, tmp_path: Path) -> None:
    with pytest.raises(RequestRejected, match="Unrecognized request argument supplied: stylize"):
        generate(api_server, tmp_path, image_request(extra={"stylize": 7}))

    assert len(api_server.received) == 1


def test_an_edit_with_one_input_sends_one_image_part_and_text_fields(
        api_server: ApiServer, tmp_path: Path) -> None:
    source = input_png(tmp_path / "in" / "hero.png")
    generate(api_server, tmp_path / "stage", image_request(images=(source,)))

    (received,) = api_server.received
    assert received.path == "/v1/images/edits"
    assert received.headers["content-type"].startswith("multipart/form-data")
    assert received.files == [("image", "hero.png", source.stat().st_size, sha256(source))]
    assert received.fields == {"model": "gpt-image-2", "prompt": "A knight on a hill at dawn",
                               "n": "1", **EDIT_DEFAULTS}


def test_an_edit_with_several_inputs_sends_repeated_image_brackets_in_order_then_the_mask(
        api_server: ApiServer, tmp_path: Path) -> None:
    inputs = [input_png(tmp_path / "in" / f"{i}.png", (1024 + 16 * i, 1024)) for i in range(3)]
    mask = input_png(tmp_path / "in" / "mask.png", alpha=True)
    generate(api_server, tmp_path / "stage", image_request(images=tuple(inputs), mask=mask))

    (received,) = api_server.received
    assert [(name, sha) for name, _, _, sha in received.files] == [
        ("image[]", sha256(inputs[0])), ("image[]", sha256(inputs[1])),
        ("image[]", sha256(inputs[2])), ("mask", sha256(mask)),
    ]
    assert received.status == 200


def test_sixteen_large_inputs_are_streamed_from_disk_not_read_into_memory(
        api_server: ApiServer, tmp_path: Path) -> None:
    first = input_png(tmp_path / "in" / "00.png", noise_bytes=4 * 2**20)
    inputs = [first] + [Path(shutil.copy(first, tmp_path / "in" / f"{i:02}.png"))
                        for i in range(1, 16)]
    total = sum(p.stat().st_size for p in inputs)

    tracemalloc.start()
    try:
        generate(api_server, tmp_path / "stage", image_request(images=tuple(inputs)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    (received,) = api_server.received
    assert sum(size for _, _, size, _ in received.files) == total  # 64 MB went over the wire
    assert peak < total / 3, f"peak {peak / 2**20:.1f} MiB for {total / 2**20:.0f} MiB of inputs"


def test_aimlapi_generation_of_three_images_is_three_requests_of_one(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    result = generate(aimlapi_server, tmp_path, image_request("aimlapi", n=3))

    assert [r.fields["n"] for r in aimlapi_server.received] == [1, 1, 1]
    assert {r.fields["model"] for r in aimlapi_server.received} == {"openai/gpt-image-2"}
    assert len(result.files) == 3 and result.requests == 3


def test_aimlapi_edit_of_two_images_stays_one_request(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    source = input_png(tmp_path / "in" / "hero.png")
    result = generate(aimlapi_server, tmp_path / "stage",
                      image_request("aimlapi", n=2, images=(source,)))

    (received,) = aimlapi_server.received
    assert received.fields["n"] == "2" and len(result.files) == 2


def test_aimlapi_requests_carry_no_response_format(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    (received,) = aimlapi_server.received
    assert "response_format" not in received.fields
    assert len(aimlapi_server.downloads) == 1


def test_one_provider_keeps_one_client_and_reuses_its_connection(
        api_server: ApiServer, tmp_path: Path) -> None:
    async def two_in_a_row() -> None:
        provider = open_provider(settings_for(api_server))
        try:
            await provider.generate(image_request(prompt="first"), tmp_path)
            await provider.generate(image_request(prompt="second"), tmp_path)
        finally:
            await provider.aclose()

    asyncio.run(two_in_a_row())

    first, second = api_server.received
    assert first.client_port == second.client_port  # same TCP connection: one pooled client
