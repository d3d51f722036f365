#!/usr/bin/env python3
"""Write docs/manifest.md, the images.toml reference, from imgbuild's own data.

The field tables come from the JSON Schema that ``imgbuild schema`` prints (the pydantic models in
``imgbuild/manifest.py``: names, types, ranges, schema defaults, descriptions); imgbuild's own
defaults from ``manifest.BUILTIN_DEFAULTS``; the provider rules from ``providers.PRESETS`` and
their capabilities. What the schema cannot say (effective defaults of optional fields, whether a
field is part of the spec digest, extra notes) is in the tables below, keyed by field: a field
added to a model without an entry here makes this script fail, so the page cannot fall behind.

    python tools/gen_manifest_doc.py            # rewrite docs/manifest.md
    python tools/gen_manifest_doc.py --check    # exit 1 if docs/manifest.md is out of step
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "manifest.md"

# (table, field) -> (effective default, part of the spec digest?, extra note). The default is
# used where the schema's default is null (the field is optional and something else decides).
FIELD_FACTS: dict[tuple[str, str], tuple[str | None, str, str]] = {
    ("ManifestFile", "out_dir"): (None, "no", "Must stay inside the project folder."),
    ("ManifestFile", "provider"): ("see below", "model only", ""),
    ("ManifestFile", "defaults"): ("`{}`", "through the targets", ""),
    ("ManifestFile", "vars"): ("`{}`", "through the prompts", ""),
    ("ManifestFile", "images"): ("`{}`", "yes", "Names match `[A-Za-z0-9][A-Za-z0-9._-]*`."),
    ("ManifestFile", "cache"): ("`{}`", "no", ""),
    ("CacheTable", "remote"): ("none: the local cache only", "no",
                               "`--remote=read` looks up but never uploads (untrusted pull requests); "
                               "`--remote=off` opens no connection."),
    ("ProviderTable", "name"): (None, "model only",
                                "`--provider` and `IMGBUILD_PROVIDER` override it."),
    ("ProviderTable", "model"): ("per preset", "yes (canonical id)",
                                 "Used only while the preset in force is the manifest's own "
                                 "(an override from the command line uses that preset's model). "
                                 "The spec records it without an `openai/` prefix, so openai and "
                                 "aimlapi share specs."),
    ("ProviderTable", "api_key_env"): ("per preset", "no",
                                       "For `compatible`, honoured only for a server on this "
                                       "machine or one given by `--base-url`/`IMGBUILD_BASE_URL`; "
                                       "else the key comes from `IMGBUILD_API_KEY` or the variable "
                                       "`IMGBUILD_API_KEY_ENV` names ([providers](providers.md#keys)). "
                                       "The key itself is never in the manifest."),
    ("ProviderTable", "base_url"): ("per preset", "no",
                                    "Required for `compatible` (or `--base-url`). An error with "
                                    "`openai` and `aimlapi`: their endpoint comes from the preset, "
                                    "`IMGBUILD_BASE_URL` or `--base-url`, never from the manifest."),
    ("ProviderTable", "concurrency"): (None, "no", "`-j N` overrides it for one build."),
    ("ProviderTable", "timeout"): (None, "no", "The read timeout; connecting times out after 10 s."),
    ("ProviderTable", "max_retries"): (None, "no",
                                       "Only for what is plainly transient: 429, 408, 409, 5xx, "
                                       "timeouts, resets, answers cut short in transit."),
    ("ProviderTable", "confirm_above"): (None, "no", "`build --yes` skips the question; off a "
                                         "terminal nothing is asked."),
    ("ProviderTable", "prices"): ("`{}`", "no", "Changes estimates and recorded costs, never a spec."),
    ("Prices", "text_input_per_million"): ("`5.0`", "no", "Prompt text: about 4 characters a token."),
    ("Prices", "image_input_per_million"): ("`8.0`", "no",
                                            "Edit inputs: estimated at 1,000 tokens each."),
    ("Prices", "image_output_per_million"): ("`30.0`", "no",
                                             "Estimate: 272 / 1056 / 4160 tokens for a 1024x1024 "
                                             "image at low / medium / high (auto counts as high), "
                                             "in proportion to the pixel area for other sizes."),
    ("Prices", "text_output_per_million"): ("`10.0`", "no",
                                            "Text output tokens, when an answer's "
                                            "`usage.output_tokens_details` reports them apart "
                                            "(OpenAI's figure for its GPT image models)."),
    ("Prices", "per_image"): ("none: priced by tokens", "no",
                              "Replaces the token estimate, e.g. `per_image = 0.05` or "
                              "`per_image = {{ low = 0.01, medium = 0.04, high = 0.17 }}` (a "
                              "quality missing from the table is priced at its highest entry)."),
    ("Params", "size"): ("`\"1024x1024\"`", "yes", "Checked by the provider's rules (below)."),
    ("Params", "quality"): ("`\"medium\"`", "yes", "aimlapi does not take `auto`."),
    ("Params", "output_format"): ("`\"png\"`", "yes",
                                  "An `output` extension that contradicts it is an error "
                                  "(`.jpg` and `.jpeg` mean jpeg)."),
    ("Params", "background"): ("`\"auto\"`", "yes", "`transparent` needs png or webp."),
    ("Params", "moderation"): ("`\"auto\"`", "yes",
                               "Never sent with an edit: its endpoint does not define it. An error "
                               "on a target with `images`; in `[defaults]` it applies to "
                               "generations (an edit's spec keeps `\"auto\"`)."),
    ("Params", "output_compression"): ("`100` for jpeg and webp", "yes (jpeg, webp)",
                                       "An error on a png target (one set in `[defaults]` is "
                                       "simply not used for png targets); never sent with png."),
    ("Params", "n"): ("`1`", "yes",
                      "With n > 1 the outputs are `<stem>-1<ext>` … `<stem>-N<ext>`."),
    ("Params", "revision"): ("`0`", "yes",
                             "Unlike `build -B`, which replaces the take of an unchanged spec, a "
                             "new revision is a new spec: setting it back restores the earlier "
                             "take from the cache, for free."),
    ("Params", "pinned"): ("`false`", "no",
                           "`status` shows it as `pinned`; its output on disk still feeds its "
                           "dependents. Not part of the spec: pinning rebuilds nothing."),
    ("Params", "extra"): ("`{}`", "yes",
                          "May not set a field imgbuild sends itself: {own_fields}; nor "
                          "`stream`, `partial_images` or `response_format`, which change the "
                          "shape of the answer. A field only one endpoint defines (`input_fidelity`"
                          " for edits, `style` for generations) goes only to that endpoint: in "
                          "`[defaults]` it applies to those targets, in another target's own "
                          "table it is an error. See [providers](providers.md#request-fields-"
                          "moderation-and-extra)."),
    ("TargetTable", "prompt"): ("—", "its resolved text", "Exactly one of `prompt` and "
                                "`prompt_file`; at most {max_prompt:,} characters once the vars are "
                                "replaced."),
    ("TargetTable", "prompt_file"): ("—", "its resolved text",
                                     "UTF-8, trimmed at both ends, vars replaced as in `prompt`. "
                                     "The whole file is the prompt (Markdown is fine: it is sent "
                                     "as written). Editing it changes the target (reason "
                                     "`prompt`)."),
    ("TargetTable", "output"): ("`<out_dir>/<name>.<ext>`", "no",
                                "`.png`, `.jpg`, `.jpeg` or `.webp`; the default's extension "
                                "follows `output_format` (jpeg → `.jpg`). Renaming it costs no "
                                "request."),
    ("TargetTable", "images"): ("none: a generation", "content digests, in order",
                                "With `images` the target is an edit. Each must exist or be made "
                                "by another target, and be PNG, JPEG or WEBP by its bytes."),
    ("TargetTable", "mask"): ("none", "its content digest",
                              "It applies to the first input: its transparent pixels mark where "
                              "to edit. At most 4 MB. Its size is compared with the first input "
                              "file's, or, when another target makes that input, with that "
                              "target's `size`."),
    ("TargetTable", "candidates"): ("none: one take", "yes",
                                    "One request with `n = K` (K requests of one on aimlapi "
                                    "generations). Every take goes into the cache and the lock "
                                    "(`takes`); the output holds take 1 until `imgbuild pick "
                                    "NAME K` chooses another, with no request (`pick`). A pick "
                                    "stays with its spec: renaming the output or reformatting "
                                    "keeps it, reverting to that spec brings the picked take back "
                                    "for free; a spec change asks for new takes. Not with "
                                    "`n > 1`; not in `[defaults]`."),
    ("TargetTable", "from"): ("—", "its content digest",
                              "It makes the target derived: made locally, never a request. "
                              "Exactly one of `prompt`, `prompt_file`, `from` and `sheet`."),
    ("TargetTable", "sheet"): ("—", "content digests and frame names, in order",
                               "A sprite sheet: these images packed into one PNG, with an atlas. "
                               "A glob (`sprites/*.png`, `**/`) is matched against the outputs "
                               "the manifest declares and the files git tracks, never the disk, "
                               "and finds images only (`.png`, `.jpg`, `.jpeg`, `.webp`: not an "
                               "atlas). "
                               "`sheet = []` is an error."),
    ("TargetTable", "crop"): ("none", "yes", "Width and height at least 1, x and y at least 0. A "
                              "crop outside the image fails that target (with the image's size)."),
    ("TargetTable", "trim"): ("`false`", "yes",
                              "A fully transparent image fails that target; an image without "
                              "alpha keeps all its pixels."),
    ("TargetTable", "padding"): ("`0`", "yes",
                                 "With `trim` on a `from` target (an error without it); between "
                                 "frames on a sheet."),
    ("TargetTable", "resize"): ("none", "yes",
                                "Each edge 1–16384. With one edge the other keeps the aspect "
                                "ratio, rounded to the nearest pixel. Lanczos resampling."),
    ("TargetTable", "fit"): ("`\"cover\"` with `resize = \"WxH\"`", "yes",
                             "An error without `resize`, or with one edge only. See "
                             "[the pictures](#fit)."),
    ("TargetTable", "matte"): ("`\"#ffffff\"` for jpeg", "yes (jpeg)",
                               "Only where transparency cannot be kept: a jpeg output; an error "
                               "on png and webp outputs (they keep it, and `contain` pads them "
                               "transparent)."),
    ("TargetTable", "lossless"): ("`false`", "yes (webp)", "Only for webp outputs."),
    ("TargetTable", "columns"): ("the smallest square grid", "yes", "Only for a sheet."),
    ("TargetTable", "atlas"): ("the output with `.json`", "no",
                               "Only for a sheet; an output of the target (cached and restored "
                               "like the image). Its `meta.image` is the sheet's path relative "
                               "to it."),
}

# Fields only a derived target has: a section of their own.
DERIVED_FIELDS = ("from", "sheet", "crop", "trim", "padding", "resize", "fit", "matte", "lossless", "columns",
                  "atlas")

TITLES = {
    "ManifestFile": "Top level",
    "ProviderTable": "`[provider]`",
    "Prices": "`[provider.prices]`",
    "CacheTable": "`[cache]`",
    "Params": "`[defaults]`",
    "TargetTable": "`[images.NAME]`: a target",
    "Derived": "Derived targets: `from` and `sheet`",
}

DERIVED = """\
A target with `from` or `sheet` is **derived**: imgbuild makes it on this machine, from images
another target makes or that are committed, in a pool of processes beside the requests (`-j` bounds
requests only). It is never a request and costs nothing; it has a spec, states and reasons, a lock
entry and a place in the cache like any target (`status` says `resize: 640x → 800x`, `input
art/hero.png`). Request fields (`size`, `quality`, `background`, `moderation`, `n`, `images`,
`mask`, `revision`, `extra`) are errors on it, and its operations are errors on a request target.
Its spec is the operations, the output format settings, the content digests of its inputs and the
version of imgbuild's recipe (which changes only when imgbuild's output for one recipe would): the
same recipe gives the same bytes for one Pillow version (no metadata is written).

```toml
[images.hero]                    # one paid generation
prompt = "A lighthouse on a cliff at dusk"
size = "1536x1024"
output = "art/hero.png"

[images.hero-640]                # derived: free, local
from = "art/hero.png"
resize = "640x"
output = "site/hero-640.webp"
output_compression = 80

[images.hero-card]
from = "art/hero.png"
resize = "1200x630"
fit = "cover"
output = "site/hero-card.jpg"
```

The operations of a `from` target apply in this order, each only when given:

1. `crop = [x, y, w, h]`: that rectangle, in pixels of the input;
2. `trim = true`: to the bounding box of the pixels whose alpha is not 0, then `padding = N`
   transparent pixels on every side;
3. `resize`: `"WxH"`, `"Wx"` or `"xH"`, with `fit` when both edges are given;
4. `matte`: transparency flattened onto this colour where the output cannot keep it (jpeg);
5. the output: `output_format` (or the extension), `output_compression` (jpeg and webp quality,
   default {compression}) and `lossless` (webp).

### fit

The words mean what they mean in sharp. Each picture below is imgbuild's own output for
`resize = "256x256"` from one 1536x1024 image of the placeholder provider (the first row, at
`resize = "384x"`), made by `python tools/fit_pictures.py` (docs/img/):

| `fit` | what it does | output |
| --- | --- | --- |
| the input | 1536x1024, shown at 384x256 | ![input](img/fit-input.png) |
| `cover` (default) | scaled to cover both edges, then the centre cut to exactly WxH | ![cover](img/fit-cover.png) |
| `contain` | scaled to fit inside, centred and padded to exactly WxH (transparent; `matte` for jpeg) | ![contain](img/fit-contain.png) |
| `fill` | stretched to exactly WxH, ignoring the aspect ratio | ![fill](img/fit-fill.png) |
| `inside` | scaled to fit inside, no padding: at most WxH, aspect ratio kept | ![inside](img/fit-inside.png) |

For an input of 1536x1024 and `resize = "800x800"`: `cover`, `contain` and `fill` give 800x800,
`inside` gives 800x533; `resize = "640x"` gives 640x427.

### Sheets

A `sheet` target packs its frames into one RGBA PNG, row by row, `columns` a row (default: the
smallest square grid), each row as tall as its tallest frame, `padding` pixels between frames. The
frames go in as they are (trim them with `from` targets first), so each frame's rectangle holds
exactly its image's pixels. Beside the PNG, the atlas (`atlas`, default the output with `.json`) in
the JSON-hash layout Phaser and PixiJS load: `frames.<name>.frame {{x, y, w, h}}`, `rotated: false`,
`trimmed: false`, `spriteSourceSize`, `sourceSize`, and `meta {{image, size {{w, h}}, format:
"RGBA8888", scale: "1"}}`. A frame's name is its file's stem; two frames with one stem are an error.

```toml
[images.knight]
prompt = "A knight, side view, on a transparent background"
background = "transparent"
output = "art/knight.png"

[images.knight-sprite]
from = "art/knight.png"
trim = true
padding = 2
resize = "x128"
output = "sprites/knight.png"

[images.characters]
sheet = ["sprites/*.png"]
padding = 2
output = "game/characters.png"   # and game/characters.json
```

What only the image can show fails that target alone, with one line naming it and the image's size
(`hero-crop: crop [0, 0, 2000, 100] reaches outside art/hero.png, which is 1536x1024`); with `-k`
the rest of the build goes on.
"""

INTRO = """\
# `images.toml` reference

<!-- Generated by tools/gen_manifest_doc.py from imgbuild's pydantic models (the JSON Schema of
`imgbuild schema`) and its provider presets. Do not edit by hand: change the models or the
generator, then run `python tools/gen_manifest_doc.py`. tests/test_docs.py checks it is in step. -->

The manifest declares every image a project needs. It lives at the project root (the folder that
`-C DIR` names, `.` by default); every path in it is relative to that folder and must stay inside
it after `..` and symlinks are resolved. An editor can check it as you type: see
[Editor support](#editor-support).

```toml
out_dir = "assets"

[provider]                       # which API builds the images; every field optional
name = "openai"

[defaults]                       # any target parameter; targets override
quality = "medium"

[vars]                           # ${{name}} in prompts and prompt files; $$ is a literal $
style = "flat vector art, thick outlines"

[images.hero]                    # a target: a generation
prompt = "A knight on a hill at dawn, ${{style}}"
size = "1536x1024"

[images.hero-crowned]            # an edit: it has input images
prompt_file = "prompts/crowned.md"
images = ["assets/hero.png", "art/crown.png"]
mask = "art/crown-mask.png"
output = "assets/hero-crowned.webp"
```

How to read the tables: **default** is what applies when the field is absent; **in the spec**
says whether the field is part of the target's spec digest, that is whether changing it makes the
next build request the image again (see [design](design.md#how-staleness-is-decided)). Unknown
fields are errors everywhere except in `extra` and `[vars]`.
"""

RESOLUTION = """\
## How a target is resolved

1. **Parameters**: the target's own fields, then `[defaults]`, then imgbuild's defaults
   ({builtin}, and `output_compression = {compression}` for jpeg and webp). They are always part
   of the spec and always sent, so that one target is one request on every provider.
2. **Prompt**: `prompt`, or the text of `prompt_file`; `${{name}}` is replaced from `[vars]` (an
   undefined name is an error; vars may use vars), `$$` becomes `$`.
3. **Output format**: `output_format`, else the extension of `output`, else png.
4. **Outputs**: `output`, else `<out_dir>/<name>.<ext>` with `.png`, `.jpg` or `.webp`. With
   `n > 1`, `<stem>-1<ext>` … `<stem>-N<ext>`: `output = "icons/potion.png"` with `n = 3` writes
   `icons/potion-1.png`, `icons/potion-2.png`, `icons/potion-3.png`.
5. **Dependencies**, by path as in make: an input (`images`, `mask`) that is another target's
   output makes that target a dependency; it is built first, and a change to its bytes makes this
   target `changed`. Cycles are an error that names the cycle; so are two targets with one output,
   and outputs or target names that differ only in case (`assets/Sprites/WIN.png` and
   `assets/sprites/win.png`, targets `a` and `A`): they are one file on macOS and Windows.

## What is checked before anything runs

Every problem is reported at once, one line each with its place, then imgbuild exits with code 2
having made no request and written no file:

```
images.toml: images.hero.size: 1000x1000 is not a multiple of 16
images.toml: images.hero-crowned.images[1]: art/crown.png does not exist and no target makes it
```

- the shapes and values of the tables above (types, enums, ranges, target names); an unknown field
  names the nearest known one (`images.knight.backgorund: unknown field (did you mean background?)`);
- exactly one of `prompt` and `prompt_file`; every `${{name}}` defined; the prompt not empty and at
  most {max_prompt:,} characters;
- paths inside the project; inputs that exist (or that a target makes) and are PNG, JPEG or WEBP by
  their first bytes, whatever their names say;
- `output` ends in `.png`, `.jpg`, `.jpeg` or `.webp` and agrees with `output_format`;
  `output_compression` only for jpeg and webp; `background = "transparent"` only with png or webp;
- masks: only with `images`; PNG with alpha; at most 4 MB; the size of the first input (when a
  target makes that input and its `size` is `"auto"`, this is checked once it is built);
- at most {max_images} input images; `extra` does not override a field imgbuild sends, change the
  answer's shape, or set a field the target's endpoint does not define; no `moderation` on an edit;
- `candidates` (2–10) not together with `n > 1`;
- the provider's own rules ([below](#provider-rules)) for size, quality, format, `n` and
  transparency, so that what the provider would reject is rejected here first;
- the provider table: a known preset, `base_url` for `compatible` (and no `api_key_env` it may not choose), no
  `base_url` for `openai` and `aimlapi`.

Validation needs no key and no network: the placeholder provider checks a manifest by the openai
preset's rules, so that what builds offline also builds for real.
"""

EDITOR = """\
## Editor support

`imgbuild schema` prints the JSON Schema these tables are made from. Editors with a TOML language
server (Taplo, "Even Better TOML" in VS Code) read it from a directive on the manifest's first line:

```sh
imgbuild schema > images.schema.json
```

```toml
#:schema ./images.schema.json
out_dir = "assets"
```
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"table ({TITLES.get(name, name)})"
    if "anyOf" in prop:
        kinds = [_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds)
    if "enum" in prop:
        return " \\| ".join(f"`{_toml(v)}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "integer" or kind == "number":
        lo, hi = prop.get("minimum"), prop.get("maximum")
        text = "integer" if kind == "integer" else "number"
        if lo is not None and hi is not None:
            return f"{text} {lo}–{hi}"
        if lo is not None:
            return f"{text} ≥ {lo}"
        if prop.get("exclusiveMinimum") is not None:
            return f"{text} > {prop['exclusiveMinimum']}"
        return text
    if kind == "string":
        if "pattern" in prop:
            return f"string matching `{prop['pattern']}`"
        return "non-empty string" if prop.get("minLength") else "string"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        item = _type(prop.get("items", {}), defs)
        lo, hi = prop.get("minItems"), prop.get("maxItems")
        count = f"{lo}–{hi} " if lo is not None and hi is not None else ""
        return f"array of {count}{item}s"
    if kind == "object":
        if "patternProperties" in prop:
            return "tables, one per target"
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type"):
            return f"table of {extra['type']}s"
        return "table"
    raise SystemExit(f"gen_manifest_doc: no rendering for schema {prop!r}")


def _cell(text: str) -> str:
    """One table cell: on one line, with its pipes escaped (those not escaped already)."""
    return re.sub(r"(?<!\\)\|", r"\\|", " ".join(text.split()))


def _table(model: str, schema: dict[str, Any], defs: dict[str, Any], fields: list[str],
           facts: dict[str, Any]) -> list[str]:
    rows = ["| field | type | default | in the spec | what it does |", "| --- | --- | --- | --- | --- |"]
    props = schema["properties"]
    for name in fields:
        prop = props[name]
        key = (model, name)
        if key not in FIELD_FACTS:
            raise SystemExit(f"gen_manifest_doc: {model}.{name} has no entry in FIELD_FACTS; add one")
        effective, in_spec, note = FIELD_FACTS[key]
        note = note.format(**facts)
        if prop.get("default") is not None:
            default = f"`{_toml(prop['default'])}`"
        else:
            default = effective or "—"
        description = prop.get("description")
        if description is None and "$ref" in prop:
            description = defs[prop["$ref"].rsplit("/", 1)[-1]].get("description", "")
        text = " ".join(part for part in (description or "", note) if part)
        rows.append(f"| `{name}` | {_cell(_type(prop, defs))} | {default} | {in_spec} | {_cell(text)} |")
    return rows


def _provider_rules(facts: dict[str, Any]) -> list[str]:
    from imgbuild.providers import PRESETS
    from imgbuild.providers.rules import (
        AIMLAPI_SIZES,
        check_aimlapi_size,
        check_openai_size,
    )

    size_rules: dict[Any, str] = {
        check_openai_size: "gpt-image-2's (below)",
        check_aimlapi_size: ", ".join(f"`{s}`" for s in AIMLAPI_SIZES),
    }
    names = list(PRESETS)
    lines = [
        "## Provider rules",
        "",
        "The preset decides what a manifest may ask for; `--provider` or `IMGBUILD_PROVIDER` "
        "switches it for one run, and the manifest is checked again by the new preset's rules. "
        "How to use each one (keys, endpoints, costs): [providers](providers.md).",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]

    def row(label: str, values: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    presets = [PRESETS[n] for n in names]
    row("model sent", [
        f"none (specs say `{p.canonical_model(p.default_model)}`)" if p.canonical_prefix and p.default_model
        else f"`{p.default_model}`" if p.default_model else "`model` (default `gpt-image-2`)"
        for p in presets])
    row("endpoint", [f"`{p.base_url}`" if p.base_url else
                     ("none: renders offline" if p.name == "placeholder" else "`base_url` (required)")
                     for p in presets])
    row("key from", [f"`{p.api_key_env}`" if p.api_key_env else
                     ("none" if p.name == "placeholder" else "[see providers](providers.md#keys)")
                     for p in presets])
    for p in presets:
        if p.capabilities.check_size not in size_rules:
            raise SystemExit(f"gen_manifest_doc: describe the size rule of preset {p.name}")
    row("size", [size_rules[p.capabilities.check_size] for p in presets])
    row("quality", [", ".join(f"`{q}`" for q in p.capabilities.qualities) for p in presets])
    row("output_format", [", ".join(f"`{f}`" for f in p.capabilities.formats) for p in presets])
    row("transparent background", [" or ".join(p.capabilities.transparent_formats) for p in presets])
    row("n", [f"1–{p.capabilities.max_n}" for p in presets])
    row("input images", [f"1–{p.capabilities.max_images}" for p in presets])
    row("prompt", [f"≤ {p.capabilities.max_prompt_chars:,} characters" for p in presets])
    lines += [
        "",
        "gpt-image-2's sizes: `\"auto\"`, or `WxH` with both edges multiples of 16, the longest "
        "at most 3840, long:short at most 3:1, and 655,360 to 8,294,400 pixels in all: 1024x1024, "
        "1536x1024, 1024x1536, 2048x2048, 2048x1152 and 3840x2160 are common, 1200x624 (close to "
        "a 1200x630 social card) fits too; above 2560x1440 the API calls it experimental. "
        "`\"auto\"` lets the API choose (the placeholder renders 1024x1024).",
        "",
        "On aimlapi a generation with `n > 1` is sent as n requests of one image (its API takes "
        "only `n = 1` there); edits send `n` in one request.",
        "",
    ]
    return lines


def render() -> str:
    from imgbuild.manifest import (
        BUILTIN_DEFAULTS,
        CacheTable,
        DEFAULT_COMPRESSION,
        ManifestFile,
        Params,
        Prices,
        ProviderTable,
        TargetTable,
        json_schema,
    )
    from imgbuild.providers.rules import OPENAI_CAPABILITIES
    from imgbuild.resolve import OWN_FIELDS

    schema = json_schema()
    defs = schema["$defs"]
    facts = {
        "own_fields": ", ".join(f"`{f}`" for f in sorted(OWN_FIELDS)),
        "max_prompt": OPENAI_CAPABILITIES.max_prompt_chars,
        "max_images": OPENAI_CAPABILITIES.max_images,
        "builtin": ", ".join(f"`{k} = {_toml(v)}`" for k, v in BUILTIN_DEFAULTS.items()),
        "compression": DEFAULT_COMPRESSION,
    }
    params = list(Params.model_fields)
    names = [info.alias or f for f, info in TargetTable.model_fields.items()]
    own = [f for f in names if f not in params and f not in DERIVED_FIELDS]
    sections: list[tuple[str, str, dict[str, Any], list[str], str]] = [
        ("ManifestFile", "ManifestFile", schema, list(ManifestFile.model_fields), ""),
        ("ProviderTable", "ProviderTable", defs["ProviderTable"], list(ProviderTable.model_fields),
         "Which API builds the images, and how hard to push it. Everything here is optional; a "
         "manifest without `[provider]` uses the openai preset."),
        ("Prices", "Prices", defs["Prices"], list(Prices.model_fields),
         "Prices for the cost estimate (`build -n`, `--max-cost`, `confirm_above`) and for the "
         "cost recorded from a response's token `usage`. An aimlapi response says what it cost "
         "in USD, and that figure is recorded as it is."),
        ("CacheTable", "CacheTable", defs["CacheTable"], list(CacheTable.model_fields),
         "A remote cache shared by a team and its CI (S3, Google Cloud Storage, Azure, a folder, or "
         "a plain HTTP cache): a target the local cache cannot restore is looked up there before "
         "a request is made, and every image a build pays for is uploaded to it. See "
         "[the remote cache](design.md#the-remote-cache) and [CI](ci.md#a-remote-cache-shared-by-the-team-and-ci)."),
        ("Params", "Params", defs["Params"], params,
         "Defaults for every target: any target field except `prompt`, `prompt_file`, `output`, "
         "`images` and `mask`. A target's own value wins; where neither sets a parameter, "
         "imgbuild's own default applies (the default column)."),
        ("TargetTable", "TargetTable", defs["TargetTable"], own,
         "One image target (or `n` of them). Its name is the table key. Besides the fields below, "
         "a target takes every field of `[defaults]`: " + ", ".join(f"`{p}`" for p in params) + "."),
        ("TargetTable", "Derived", defs["TargetTable"], list(DERIVED_FIELDS), DERIVED.format(**facts)),
    ]
    lines = [INTRO.format(**facts)]
    for model, key, part, fields, lead in sections:
        lines += [f"## {TITLES[key]}", ""]
        if lead:
            lines += [lead, ""]
        lines += _table(model, part, defs, fields, facts)
        lines.append("")
        if model == "ManifestFile":
            lines += ["### `[vars]`", "",
                      "Strings by name. `${name}` in a prompt or a prompt file is replaced by the "
                      "value; `$$` is a literal `$`; a `$` not followed by `{` or `$` stays as it "
                      "is. A var may use other vars (`style = \"${base} art\"`): they are resolved "
                      "first, however deep; vars that use each other in a cycle are an error naming "
                      "the cycle (`vars.a: the vars use each other in a cycle: a → b → a`). A `${…}` "
                      "that cannot be resolved (an undefined name, a `${` never closed) is an error "
                      "where it is written, never text sent to the API. A var changes specs only "
                      "through the prompts that use it: editing `style` rebuilds exactly the targets "
                      "whose prompts say `${style}`, directly or through another var.", ""]
    lines.append(RESOLUTION.format(**facts))
    lines += _provider_rules(facts)
    lines.append(EDITOR)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/manifest.md is out of step")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is out of step; run: python tools/gen_manifest_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
