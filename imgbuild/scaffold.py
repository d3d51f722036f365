"""`imgbuild init`: a commented starter manifest. The tables are written with tomli-w; the
comments around them are ours."""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

SECTIONS: list[tuple[str, dict[str, object]]] = [
    (
        "# imgbuild manifest: every image this project needs. `imgbuild build` makes what changed.\n"
        "# Paths are relative to this file. Reference: `imgbuild schema`, docs/manifest.md.\n",
        {"out_dir": "build/images"},
    ),
    (
        "# Which API builds the images. `placeholder` renders offline; `openai` reads OPENAI_API_KEY,\n"
        "# `aimlapi` reads AIMLAPI_API_KEY. --provider on the command line overrides it.\n",
        {"provider": {"name": "placeholder", "concurrency": 4}},
    ),
    (
        "# Defaults for every target (any target field except prompt, images, mask, output).\n",
        {"defaults": {"quality": "medium", "size": "1024x1024"}},
    ),
    (
        "# ${name} in prompts is replaced from here; $$ is a literal $.\n",
        {"vars": {"style": "flat vector art, thick outlines, pastel palette"}},
    ),
    (
        "# A target: its name is the table key. Change its prompt and the next build remakes it.\n",
        {"images": {"logo": {"prompt": "A round logo of a paper boat, ${style}", "output": "build/images/logo.png",
                             "background": "transparent"}}},
    ),
    (
        "# An edit: `images` are its inputs (here the logo above, so it is built after it).\n",
        {"images": {"logo-night": {"prompt": "The same logo at night under a crescent moon, ${style}",
                                   "images": ["build/images/logo.png"], "output": "build/images/logo-night.webp"}}},
    ),
]


def starter_text() -> str:
    import tomli_w

    return "\n".join(comment + tomli_w.dumps(data) for comment, data in SECTIONS)


def write_starter(directory: str, manifest: str = "images.toml") -> Path:
    path = Path(directory) / manifest
    if path.exists():
        raise UsageError(f"{path} already exists; init never overwrites a manifest")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as f:
        f.write(starter_text())
    return path
