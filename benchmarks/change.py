"""Change benchmark: what a build costs when little or nothing changed, in a large project.

Generates a manifest of N targets (default 10,000; prompts of ~200 characters, every tenth target
an edit of the one before it plus committed art, as in noop.py) with the placeholder provider, then
times whole `imgbuild` processes:

(c) the first build: wall time, how many times it wrote the whole `images.lock` (counted by
    IMGBUILD_TRACE_LOCK_WRITES; bar: at most one per second of build, plus one), and the split of
    its CPU between rendering the placeholders and the engine (rendering measured in this process
    on a sample of the same requests, scaled to N);
(a) one prompt edited (a different target each run, same length or not), then `build`: bar 0.3 s,
    the placeholder render of that one target included; each run's build must report exactly one
    target built;
(b) every output deleted, then `build` restores them all from the cache: bar 15 s at 10,000.

    python benchmarks/change.py [--targets 10000] [--runs 7] [--keep DIR] [--dev-script] [--no-restore]

imgbuild runs as noop.py runs it: a console script in a venv of its own, the checkout compiled as
pip compiles what it installs (this environment's PYTHONDONTWRITEBYTECODE would otherwise compile
imgbuild's modules again at every start, ~0.1 s); --dev-script times the dev venv's script instead.
Each figure is printed with the load average at the time: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
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

WORDS = ("knight castle dragon forest river lantern meadow tower banner shield goblin crystal "
         "harbor galleon desert oasis glacier volcano orchard village").split()


def prompt_of(i: int, edit: int = 0) -> str:
    words = " ".join(WORDS[(i + k + edit) % len(WORDS)] for k in range(12))
    prompt = f"Target {i}: a scene with {words}, seen from afar at golden hour, ${{style}}"
    return (prompt + " with fine detail" * 10)[:200]


def make_project(root: Path, n: int) -> None:
    from PIL import Image

    (root / "art").mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (256, 256), (200, 120, 40, 255)).save(root / "art" / "base.png")
    lines = ['out_dir = "assets"', "", "[provider]", 'name = "placeholder"', "concurrency = 4", "",
             "[vars]", 'style = "flat vector art, thick outlines, pastel palette"', ""]
    for i in range(n):
        lines.append(f"[images.t{i:05d}]")
        lines.append(f'prompt = "{prompt_of(i)}"')
        lines.append('size = "1024x640"')
        if i % 10 == 9:  # an edit of the previous target (a chain), plus committed art
            lines.append(f'images = ["assets/t{i - 1:05d}.png", "art/base.png"]')
        lines.append("")
    (root / "images.toml").write_text("\n".join(lines))


def run(exe: str, args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"imgbuild {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def summary_of(stdout: str) -> dict[str, object]:
    return json.loads(stdout.strip().splitlines()[-1])


def render_cpu_per_target(root: Path, n: int, sample: int) -> float:
    """CPU seconds one placeholder render of this project's targets takes, in this process."""
    from imgbuild.providers.base import ImageRequest
    from imgbuild.providers.placeholder import render

    out = Path(tempfile.mkdtemp(prefix="imgbuild-render-"))
    try:
        t0 = time.process_time()
        for k in range(sample):
            i = k * (n // sample)
            images = (root / f"assets/t{i - 1:05d}.png", root / "art/base.png") if i % 10 == 9 else ()
            request = ImageRequest(target=f"t{i:05d}", model="gpt-image-2", prompt=prompt_of(i), size="1024x640",
                                   quality="medium", output_format="png", background="auto", moderation="auto",
                                   output_compression=None, n=1, images=images, mask=None, extra={})
            render(request, 0, out / f"{k}.png")
        return (time.process_time() - t0) / sample
    finally:
        shutil.rmtree(out, ignore_errors=True)


def edit_prompt(root: Path, i: int, round_: int) -> None:
    """Give target i a new prompt of the same length (its table's text changes, nothing else)."""
    manifest = root / "images.toml"
    text = manifest.read_text()
    old = f'[images.t{i:05d}]\nprompt = "'
    start = text.index(old) + len(old)
    end = text.index('"', start)
    # A prompt never built before (else the run cache restores it): the same length, a fresh tail.
    new = prompt_of(i, round_ + 1)[:-11] + f" #{time.time_ns() % 10**9:09d}"
    manifest.write_text(text[:start] + new + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the project here and keep it (reused if built)")
    parser.add_argument("--dev-script", action="store_true", help="time the dev venv's imgbuild script")
    parser.add_argument("--no-restore", action="store_true", help="skip (b), which deletes every output")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-change-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dev_script:
        exe = shutil.which("imgbuild", path=str(Path(sys.executable).parent)) or "imgbuild"
    else:
        from noop import launcher

        exe = launcher(work)
    root = work / f"p{args.targets}"
    trace = work / "lock-writes"
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(work / "cache"), "IMGBUILD_TRACE_LOCK_WRITES": str(trace)}
    env.pop("IMGBUILD_PROVIDER", None)
    n = args.targets
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; load average {os.getloadavg()[0]:.1f}")

    # (c) the first build
    if not (root / "images.lock").exists():
        make_project(root, n)
        trace.unlink(missing_ok=True)
        wall, cpu, out = run(exe, ["build", "--json", "-q", "-j", "4"], root, env)
        writes = len(trace.read_text().split()) if trace.exists() else 0
        per_render = render_cpu_per_target(root, n, min(200, n))
        render_s = per_render * n
        print(f"(c) first build of {n} targets: {wall:.1f} s wall, {cpu:.1f} s CPU; whole-lock writes: {writes} "
              f"(bar {int(wall) + 1}: one per second of build plus one)")
        print(f"    CPU split: rendering ~{render_s:.1f} s ({per_render * 1000:.1f} ms a target, measured on "
              f"{min(200, n)} renders), engine ~{cpu - render_s:.1f} s ({(cpu - render_s) / n * 1000:.2f} ms a target)")
        assert summary_of(out)["built"] == n
    # Settle the stat cache's racily clean entries (files written moments before it was saved).
    run(exe, ["build", "-q"], root, env)

    # (a) one prompt edited
    samples, cpus = [], []
    for r in range(args.runs):
        i = (r * 997 + 5) % n
        edit_prompt(root, i, r)
        wall, cpu, out = run(exe, ["build", "--json", "-q"], root, env)
        cpus.append(cpu)
        built = summary_of(out)["built"]
        if built != 1:
            raise SystemExit(f"one prompt edited: expected 1 target built, got {built}")
        samples.append(wall)
    print(f"(a) one prompt edited in {n} targets, build: median {statistics.median(samples):.3f} s wall, "
          f"{statistics.median(cpus):.3f} s CPU (bar 0.3 s; runs: {', '.join(f'{s:.3f}' for s in samples)}); "
          f"load average {os.getloadavg()[0]:.1f}")

    if args.no_restore:
        return
    # (b) restore every deleted output
    outputs = sorted((root / "assets").glob("*.png"))
    for p in outputs:
        p.unlink()
    trace.unlink(missing_ok=True)
    wall, cpu, out = run(exe, ["build", "--json", "-q"], root, env)
    restored = summary_of(out)["restored"]
    writes = len(trace.read_text().split()) if trace.exists() else 0
    print(f"(b) restore of {len(outputs)} deleted outputs: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(bar 15 s); restored {restored}, whole-lock writes {writes}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
