"""What each preset accepts and what it costs (issue 3, Deliver 3 and 5), checked against the
test server's own reading of API.md so that the manifest check and the API cannot drift apart."""

from __future__ import annotations

import pytest
from apiserver_rules import Invalid, check_size

from imgbuild import pricing
from imgbuild.providers import PRESETS
from imgbuild.providers.rules import AIMLAPI_SIZES, check_aimlapi_size, check_openai_size

EDGES = [256, 512, 640, 720, 1008, 1024, 1152, 1536, 2048, 2160, 2560, 3072, 3840, 3856, 1000]


def server_accepts(mode: str, size: str) -> bool:
    try:
        check_size(mode, size)
    except Invalid:
        return False
    return True


@pytest.mark.parametrize("mode,check", [("openai", check_openai_size),
                                        ("aimlapi", check_aimlapi_size)])
def test_the_size_rules_accept_exactly_what_the_api_accepts(mode: str, check: object) -> None:
    sizes = ["auto", "1024", "1024x", "axb"] + [f"{w}x{h}" for w in EDGES for h in EDGES]
    disagree = [s for s in sizes if (check(s) is None) != server_accepts(mode, s)]  # type: ignore[operator]
    assert disagree == []


@pytest.mark.parametrize("size,reason", [
    ("1000x1000", "not a multiple of 16"),
    ("4096x1024", "edge over 3840"),
    ("3072x768", "wider than 3:1"),
    ("512x512", "262,144 pixels"),
])
def test_an_openai_size_is_refused_with_its_reason(size: str, reason: str) -> None:
    assert reason in (check_openai_size(size) or "")


def test_aimlapi_takes_only_its_three_sizes_and_no_auto_quality() -> None:
    caps = PRESETS["aimlapi"].capabilities
    assert [s for s in ("1024x1024", "1024x1536", "1536x1024", "2048x2048", "auto")
            if caps.check_size(s) is None] == list(AIMLAPI_SIZES)
    assert "auto" not in caps.qualities and "auto" in PRESETS["openai"].capabilities.qualities


def test_every_http_preset_declares_formats_transparency_and_n() -> None:
    for name in ("openai", "aimlapi", "compatible"):
        caps = PRESETS[name].capabilities
        assert caps.formats == ("png", "jpeg", "webp")
        assert caps.transparent_formats == ("png", "webp")
        assert (caps.max_n, caps.max_images) == (10, 16)


def test_the_estimate_uses_the_published_output_tokens_for_1024() -> None:
    usd = pricing.estimate_usd(size="1024x1024", quality="medium", n=1, prompt_chars=0,
                               input_images=0, prices={})
    assert usd == pytest.approx(1056 * 30 / 1e6)


def test_the_estimate_grows_with_area_n_prompt_and_inputs() -> None:
    def est(**kw: object) -> float:
        args: dict[str, object] = dict(size="1024x1024", quality="high", n=1, prompt_chars=0,
                                       input_images=0, prices={})
        args.update(kw)
        return pricing.estimate_usd(**args)  # type: ignore[arg-type]

    assert est(size="2048x2048") == pytest.approx(4 * est())
    assert est(n=3) == pytest.approx(3 * est())
    assert est(prompt_chars=4000) == pytest.approx(est() + 1000 * 5 / 1e6)
    assert est(input_images=2) == pytest.approx(est() + 2000 * 8 / 1e6)
    assert est(quality="auto") == est(quality="high")  # a ceiling, for --max-cost


def test_manifest_prices_override_the_estimate() -> None:
    per_token = pricing.estimate_usd(size="1024x1024", quality="low", n=2, prompt_chars=0,
                                     input_images=0, prices={"image_output_per_million": 10})
    flat = pricing.estimate_usd(size="1024x1024", quality="low", n=2, prompt_chars=999,
                                input_images=0, prices={"per_image": {"low": 0.01, "high": 0.2}})
    assert per_token == pytest.approx(2 * 272 * 10 / 1e6)
    assert flat == pytest.approx(0.02)


def test_usage_without_token_counts_has_no_price() -> None:
    assert pricing.usd_from_usage({"credits_used": 5}, {}) is None
    assert pricing.usd_from_usage({"input_tokens": 40, "output_tokens": 1000}, {}) == \
        pytest.approx((40 * 5 + 1000 * 30) / 1e6)
