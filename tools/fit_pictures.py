#!/usr/bin/env python3
"""Make the pictures of the `fit` modes in docs/manifest.md with imgbuild itself: one 1536x1024
placeholder generation, and one derived target per fit mode (``resize = "256x256"``).

    python tools/fit_pictures.py      # rewrites docs/img/fit-*.png
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FITS = ("cover", "contain", "fill", "inside")

MANIFEST = """\
[provider]
name = "placeholder"

[images.input]
prompt = "A lighthouse on a cliff at dusk"
size = "1536x1024"
background = "transparent"
output = "art/input.png"

[images.fit-input]
from = "art/input.png"
resize = "384x"
output = "img/fit-input.png"
""" + "".join(f"""
[images.fit-{fit}]
from = "art/input.png"
resize = "256x256"
fit = "{fit}"
output = "img/fit-{fit}.png"
""" for fit in FITS)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "images.toml").write_text(MANIFEST, encoding="utf-8")
        env = {**os.environ, "IMGBUILD_CACHE_DIR": str(project / "cache")}
        subprocess.run([sys.executable, "-m", "imgbuild", "build", "-q"], cwd=project, env=env, check=True)
        out = ROOT / "docs" / "img"
        out.mkdir(exist_ok=True)
        for name in ("input", *FITS):
            shutil.copyfile(project / "img" / f"fit-{name}.png", out / f"fit-{name}.png")
            print(f"wrote docs/img/fit-{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
