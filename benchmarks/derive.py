"""Derived images benchmark (issue 11): how derived work uses the cores, and that it runs beside
requests instead of after them.

Makes a project of S committed 1536x1024 PNGs (noise, so that encoders work as on a photo) and
200 derived targets, each one of them resized to one of 3 widths as webp (quality 80). Whole
`imgbuild build` processes are timed, each from nothing (no outputs, no lock, an empty cache):

(a) the 200 derivations with the pool at 1 worker and at 2 (IMGBUILD_DERIVE_WORKERS): the
    speed-up, bar at least 1.6x on 2 cores;
(b) a mixed build: 8 slow requests (the placeholder provider, IMGBUILD_PLACEHOLDER_DELAY chosen so
    that the requests alone take about as long as the derivations alone) plus the 200 derivations,
    with the pool at its default size: bar, no longer than the slower of the two alone, plus 15%.

The load average before and after each part is printed: on a shared machine the figures move.

    python benchmarks/derive.py [--derivations 200] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTHS = (480, 960, 1440)
REQUESTS = 8


def make_sources(root: Path, count: int) -> None:
    from PIL import Image

    (root / "art").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise = Image.effect_noise((1536, 1024), 40 + i % 20).convert("RGB")
        gradient = Image.linear_gradient("L").resize((1536, 1024)).convert("RGB")
        Image.blend(noise, gradient, 0.5).save(root / "art" / f"photo-{i:03d}.png")


def manifest(derivations: int, requests: int) -> str:
    lines = ["[provider]", 'name = "placeholder"', "concurrency = 4", ""]
    for i in range(requests):
        lines += [f"[images.request-{i}]", f'prompt = "A slow request number {i}"', 'size = "1024x1024"', ""]
    for i in range(derivations):
        width = WIDTHS[i % len(WIDTHS)]
        lines += [f"[images.d{i:03d}]", f'from = "art/photo-{i // len(WIDTHS):03d}.png"', f'resize = "{width}x"',
                  f'output = "site/d{i:03d}.webp"', "output_compression = 80", ""]
    return "\n".join(lines)


# CPU seconds (user + system) of each build's own process: the event loop's share. The workers are
# the fork server's children, not the build's, so their CPU is not in it.
CPU_S: list[float] = []


def build(root: Path, text: str, env: dict[str, str]) -> float:
    """One build from nothing: seconds of wall time (its CPU seconds go to CPU_S)."""
    for rel in ("site", "build", ".imgbuild", "cache", "images.lock"):
        path = root / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    (root / "images.toml").write_text(text)
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(root / "cache"), **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "imgbuild", "-C", str(root), "build", "-q"], env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"build failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def medians(runs: int, root: Path, builds: list[tuple[str, dict[str, str]]]) -> list[float]:
    """The median wall time of each build, the builds taken in turn run after run: on a shared
    machine a change of load then weighs on all of them alike."""
    times: list[list[float]] = [[] for _ in builds]
    for _ in range(runs):
        for i, (text, env) in enumerate(builds):
            times[i].append(build(root, text, env))
    return [statistics.median(t) for t in times]


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--derivations", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-derive-"))
    root.mkdir(parents=True, exist_ok=True)
    sources = -(-args.derivations // len(WIDTHS))
    make_sources(root, sources)
    print(f"python {platform.python_version()}, {os.cpu_count()} cores; {args.derivations} derivations "
          f"from {sources} 1536x1024 PNGs; median of {args.runs} runs")

    only_derived = manifest(args.derivations, 0)
    print(f"(a) load before: {load()}")
    one, two = medians(args.runs, root, [(only_derived, {"IMGBUILD_DERIVE_WORKERS": "1"}),
                                         (only_derived, {"IMGBUILD_DERIVE_WORKERS": "2"})])
    cpu = statistics.median(CPU_S)
    speedup = one / two
    print(f"(a) CPU of the build process (not its workers) {cpu:.2f} s: {1000 * cpu / args.derivations:.0f} ms "
          "a derivation, start-up included")
    print(f"(a) 1 worker {one:.2f} s, 2 workers {two:.2f} s: speed-up {speedup:.2f}x "
          f"({args.derivations / two:.0f} derivations/s); bar 1.6x: {'pass' if speedup >= 1.6 else 'FAIL'}; "
          f"load after: {load()}")

    # 8 requests, 4 at a time: two waves, each as long as the derivations at 2 workers.
    delay = two / (REQUESTS / 4)
    slow = {"IMGBUILD_PLACEHOLDER_DELAY": f"{delay:.2f}"}
    print(f"(b) load before: {load()}")
    derived_alone, requests_alone, mixed = medians(args.runs, root, [
        (only_derived, {}), (manifest(0, REQUESTS), slow), (manifest(args.derivations, REQUESTS), slow)])
    bar = max(derived_alone, requests_alone) * 1.15
    print(f"(b) derivations alone {derived_alone:.2f} s, {REQUESTS} requests alone ({delay:.2f} s each) "
          f"{requests_alone:.2f} s, both in one build {mixed:.2f} s; bar {bar:.2f} s: "
          f"{'pass' if mixed <= bar else 'FAIL'}; load after: {load()}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
