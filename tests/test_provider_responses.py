"""What comes back (issue 3, Deliver 2 and 5): images saved unchanged, checked, downloaded
without the key, retried when broken, kept with a warning when merely of other dimensions; and
their cost."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from apiserver import ApiServer, Fault, generate, image_request

from imgbuild.errors import BadResponse, ProviderError

pytestmark = pytest.mark.usefixtures("fast_retries")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dimensions(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_a_b64_image_is_saved_byte_for_byte(api_server: ApiServer, tmp_path: Path) -> None:
    result = generate(api_server, tmp_path, image_request(size="1536x1024"))

    (path,) = result.files
    assert path.parent == tmp_path and path.suffix == ".png"
    assert [sha256(path)] == api_server.served
    assert dimensions(path) == (1536, 1024)


def test_base64_with_escaped_slashes_is_decoded_too(start_api_server: Any,
                                                    tmp_path: Path) -> None:
    server = start_api_server("openai", escape_slashes=True)
    result = generate(server, tmp_path, image_request(n=2))

    assert [sha256(p) for p in result.files] == server.served
    assert result.retries == 0


def test_each_of_n_images_gets_its_own_file_of_the_requested_format(
        api_server: ApiServer, tmp_path: Path) -> None:
    result = generate(api_server, tmp_path,
                      image_request(n=3, output_format="webp", output_compression=90))

    assert len(set(result.files)) == 3
    assert all(p.suffix == ".webp" and p.read_bytes()[8:12] == b"WEBP" for p in result.files)
    assert len(api_server.received) == 1


def test_a_url_image_is_downloaded_from_its_host_without_the_key(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    result = generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    (download,) = aimlapi_server.downloads
    assert download.headers["host"] == f"localhost:{aimlapi_server.port}"  # not the API's host
    assert download.auth == "absent" and download.status == 200
    assert [sha256(result.files[0])] == aimlapi_server.served


def test_an_image_url_that_is_not_http_is_never_fetched_nor_asked_again(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    aimlapi_server.inject(Fault("url_scheme"))
    with pytest.raises(ProviderError, match="not http") as caught:
        generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    assert not caught.value.retryable
    assert aimlapi_server.downloads == [] and len(aimlapi_server.received) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_download_announcing_more_than_the_cap_is_refused_once(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    aimlapi_server.inject(Fault("oversize_download"))
    with pytest.raises(ProviderError, match="cap"):
        generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    assert len(aimlapi_server.received) == len(aimlapi_server.downloads) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_download_that_never_ends_is_cut_at_the_cap(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    aimlapi_server.inject(Fault("endless_download"))
    with pytest.raises(ProviderError, match="cap"):
        generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    assert list(tmp_path.iterdir()) == []


def test_a_download_that_keeps_failing_fails_the_target_without_a_new_generation(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    aimlapi_server.inject(Fault("gone_download"))
    with pytest.raises(ProviderError, match="gave up after 1 download") as caught:
        generate(aimlapi_server, tmp_path, image_request("aimlapi"), max_retries=2)

    assert not caught.value.retryable
    assert len(aimlapi_server.received) == 1  # one generation, paid once, never asked again
    assert caught.value.cost_usd == pytest.approx(0.0537)  # and counted


def test_a_truncated_download_is_fetched_again_without_a_new_generation(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    aimlapi_server.inject(Fault("truncate_download"))
    result = generate(aimlapi_server, tmp_path, image_request("aimlapi"))

    assert len(aimlapi_server.received) == 1  # paid once
    assert [d.path for d in aimlapi_server.downloads][0] == aimlapi_server.downloads[1].path
    assert [sha256(result.files[0])] == aimlapi_server.served


def test_an_answer_cut_short_in_transit_is_requested_again(api_server: ApiServer,
                                                           tmp_path: Path) -> None:
    api_server.inject(Fault("truncate"))
    result = generate(api_server, tmp_path)

    assert len(api_server.received) == 2
    assert (result.requests, result.retries) == (2, 1)
    (path,) = result.files
    assert list(tmp_path.iterdir()) == [path]  # the broken one is not left behind
    assert sha256(path) == api_server.served[-1] and dimensions(path) == (1024, 1024)


def test_a_whole_image_of_another_format_is_kept_and_not_requested_again(api_server: ApiServer,
                                                                         tmp_path: Path) -> None:
    from imgbuild.errors import ProviderError

    api_server.inject(Fault("wrong_format"))
    with pytest.raises(ProviderError, match="hero: asked for png, the API sent .* \\(kept in the cache\\)") as caught:
        generate(api_server, tmp_path)

    assert not caught.value.retryable
    assert len(api_server.received) == 1  # asking again would be paid again
    assert caught.value.cost_usd and caught.value.cost_usd > 0  # and this one was paid
    assert [sha256(p) for p in tmp_path.iterdir()] == api_server.served  # left for the engine to keep


@pytest.mark.parametrize("fault", ["bad_base64", "undecodable", "bomb"])
def test_a_broken_image_in_a_whole_answer_is_final_counted_and_not_kept(
        fault: str, api_server: ApiServer, tmp_path: Path) -> None:
    # The answer came whole: asking again would pay again for what may come back the same.
    api_server.inject(Fault(fault))
    with pytest.raises(ProviderError, match="hero: .*not asked again \\(it was paid for\\)") as caught:
        generate(api_server, tmp_path)

    assert not caught.value.retryable
    assert len(api_server.received) == 1
    assert caught.value.requests == 1 and caught.value.cost_usd == pytest.approx(0.0317, abs=0.001)
    assert list(tmp_path.iterdir()) == []  # worth nothing, and a bomb must not reach the cache


def test_an_answer_cut_short_every_time_fails_after_max_retries_leaving_no_file(
        api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("truncate"), times=3)
    with pytest.raises(BadResponse, match="hero: .*truncated"):
        generate(api_server, tmp_path, max_retries=2)

    assert len(api_server.received) == 3
    assert list(tmp_path.iterdir()) == []


def test_an_image_of_other_dimensions_is_kept_with_a_warning(
        api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("wrong_size"))
    result = generate(api_server, tmp_path)

    assert len(api_server.received) == 1
    assert dimensions(result.files[0]) == (1024, 1536)
    (warning,) = result.warnings
    assert "1024x1024" in warning and "1024x1536" in warning


def test_size_auto_accepts_whatever_dimensions_come_back(
        api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("wrong_size"))
    result = generate(api_server, tmp_path, image_request(size="auto"))

    assert result.warnings == [] and len(result.files) == 1


def test_openai_cost_is_the_usage_tokens_priced(api_server: ApiServer, tmp_path: Path) -> None:
    prompt = "x" * 400  # the server counts 100 text tokens
    result = generate(api_server, tmp_path, image_request(prompt=prompt, quality="high"))

    assert result.usage["output_tokens"] == 4160
    assert result.usage["input_tokens_details"] == {"text_tokens": 100, "image_tokens": 0}
    assert result.cost_usd == pytest.approx((100 * 5 + 4160 * 30) / 1e6)


def test_prices_from_the_manifest_override_the_defaults(
        api_server: ApiServer, tmp_path: Path) -> None:
    prices: dict[str, Any] = {"image_output_per_million": 60.0, "text_input_per_million": 0}
    result = generate(api_server, tmp_path, image_request(quality="low"), prices=prices)

    assert result.cost_usd == pytest.approx(272 * 60 / 1e6)
    # the prompt's text tokens were there, and priced at the manifest's 0, not the default $5
    assert result.usage["input_tokens_details"]["text_tokens"] > 0


def test_aimlapi_cost_is_usd_spent_added_over_its_requests(
        aimlapi_server: ApiServer, tmp_path: Path) -> None:
    result = generate(aimlapi_server, tmp_path, image_request("aimlapi", n=2))

    assert result.cost_usd == pytest.approx(2 * 0.0537)
    assert result.usage["usd_spent"] == pytest.approx(2 * 0.0537)
    assert result.requests == 2
