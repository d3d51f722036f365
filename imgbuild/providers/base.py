"""The provider boundary: one resolved request in, image files plus usage and cost out.

The engine knows nothing of HTTP. It hands a provider an :class:`ImageRequest` and a staging
folder (the cache's :class:`~imgbuild.cache.Staging` gives it: on the cache's filesystem); the
provider writes each image it got, byte for byte as the API sent it, to a file in that folder and
returns their paths in an :class:`ImageResult`. The
engine then moves those files into the content-addressed cache before doing anything else.

Retries, back-off and rate limiting live inside the provider layer; a provider raises the
:mod:`imgbuild.errors` ``ProviderError`` tree and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

QUALITIES = ("low", "medium", "high", "auto")
FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("low", "auto")


@dataclass(frozen=True)
class ImageRequest:
    """Everything one target asks of the image API, after defaults. Paths are absolute."""

    target: str  # for messages only; never sent
    model: str  # the model id to send (e.g. "openai/gpt-image-2" on aimlapi)
    prompt: str
    size: str
    quality: str
    output_format: str
    background: str
    moderation: str
    output_compression: int | None  # None for png: never sent with png
    n: int
    images: tuple[Path, ...] = ()
    mask: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_edit(self) -> bool:
        return bool(self.images)


@dataclass
class ImageResult:
    """What a request returned. ``files`` are in the staging folder the engine gave, one per image."""

    files: list[Path]
    cost_usd: float | None = None  # the real figure when the response carries one
    usage: dict[str, Any] | None = None
    requests: int = 1  # HTTP requests that reached the API, retries included
    retries: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Capabilities:
    """What a provider accepts, so the manifest check can reject first what it would reject."""

    check_size: Callable[[str], str | None]  # None when fine, else the reason
    qualities: tuple[str, ...] = QUALITIES
    formats: tuple[str, ...] = FORMATS
    transparent_formats: tuple[str, ...] = ("png", "webp")
    max_n: int = 10
    max_images: int = 16
    max_prompt_chars: int = 32_000
    max_image_bytes: int = 50 * 1024 * 1024
    max_mask_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProviderSettings:
    """The resolved ``[provider]`` table: manifest, then environment, then command line."""

    preset: str
    model: str
    api_key_env: str | None
    base_url: str | None
    concurrency: int = 4
    timeout_s: float = 600.0
    max_retries: int = 4
    prices: Mapping[str, Any] = field(default_factory=dict)
    confirm_above_usd: float = 1.0


@runtime_checkable
class Provider(Protocol):
    """A live provider for one build. Created by :func:`imgbuild.providers.open_provider`."""

    settings: ProviderSettings

    async def generate(self, request: ImageRequest, folder: Path) -> ImageResult: ...

    async def aclose(self) -> None: ...
