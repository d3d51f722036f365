"""Throughput and memory of real builds against the local API server (issue 3's acceptance bars).

    .venv/bin/python benchmarks/throughput.py [--latency 1.0] [--jobs 8]

The server (tests/apiserver.py) runs as its own process with a fixed latency per request, so the
figures are the client's alone. Every build is the real CLI in a subprocess, with a fresh project
and a fresh cache; its CPU time and peak RSS come from wait4(), i.e. from the kernel:

1. 64 independent 1024x1024 targets at -j 8: wall time against the ideal 64/8 x latency (bar 1.15x),
   and client CPU per image.
2. 200 targets of 2048x2048 PNG (about 6 MB each, 8 MB as base64): peak RSS (bar 200 MB).
3. one edit with 16 inputs of 20 MB each: peak RSS minus that of a one-target generation
   (bar 64 MB); and the same for the provider alone, without the engine around it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
KEY_ENV = "IMGBUILD_BENCH_KEY"
KEY = "sk-imgbuild-bench-0c1d2e3f405162738495a6b7c8d9e0f1"


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    code: int
    out: str


def measured(cmd: list[str], env: dict[str, str]) -> Run:
    """Run ``cmd``; its wall time, CPU time and peak RSS as the kernel counted them."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
               text)


class Server:
    """tests/apiserver.py in its own process, on a free port."""

    def __init__(self, latency_s: float) -> None:
        self.proc = subprocess.Popen(
            [str(PYTHON), str(ROOT / "tests" / "apiserver.py"), "--port", "0", "--latency",
             str(latency_s), "--key", KEY, "--warm", "1024x1024", "2048x2048"],
            stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests",
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the server did not start: {line!r}")
        self.base_url = line.split()[-1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def project(root: Path, base_url: str, targets: str, jobs: int) -> Path:
    # The manifest keeps the default concurrency (4): -j on the command line must win, engine and
    # provider limiter alike.
    root.mkdir(parents=True)
    (root / "images.toml").write_text(textwrap.dedent(f"""\
        [provider]
        name = "compatible"
        model = "gpt-image-2"
        api_key_env = "{KEY_ENV}"
        base_url = "{base_url}"
        timeout = 600
        """) + targets)
    return root


def build(root: Path, base_url: str, jobs: int) -> Run:
    cache = root.parent / f"{root.name}-cache"
    env = {**os.environ, KEY_ENV: KEY, "IMGBUILD_CACHE_DIR": str(cache), "NO_COLOR": "1"}
    run = measured([str(ROOT / ".venv" / "bin" / "imgbuild"), "-C", str(root), "build", "-j",
                    str(jobs), "--provider", "compatible", "--base-url", base_url, "--json"], env)
    if run.code != 0:
        raise RuntimeError(f"build in {root} failed ({run.code}):\n{run.out[-3000:]}")
    return run


def noise_png(path: Path, n_bytes: int) -> None:
    from PIL import Image

    side = int((n_bytes / 3) ** 0.5)
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        path, "PNG", compress_level=0)


PROVIDER_EDIT = """
import asyncio, os, resource, sys
from pathlib import Path
from imgbuild.providers import ImageRequest, ProviderSettings, open_provider
inputs = tuple(Path(p) for p in sys.argv[3:])
stage = Path(sys.argv[2])
def req(images):
    return ImageRequest("bench", "gpt-image-2", "edit " + str(len(images)), "1024x1024", "medium",
                        "png", "auto", "auto", None, 1, images=images)
async def main():
    p = open_provider(ProviderSettings("compatible", "gpt-image-2", "KEY_ENV", sys.argv[1]))
    await p.generate(req(inputs[:1]), stage)   # warm: client, Pillow, one small upload
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await p.generate(req(inputs), stage)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await p.aclose()
    print((after - before) / 1024)
asyncio.run(main())
""".replace("KEY_ENV", KEY_ENV)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--targets", type=int, default=64)
    parser.add_argument("--big-targets", type=int, default=200)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.system()} {platform.release()}")
    server = Server(args.latency)
    try:
        with tempfile.TemporaryDirectory(prefix="imgbuild-bench-") as tmp:
            scratch = Path(tmp)
            run_all(scratch, server.base_url, args)
    finally:
        server.close()


def run_all(scratch: Path, base_url: str, args: argparse.Namespace) -> None:
    jobs, latency = args.jobs, args.latency

    # 1. independent targets
    targets = "".join(f'[images.t{i:03}]\nprompt = "picture number {i}"\n'
                      for i in range(args.targets))
    run = build(project(scratch / "many", base_url, targets, jobs), base_url, jobs)
    ideal = -(-args.targets // jobs) * latency
    print(f"{args.targets} targets of 1024x1024 at -j {jobs}, {latency:g} s latency: "
          f"{run.wall_s:.2f} s (ideal {ideal:.0f} s, ratio {run.wall_s / ideal:.3f}, bar 1.15); "
          f"client CPU {run.cpu_s:.2f} s = {1000 * run.cpu_s / args.targets:.0f} ms per image; "
          f"peak RSS {run.peak_rss_mb:.0f} MB")

    # 2. big images
    targets = "".join(f'[images.b{i:03}]\nprompt = "big picture {i}"\nsize = "2048x2048"\n'
                      for i in range(args.big_targets))
    run = build(project(scratch / "big", base_url, targets, jobs), base_url, jobs)
    print(f"{args.big_targets} targets of 2048x2048 PNG at -j {jobs}: peak RSS "
          f"{run.peak_rss_mb:.0f} MB (bar 200), {run.wall_s:.1f} s, client CPU "
          f"{1000 * run.cpu_s / args.big_targets:.0f} ms per image")

    # 3. a 16 x 20 MB edit against a one-target generation
    inputs_dir = scratch / "inputs"
    inputs_dir.mkdir()
    noise_png(inputs_dir / "in00.png", 20 * 2**20)
    inputs = [inputs_dir / "in00.png"]
    for i in range(1, 16):
        inputs.append(inputs_dir / f"in{i:02}.png")
        os.link(inputs[0], inputs[-1])
    base = build(project(scratch / "one", base_url, '[images.one]\nprompt = "one picture"\n',
                         jobs), base_url, jobs)
    listed = ", ".join(f'"in/{p.name}"' for p in inputs)
    edit_root = project(scratch / "edit", base_url,
                        f'[images.edit]\nprompt = "sixteen into one"\nimages = [{listed}]\n',
                        jobs)
    (edit_root / "in").mkdir()
    for p in inputs:  # inside the project, as the manifest requires (hard links: no copies)
        os.link(p, edit_root / "in" / p.name)
    edit = build(edit_root, base_url, jobs)
    total_mb = sum(p.stat().st_size for p in inputs) / 2**20
    print(f"edit with 16 inputs ({total_mb:.0f} MB) through the CLI: peak RSS "
          f"{edit.peak_rss_mb:.0f} MB vs {base.peak_rss_mb:.0f} MB for one generation: "
          f"+{edit.peak_rss_mb - base.peak_rss_mb:.0f} MB (bar 64), {edit.wall_s:.1f} s")

    stage = scratch / "stage"
    stage.mkdir()
    env = {**os.environ, KEY_ENV: KEY}
    alone = measured([str(PYTHON), "-c", PROVIDER_EDIT, base_url, str(stage),
                      *map(str, inputs)], env)
    if alone.code != 0:
        raise RuntimeError(alone.out)
    print(f"the same edit through the provider alone: peak RSS +{float(alone.out.split()[-1]):.1f} "
          f"MB over a one-input edit")


if __name__ == "__main__":
    sys.exit(main())
