"""Provider presets and the factory. Importing this module is cheap: the HTTP client and Pillow
are imported only when a provider is opened."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from ..errors import MissingKey, UsageError
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
