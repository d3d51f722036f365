"""The pydantic models of ``images.toml``: at once the parser, the validator and the JSON Schema.

Loading happens in two passes. Pydantic checks the shape of each part (types, enums, ranges,
unknown fields); :mod:`imgbuild.resolve` then checks what needs the file system and the chosen
provider (paths, inputs by their bytes, sizes, formats, masks, cycles). Every problem of both passes
is reported at once, each with its place.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from .tablecheck import BUILTIN_DEFAULTS, DEFAULT_COMPRESSION, TARGET_NAME_PATTERN

PRESET_NAMES = ("openai", "aimlapi", "compatible", "placeholder")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# A price is a finite amount, 0 or more: nan would switch --max-cost off, a negative one undo spend.
USD = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Prices(_Strict):
    """Override the cost estimate. Token prices are USD per million tokens."""

    model_config = ConfigDict(extra="forbid", strict=False)

    text_input_per_million: USD | None = Field(None, description="USD per million text input tokens.")
    image_input_per_million: USD | None = Field(None, description="USD per million image input tokens.")
    image_output_per_million: USD | None = Field(None, description="USD per million image output tokens.")
    text_output_per_million: USD | None = Field(
        None, description="USD per million text output tokens (usage.output_tokens_details.text_tokens)."
    )
    per_image: USD | dict[Literal["low", "medium", "high", "auto"], USD] | None = Field(
        None, description="A flat USD price per image, or a table by quality (low/medium/high/auto)."
    )

    @field_validator("per_image", mode="before")
    @classmethod
    def _one_line_per_price(cls, value: Any) -> Any:
        # Checked here so that a bad price is one readable line, not one per branch of the union.
        table = value if isinstance(value, dict) else {None: value}
        for quality, price in table.items():
            if quality not in (None, "low", "medium", "high", "auto"):
                raise PydanticCustomError("price_quality", "{quality} is not a quality (low, medium, high, auto)",
                                          {"quality": repr(quality)})
            if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price < float("inf"):
                # A table's value is named here; a single one is shown by the renderer.
                where = f"{quality} = {price!r}: " if quality else ""
                raise PydanticCustomError("price", "{where}a price is a finite amount in USD, 0 or more",
                                          {"where": where})
        return value


class ProviderTable(_Strict):
    """Which API builds the images. Every field is optional."""

    model_config = ConfigDict(extra="forbid", strict=False)

    name: Literal["openai", "aimlapi", "compatible", "placeholder"] = Field(
        "openai", description="Preset: openai | aimlapi | compatible | placeholder (offline)."
    )
    model: str | None = Field(None, min_length=1, description="Model id to send (default per preset).")
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the key (default per preset).",
    )
    base_url: str | None = Field(
        None, pattern=r"^https?://", description="Endpoint; only for the compatible preset."
    )
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at most.")
    timeout: float = Field(600, gt=0, description="Seconds for one request.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a transient failure, after the first try.")
    confirm_above: float = Field(
        1.0, ge=0, description="On a terminal, ask before a build estimated above this many USD."
    )
    prices: Prices = Field(default_factory=lambda: Prices(), description="Override the cost estimate.")


Quality = Literal["low", "medium", "high", "auto"]
Format = Literal["png", "jpeg", "webp"]
Background = Literal["transparent", "opaque", "auto"]
Moderation = Literal["low", "auto"]


class Params(_Strict):
    """The fields a target shares with ``[defaults]``."""

    size: str | None = Field(None, description='"auto" or "WIDTHxHEIGHT" (default 1024x1024).')
    quality: Quality | None = Field(None, description="low | medium | high | auto (default medium).")
    output_format: Format | None = Field(
        None, description="png | jpeg | webp; when absent it follows the output's extension, else png."
    )
    background: Background | None = Field(None, description="transparent | opaque | auto (default auto).")
    moderation: Moderation | None = Field(None, description="low | auto (default auto); generations only.")
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="0-100, jpeg and webp only (default 100)."
    )
    n: Annotated[int, Field(ge=1, le=10)] | None = Field(None, description="Images per target, 1-10 (default 1).")
    revision: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Bump it to ask for a new take of an otherwise unchanged target (default 0)."
    )
    pinned: bool | None = Field(
        None, description="Never call the API for this target; if its spec changed, say so and keep the image."
    )
    extra: dict[str, Any] | None = Field(
        None, description="Further request fields sent as they are, for API parameters imgbuild does not know."
    )


class TargetTable(Params):
    """One image target: ``[images.NAME]``."""

    prompt: str | None = Field(None, description="The prompt; ${var} is replaced from [vars], $$ is a literal $.")
    prompt_file: str | None = Field(None, description="A file holding the prompt, instead of prompt.")
    output: str | None = Field(None, description="Output path (default <out_dir>/<name>.<ext>).")
    images: list[str] | None = Field(
        None, min_length=1, max_length=16, description="Input images for an edit, 1-16, order matters."
    )
    mask: str | None = Field(
        None, description="PNG with alpha, same size as the first input; only with images."
    )
    candidates: Annotated[int, Field(ge=2, le=10)] | None = Field(
        None, description="Ask for this many takes (2-10) of the same spec; `imgbuild pick` chooses the output."
    )
    # Derived targets (imgbuild/derive/): made locally from other images, never a request.
    from_: str | None = Field(
        None, alias="from", description="Derive this image from another (a target's output or a committed file)."
    )
    sheet: list[str] | None = Field(
        None, description="Pack these images (globs allowed) into one PNG sprite sheet with a JSON-hash atlas."
    )
    crop: list[int] | None = Field(None, description="[x, y, w, h] in pixels; the first operation of a from target.")
    trim: bool | None = Field(None, description="Cut to the pixels whose alpha is not 0 (from targets).")
    padding: Annotated[int, Field(ge=0, le=4096)] | None = Field(
        None, description="Transparent pixels around a trimmed image, or between the frames of a sheet (default 0)."
    )
    resize: str | None = Field(None, description='"WxH", "Wx" or "xH": the size to resize to (from targets).')
    fit: Literal["cover", "contain", "fill", "inside"] | None = Field(
        None, description="How resize = \"WxH\" fits: cover (default) | contain | fill | inside, as sharp defines them."
    )
    matte: str | None = Field(
        None, pattern=r"^#[0-9a-fA-F]{6}$",
        description='"#rrggbb": what transparency is flattened onto in a jpeg, and what contain pads it with (default #ffffff).',
    )
    lossless: bool | None = Field(None, description="Lossless webp (derived targets).")
    columns: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="Frames per row of a sheet (default: the smallest square grid)."
    )
    atlas: str | None = Field(None, description="Where a sheet's atlas goes (default: the output with .json).")


class CacheTable(_Strict):
    """``[cache]``: where else built images are kept."""

    remote: str | None = Field(
        None, description="A remote cache shared by a team and its CI: s3://bucket/prefix, gs://…, az://…, "
        "file:///abs/path or http(s)://… (IMGBUILD_REMOTE_CACHE overrides it). Credentials come from the "
        "store's usual environment (AWS_* …), never from here.")

    @field_validator("remote")
    @classmethod
    def _remote_url(cls, value: str | None) -> str | None:
        if value is not None:
            from .remote._client import RemoteConfigError, parse_location  # no obstore: the URL's shape only

            try:
                parse_location(value)
            except RemoteConfigError as exc:
                # "no_echo": the message never repeats the value, which may hold a password.
                raise PydanticCustomError("no_echo", str(exc).replace("{", "{{").replace("}", "}}")) from None
        return value


class ManifestFile(_Strict):
    """``images.toml``: declares every image a project needs."""

    model_config = ConfigDict(extra="forbid", strict=True, title="imgbuild manifest (images.toml)")

    out_dir: str = Field("build/images", description="Where targets without output go.")
    provider: ProviderTable = Field(default_factory=lambda: ProviderTable(), description="Which API builds the images.")
    defaults: Params = Field(default_factory=lambda: Params(), description="Defaults for every target.")
    vars: dict[str, str] = Field(default_factory=dict, description="Values for ${name} in prompts.")
    cache: CacheTable = Field(default_factory=lambda: CacheTable(), description="The remote cache, if any.")
    images: dict[Annotated[str, Field(pattern=TARGET_NAME_PATTERN)], TargetTable] = Field(
        default_factory=dict, description="The targets, by name."
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of images.toml, for editors (``imgbuild schema``)."""
    schema = ManifestFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
