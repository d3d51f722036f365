"""Review page benchmark: `imgbuild review` on 1,000 built targets, cold and warm thumbnail cache.

It writes a manifest of N generation targets (prompts of ~200 characters, 1024x1024 png), builds
them with the placeholder provider (real PNGs from the real build path, ~60 kB each), then changes
the prompt of every tenth target and builds again, so that a tenth of the cards also show an
earlier image under an older spec. Then it times whole `imgbuild review` processes:

- cold: no thumbnails yet (``.imgbuild/review/`` removed before each run): every image is decoded,
  scaled and encoded to webp once;
- warm: the thumbnails exist (the page is written again: plan, history, stat of each thumbnail,
  HTML).

With Playwright and Debian's chromium it also times opening the page from disk in headless Chromium
(to the load event: the thumbnails in view are loaded; the rest load lazily as one scrolls).

    python benchmarks/review.py [--targets 1000] [--runs 5] [--keep DIR]

Bar (issue 12): warm ≤ 1 s at 1,000 targets.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("knight castle dragon forest river lantern meadow tower banner shield goblin crystal "
         "harbor galleon desert oasis glacier volcano orchard village").split()


def write_manifest(root: Path, n: int, *, changed: bool = False) -> None:
    lines = ['out_dir = "assets"', "", "[provider]", 'name = "placeholder"', "concurrency = 4", ""]
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(24))
        mood = "at dusk" if changed and i % 10 == 0 else "at dawn"
        lines += [f"[images.t{i:05d}]", f'prompt = "Target {i} {mood}: {words}"', 'quality = "low"', ""]
    (root / "images.toml").write_text("\n".join(lines), encoding="utf-8")


def imgbuild(root: Path, *args: str, env: dict[str, str]) -> float:
    return timed(root, *args, env=env)[0]


def timed(root: Path, *args: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its threads): on a shared, loaded machine the
    CPU time is the figure that does not depend on the neighbours."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgbuild", "-C", str(root), *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _line(label: str, runs: list[tuple[float, float]]) -> str:
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    return (f"{label}: median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU  (runs: "
            + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs) + ")")


def open_in_chromium(page: Path) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not os.access("/usr/bin/chromium", os.X_OK):
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.perf_counter()
        tab.goto(page.as_uri(), wait_until="load")
        seconds = time.perf_counter() - started
        browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the project here and keep it (reused if built)")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-review-bench-"))
    root, cache = base / "proj", base / "cache"
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # timed as installed: compiled once, as pip does
    if not (root / "images.lock").exists():
        root.mkdir(parents=True, exist_ok=True)
        write_manifest(root, args.targets)
        print(f"building {args.targets} targets with the placeholder ...", flush=True)
        print(f"  first build {imgbuild(root, 'build', '-q', env=env):.1f} s", flush=True)
        write_manifest(root, args.targets, changed=True)
        print(f"  a tenth changed {imgbuild(root, 'build', '-q', env=env):.1f} s", flush=True)
    page_dir = root / ".imgbuild" / "review"

    imgbuild(root, "status", env=env)  # compiles the modules once, as an install would have
    load = os.getloadavg()[0]
    cold = []
    for _ in range(max(1, args.runs // 2)):
        shutil.rmtree(page_dir, ignore_errors=True)
        cold.append(timed(root, "review", env=env))
    thumbs = sum(1 for _ in (page_dir / "thumbs").rglob("*.webp"))
    warm = [timed(root, "review", env=env) for _ in range(args.runs)]
    size_kb = (page_dir / "index.html").stat().st_size / 1024
    print(f"targets {args.targets}, thumbnails {thumbs}, page {size_kb:.0f} kB, cpus {os.cpu_count()}, "
          f"load {load:.1f} → {os.getloadavg()[0]:.1f}")
    print(_line("imgbuild review, cold thumbnails", cold))
    print(_line("imgbuild review, warm thumbnails", warm))
    opened = open_in_chromium(page_dir / "index.html")
    if opened is not None:
        print(f"open from disk in headless Chromium, to the load event: {opened:.2f} s")
    wall, cpu = statistics.median(w for w, _ in warm), statistics.median(c for _, c in warm)
    print(f"bar: warm ≤ 1 s: wall {'ok' if wall <= 1.0 else 'OVER'}, CPU {'ok' if cpu <= 1.0 else 'OVER'}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
