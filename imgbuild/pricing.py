"""Cost estimates (before a request) and actual costs (from a response's usage), in USD.

openai prices gpt-image-2 by tokens (API.md): text input $5, image input $8, image output $30 per
million. No per-size token table is published for gpt-image-2 with certainty; the earlier GPT
image table (1024x1024: 272 / 1056 / 4160 output tokens at low / medium / high, proportional to
pixel area) is the default. ``[provider.prices]`` overrides any of these figures, or sets a flat
``per_image`` price (a number, or a table by quality).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_PRICES: dict[str, float] = {
    "text_input_per_million": 5.0,
    "image_input_per_million": 8.0,
    "image_output_per_million": 30.0,
}
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
INPUT_IMAGE_TOKENS = 1_000  # a fair figure per input image when the response does not say
_BASE_AREA = 1024 * 1024


def _price(prices: Mapping[str, Any], key: str) -> float:
    return float(prices.get(key, DEFAULT_PRICES[key]))


def per_image_usd(prices: Mapping[str, Any], quality: str) -> float | None:
    """The flat ``per_image`` price for this quality, if ``[provider.prices]`` sets one."""
    flat = prices.get("per_image")
    if isinstance(flat, Mapping):
        flat = flat.get(quality, max(float(v) for v in flat.values()) if flat else None)
    return None if flat is None else float(flat)


def output_tokens(size: str, quality: str) -> int:
    # "auto" lets the API choose: estimate high so that --max-cost stays a real ceiling.
    per_1024 = OUTPUT_TOKENS_1024.get(quality, OUTPUT_TOKENS_1024["high"])
    if "x" in size:
        w, _, h = size.partition("x")
        area = int(w) * int(h)
    else:
        area = 1536 * 1024
    return round(per_1024 * area / _BASE_AREA)


def estimate_usd(
    *, size: str, quality: str, n: int, prompt_chars: int, input_images: int,
    prices: Mapping[str, Any],
) -> float:
    """What one target's request should cost, all n images included."""
    flat = per_image_usd(prices, quality)
    if flat is not None:
        return flat * n
    text = prompt_chars / 4 * _price(prices, "text_input_per_million")
    image_in = input_images * INPUT_IMAGE_TOKENS * _price(prices, "image_input_per_million")
    out = n * output_tokens(size, quality) * _price(prices, "image_output_per_million")
    return (text + image_in + out) / 1_000_000


def usd_from_usage(usage: Mapping[str, Any], prices: Mapping[str, Any]) -> float | None:
    """openai's ``usage`` (tokens) priced; None when it carries no token counts."""
    try:
        details = usage.get("input_tokens_details") or {}
        image_in = int(details.get("image_tokens", 0))
        # Without a split, input tokens not said to be image tokens are priced as text.
        text_in = int(details.get("text_tokens", int(usage.get("input_tokens", 0)) - image_in))
        out = int(usage["output_tokens"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if min(text_in, image_in, out) < 0:
        return None
    return (
        text_in * _price(prices, "text_input_per_million")
        + image_in * _price(prices, "image_input_per_million")
        + out * _price(prices, "image_output_per_million")
    ) / 1_000_000
