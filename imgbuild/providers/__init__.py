"""Provider presets and the factory. Importing this module is cheap: the HTTP client and Pillow
are imported only when a provider is opened."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from ..errors import MissingKey, UsageError
from ..pricing import DEFAULT_PRICES
from .base import Capabilities, ImageRequest, ImageResult, Provider, ProviderSettings
from .rules import AIMLAPI_CAPABILITIES, OPENAI_CAPABILITIES

__all__ = [
    "PRESETS",
    "Capabilities",
    "ImageRequest",
    "ImageResult",
    "Preset",
    "Provider",
    "ProviderSettings",
    "open_provider",
]


# aimlapi bills USD per request; its one published figure is $0.0537 for a 1024x1024 image, where
# openai's token prices give $0.0317 at medium. Its estimates use openai's prices scaled by that
# ratio, so that -n and --max-cost do not undershoot; what a build really spent comes from the
# response's meta.usage.usd_spent.
AIMLAPI_MARKUP = 0.0537 / 0.03168
AIMLAPI_PRICES = {key: round(value * AIMLAPI_MARKUP, 2) for key, value in DEFAULT_PRICES.items()}


@dataclass(frozen=True)
class Preset:
    name: str
    factory: str  # "module:Class", imported when the provider is opened
    default_model: str | None
    base_url: str | None
    api_key_env: str | None
    capabilities: Capabilities
    # The canonical model id that goes into specs: presets serving the same model share it, so
    # switching openai <-> aimlapi rebuilds nothing, while placeholder renders never pass for real.
    canonical_prefix: str = ""
    default_prices: dict[str, float] = field(default_factory=dict)  # under [provider.prices]

    def canonical_model(self, model: str) -> str:
        return self.canonical_prefix + model.removeprefix("openai/")


PRESETS: dict[str, Preset] = {
    "openai": Preset(
        "openai", "imgbuild.providers.openai:OpenAIProvider", "gpt-image-2",
        "https://api.openai.com/v1", "OPENAI_API_KEY", OPENAI_CAPABILITIES,
    ),
    "aimlapi": Preset(
        "aimlapi", "imgbuild.providers.openai:OpenAIProvider", "openai/gpt-image-2",
        "https://api.aimlapi.com/v1", "AIMLAPI_API_KEY", AIMLAPI_CAPABILITIES,
        default_prices=AIMLAPI_PRICES,
    ),
    "compatible": Preset(
        "compatible", "imgbuild.providers.openai:OpenAIProvider", None, None, None,
        OPENAI_CAPABILITIES,
    ),
    "placeholder": Preset(
        "placeholder", "imgbuild.providers.placeholder:PlaceholderProvider", "gpt-image-2",
        None, None, OPENAI_CAPABILITIES, canonical_prefix="placeholder:",
    ),
}


def open_provider(settings: ProviderSettings) -> Provider:
    """Create the live provider for a build. A missing key is reported here, before any request."""
    preset = PRESETS[settings.preset]
    if settings.api_key_env and not os.environ.get(settings.api_key_env):
        raise MissingKey(
            f"no API key: set the environment variable {settings.api_key_env} "
            f"(provider {settings.preset}), or use --provider placeholder to work offline"
        )
    module_name, _, class_name = preset.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - only while a provider is not yet built
        raise UsageError(f"provider {settings.preset} is not available: {exc}") from exc
    cls = getattr(module, class_name)
    return cls(settings)  # type: ignore[no-any-return]
