"""No-op benchmark: how long `imgbuild status` and `imgbuild build` take when nothing changed.

Generates manifests of 1,000 and 10,000 targets (prompts of ~200 characters, every tenth target an
edit of the one before it, so there are edits and chains), builds each once with the placeholder
provider, then times whole processes: the median of N runs of no-op `status`, no-op `build`, and
`imgbuild --help`. Bars (issue 2): 10,000-target no-op build ≤ 1.0 s; --help ≤ 0.15 s.

    python benchmarks/noop.py [--sizes 1000 10000] [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("knight castle dragon forest river lantern meadow tower banner shield goblin crystal "
         "harbor galleon desert oasis glacier volcano orchard village").split()


def make_project(root: Path, n: int) -> None:
    from PIL import Image

    (root / "art").mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (256, 256), (200, 120, 40, 255)).save(root / "art" / "base.png")
    lines = ['out_dir = "assets"', "", "[provider]", 'name = "placeholder"', "concurrency = 4", "",
             "[vars]", 'style = "flat vector art, thick outlines, pastel palette"', ""]
    for i in range(n):
        words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))
        prompt = f"Target {i}: a scene with {words}, seen from afar at golden hour, ${{style}}"
        prompt = (prompt + " with fine detail" * 10)[:200]
        lines.append(f"[images.t{i:05d}]")
        lines.append(f'prompt = "{prompt}"')
        lines.append('size = "1024x640"')
        if i % 10 == 9:  # an edit of the previous target (a chain), plus committed art
            lines.append(f'images = ["assets/t{i - 1:05d}.png", "art/base.png"]')
        lines.append("")
    (root / "images.toml").write_text("\n".join(lines))


def timed(cmd: list[str], cwd: Path, env: dict[str, str], runs: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        samples.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return statistics.median(samples), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the projects here and keep them")
    args = parser.parse_args()

    exe = shutil.which("imgbuild", path=str(Path(sys.executable).parent)) or "imgbuild"
    work = args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-noop-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(work / "cache")}
    env.pop("IMGBUILD_PROVIDER", None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")

    help_median, help_samples = timed([exe, "--help"], work, env, max(args.runs, 10))
    print(f"imgbuild --help: median {help_median * 1000:.0f} ms over {len(help_samples)} runs (bar 150 ms)")

    for n in args.sizes:
        root = work / f"p{n}"
        if not (root / "images.lock").exists():
            make_project(root, n)
            t0 = time.perf_counter()
            proc = subprocess.run([exe, "build", "-q", "-j", "4"], cwd=root, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"initial build failed: {proc.stderr[-800:]}")
            print(f"{n} targets: first build {time.perf_counter() - t0:.1f} s (placeholder renders)")
        size_mb = (root / "images.toml").stat().st_size / 1e6
        lock_mb = (root / "images.lock").stat().st_size / 1e6
        # One no-op build first: it warms the page cache and settles the stat cache's entries for
        # the files the first build wrote moments before saving it (see imgbuild/statcache.py).
        subprocess.run([exe, "build", "-q"], cwd=root, env=env, capture_output=True)
        status_median, _ = timed([exe, "status", "-q"], root, env, args.runs)
        build_median, samples = timed([exe, "build", "-q"], root, env, args.runs)
        print(f"{n} targets (manifest {size_mb:.1f} MB, lock {lock_mb:.1f} MB): no-op status median "
              f"{status_median:.3f} s, no-op build median {build_median:.3f} s "
              f"(runs: {', '.join(f'{s:.3f}' for s in samples)})")


if __name__ == "__main__":
    main()
