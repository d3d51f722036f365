"""A server's answer is bounded (issue 9, Deliver 5): one size cap whatever n, nothing past the
requested count fetched or stored, a broken or bomb image a final failure with its cost counted,
numbers in `usage` checked before use; and usage priced by token kind (issue 14)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from apiserver import ApiServer, Fault, generate, image_request
from conftest import Project

from imgbuild.errors import ProviderError
from imgbuild.providers import openai

pytestmark = pytest.mark.usefixtures("fast_retries")


def env(server: ApiServer) -> dict[str, str]:
    key_var = "OPENAI_API_KEY" if server.mode == "openai" else "AIMLAPI_API_KEY"
    return {key_var: server.key, "IMGBUILD_PROVIDER": server.mode, "IMGBUILD_BASE_URL": server.base_url}


def one_target(project: Project, preset: str, **fields: Any) -> None:
    lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items())
    project.manifest(f'[provider]\nname = "{preset}"\nmax_retries = 2\n[images.hero]\nprompt = "a knight"\n{lines}')


def cache_objects(project: Project) -> list[Path]:
    return [p for p in (project.cache / "objects").rglob("*") if p.is_file()]


def test_the_answer_cap_does_not_grow_with_n(api_server: ApiServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A 1024x1024 PNG of the test server is 1.5 MB: one fits under 8 MB, ten do not.
    monkeypatch.setattr(openai, "MAX_ANSWER_BYTES", 8 * 2**20)
    generate(api_server, tmp_path / "one", image_request(n=1))
    with pytest.raises(ProviderError, match="over the 8,388,608 byte cap; not read, and not asked again") as caught:
        generate(api_server, tmp_path / "ten", image_request(n=10))

    assert len(api_server.received) == 2  # the big answer was bought once, not again
    assert caught.value.cost_usd == pytest.approx(10 * 0.0317, abs=0.001)  # and counted
    assert list((tmp_path / "ten").iterdir()) == []


def test_the_json_of_an_answer_besides_its_images_is_capped_before_it_is_parsed(
        api_server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild.providers import _payload

    # A server padding its answer with 150 KB of `[0,0,…]`; the cap, lowered for the test, is 64 KB
    # (8 MB for real: json.loads of 256 MB of it would build gigabytes of objects).
    monkeypatch.setattr(_payload, "MAX_JSON_BYTES", 64 * 1024)
    api_server.inject(Fault("usage", usage={"padding": [0] * 50_000}))
    with pytest.raises(ProviderError, match="JSON besides its images is .* over the 65,536 byte cap") as caught:
        generate(api_server, tmp_path)

    assert len(api_server.received) == 1 and not caught.value.retryable
    assert caught.value.cost_usd == pytest.approx(0.0317, abs=0.001)
    generate(api_server, tmp_path)  # an ordinary answer, 2 MB of base64 in it, is well under


def test_images_past_n_are_neither_downloaded_nor_stored(start_api_server: Any, project: Project) -> None:
    server = start_api_server("aimlapi")
    server.inject(Fault("extra_images", count=5))
    one_target(project, "aimlapi")

    result = project.build(env=env(server))

    assert result.code == 0, result.err
    assert len(server.received) == 1 and len(server.downloads) == 1
    (warning,) = [e["message"] for e in result.events if e["event"] == "warning"]
    assert warning == ("hero: asked for 1 image(s), the API sent 6; kept the first 1 and did not fetch "
                       "or store the rest")
    assert len(cache_objects(project)) == 1


def test_a_decompression_bomb_is_bought_once_and_fails_its_target(start_api_server: Any,
                                                                  project: Project) -> None:
    server = start_api_server("openai")
    server.inject_for("knight", Fault("bomb"))
    one_target(project, "openai")

    result = project.run("build", env=env(server))

    assert result.code == 1
    (line,) = [x for x in result.err.splitlines() if "hero" in x]
    assert "20000x20000" in line or "pixel limit" in line
    assert "not asked again (it was paid for)" in line
    assert len(server.received) == 1
    assert "1 request(s), $0.03" in result.out + result.err  # its cost is counted
    assert cache_objects(project) == [] and not (project.root / "build").exists()


@pytest.mark.parametrize("count", [float("inf"), float("nan"), -5, "1056", 1e30])
def test_a_token_count_that_is_not_one_is_a_warning_and_the_paid_image_is_kept(
        count: Any, start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    server.inject(Fault("usage", usage={"output_tokens": count}))
    one_target(project, "openai")

    result = project.build(env=env(server))

    assert result.code == 0, result.err
    assert result.summary["built"] == 1 and len(server.received) == 1
    (warning,) = [e["message"] for e in result.events if e["event"] == "warning"]
    assert warning.startswith("hero: the API reported output_tokens = ") and "is not a token count" in warning
    cost = result.summary["cost_usd"]
    assert math.isfinite(cost) and cost == pytest.approx(result.summary["estimate_usd"])
    assert (project.root / "build/images/hero.png").exists()


def test_output_tokens_are_priced_by_kind(api_server: ApiServer, tmp_path: Path) -> None:
    api_server.inject(Fault("usage", usage={
        "output_tokens": 1256, "output_tokens_details": {"image_tokens": 1056, "text_tokens": 200}}))
    prompt = "x" * 400  # the server counts 100 text input tokens

    result = generate(api_server, tmp_path, image_request(prompt=prompt))

    assert result.cost_usd == pytest.approx((100 * 5 + 1056 * 30 + 200 * 10) / 1e6)


def test_the_text_output_price_comes_from_the_manifests_prices(start_api_server: Any, project: Project) -> None:
    server = start_api_server("openai")
    server.inject(Fault("usage", usage={
        "input_tokens": 0, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        "output_tokens": 1000, "output_tokens_details": {"image_tokens": 0, "text_tokens": 1000}}))
    project.manifest('[provider]\nname = "openai"\n[provider.prices]\ntext_output_per_million = 40\n'
                     '[images.hero]\nprompt = "a knight"\n')

    result = project.build(env=env(server))

    assert result.code == 0, result.err
    assert result.summary["cost_usd"] == pytest.approx(1000 * 40 / 1e6)
