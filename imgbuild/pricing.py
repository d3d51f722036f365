"""Cost estimates and ceilings (before a request) and actual costs (from a response's usage), in USD.

openai prices gpt-image-2 by tokens (API.md): text input $5, image input $8, image output $30 per
million. An answer's ``usage.output_tokens_details`` may split its output into image and text
tokens; text output is priced at ``text_output_per_million``, $10 by default: API.md gives no figure
for gpt-image-2, and $10 is what OpenAI's price list gives for the text output of its GPT image
models (gpt-image-1.5: text $5 in / $10 out, image $8 in / $32 out). Without that split, all
output is priced as image output, the dearer kind.

No per-size token table is published for gpt-image-2 with certainty; the earlier GPT image table
(1024x1024: 272 / 1056 / 4160 output tokens at low / medium / high, proportional to pixel area) is
the default. ``[provider.prices]`` overrides any of these figures, or sets a flat ``per_image``
price (a number, or a table by quality).

Two figures come before a request:

- the *estimate*, what it should cost: ``-n`` shows it, and ``--max-cost`` refuses a build whose
  estimate is over the limit;
- the *ceiling*, the most it can cost by these prices: ``quality = "auto"`` may come back high,
  ``size = "auto"`` as large as 1536x1024, a prompt may take a token per byte, an input image as
  many tokens as the largest output. A request starts only while the spend so far, the ceilings of
  the requests in flight and its own fit under ``--max-cost``.

A server can still charge more than these prices say; the build then shows by how much the spend
passed the estimate, and holds later requests to the price it saw (see the executor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEFAULT_PRICES: dict[str, float] = {
    "text_input_per_million": 5.0,
    "image_input_per_million": 8.0,
    "image_output_per_million": 30.0,
    "text_output_per_million": 10.0,
}
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
INPUT_IMAGE_TOKENS = 1_000  # a fair figure per input image when the response does not say
_BASE_AREA = 1024 * 1024
_AUTO_AREA = 1536 * 1024  # the largest size "auto" picks
# More tokens than this in one answer is not a count but a broken or hostile server.
MAX_TOKENS = 100_000_000


def _price(prices: Mapping[str, Any], key: str) -> float:
    return float(prices.get(key, DEFAULT_PRICES[key]))


def per_image_usd(prices: Mapping[str, Any], quality: str) -> float | None:
    """The flat ``per_image`` price for this quality, if ``[provider.prices]`` sets one."""
    flat = prices.get("per_image")
    if isinstance(flat, Mapping):
        flat = flat.get(quality, max(float(v) for v in flat.values()) if flat else None)
    return None if flat is None else float(flat)


def _per_image_ceiling(prices: Mapping[str, Any], quality: str) -> float | None:
    flat = prices.get("per_image")
    if isinstance(flat, Mapping) and flat and quality == "auto":
        return max(float(v) for v in flat.values())  # the API picks the quality: any may come
    return per_image_usd(prices, quality)


def _area(size: str) -> int:
    if "x" in size:
        w, _, h = size.partition("x")
        return int(w) * int(h)
    return _AUTO_AREA


def output_tokens(size: str, quality: str) -> int:
    # "auto" lets the API choose: estimate high so that --max-cost stays a real ceiling.
    per_1024 = OUTPUT_TOKENS_1024.get(quality, OUTPUT_TOKENS_1024["high"])
    return round(per_1024 * _area(size) / _BASE_AREA)


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


def ceiling_usd(
    *, size: str, quality: str, n: int, prompt: str, input_images: int, prices: Mapping[str, Any],
) -> float:
    """The most one target's request can cost by these prices (see the module's docstring)."""
    flat = _per_image_ceiling(prices, quality)
    if flat is not None:
        return flat * n
    text = len(prompt.encode("utf-8")) * _price(prices, "text_input_per_million")
    largest = output_tokens("auto", "high")
    image_in = input_images * max(INPUT_IMAGE_TOKENS, largest) * _price(prices, "image_input_per_million")
    out = n * output_tokens(size, "high" if quality == "auto" else quality) * _price(
        prices, "image_output_per_million")
    return (text + image_in + out) / 1_000_000


def checked_usd(value: Any) -> float | None:
    """A server's USD figure if it is one: a finite number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < math.inf else None


def _count(usage: Mapping[str, Any], key: str, default: int | None = None) -> int:
    if key not in usage and default is not None:
        return default
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= MAX_TOKENS) \
            or value != int(value):
        raise ValueError(f"{key} = {shown(value)} is not a token count")
    return int(value)


def shown(value: Any) -> str:
    """A value a server sent, for a message: JSON, control characters escaped, short."""
    import json

    try:
        text = json.dumps(value)  # escapes control characters: a server's text stays one line
    except (TypeError, ValueError):
        text = type(value).__name__
    return text[:40]


def usd_from_usage(usage: Mapping[str, Any], prices: Mapping[str, Any]) -> float | None:
    """openai's ``usage`` (tokens) priced by kind; None when it carries no token counts.
    Raises ValueError, saying which, when a count is not a whole number from 0 to MAX_TOKENS."""
    if "output_tokens" not in usage:
        return None
    out = _count(usage, "output_tokens")
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    image_in = _count(details, "image_tokens", 0)
    # Without a split, input tokens not said to be image tokens are priced as text.
    total_in = _count(usage, "input_tokens", image_in)
    text_in = _count(details, "text_tokens", max(0, total_in - image_in))
    out_details = usage.get("output_tokens_details")
    out_details = out_details if isinstance(out_details, Mapping) else {}
    # Without a split, all output is priced as image output, the dearer kind.
    image_out = _count(out_details, "image_tokens", out) if out_details else out
    text_out = _count(out_details, "text_tokens", max(0, out - image_out)) if out_details else 0
    return (
        text_in * _price(prices, "text_input_per_million")
        + image_in * _price(prices, "image_input_per_million")
        + image_out * _price(prices, "image_output_per_million")
        + text_out * _price(prices, "text_output_per_million")
    ) / 1_000_000
