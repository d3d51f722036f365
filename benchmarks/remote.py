"""Restore from the remote cache: 1,000 targets of 1536x1024 PNG (about 2 MB each) from an S3
server on loopback into a fresh clone with an empty local cache, with `imgbuild build` (issue 13's
bar: at most 20 s on 2 cores), and what a remote costs a no-op build (bar: at most 10 %; a no-op
opens no connection).

    .venv/bin/python benchmarks/remote.py [--count 1000] [--restores 1] [--runs 9] [--keep DIR]

The server is moto in server mode (tests/s3server.py), in its own process, so the figures include
a real HTTP S3 server's cost on the same 2 cores (about 10 ms of Python per request, whatever its
size). The steps, each a whole `imgbuild` process as a user runs it:

1. A first clone: a manifest of N targets (placeholder provider, 1536x1024, `[cache] remote`),
   noisy PNGs of about 2 MB at their outputs adopted with `imgbuild accept`, then
   `imgbuild cache push` (timed: the upload), and a run entry per spec put by the store, as the
   builds that made them would have.
2. Restore by the lock: a fresh clone with the committed manifest and images.lock, no outputs, an
   empty local cache: `imgbuild build` fetches every object (one GET each; checked against its
   sha256, synced in batches, renamed into the local cache) and restores each output from there
   as soon as its object is in.
3. Restore by run entries: a clone with the manifest only: a run entry, then the object, per target
   (each target asks for its entry as it starts, so restores begin with the first answer).
   Steps 2 and 3 are taken in turn ``--restores`` times, each into a new clone and an empty cache,
   each after an (untimed) ``sync``, so that none pays for writing back the previous one's 4 GB.
4. No-op: the restored clone's `build` again, with the remote configured (the S3 server stopped
   first, so that any connection would be a warning), against the same clone without `[cache]`:
   medians of alternating runs, fast path (the usual no-op) and full path (its state removed).

The load average is printed: other work on the machine moves the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from s3server import S3Server

from imgbuild.cache import OutputInfo, RunRecord, encode_run
from imgbuild.remote import open_remote

WIDTH, HEIGHT = 1536, 1024


def base_pngs(count: int) -> list[bytes]:
    """Noisy 1536x1024 PNGs of about 2 MB: noise in the top two thirds, flat below."""
    from PIL import Image

    table = bytes((i & 0x0F) * 8 + 40 for i in range(256))
    noisy_rows = HEIGHT * 2 // 3
    bases = []
    for _ in range(count):
        pixels = os.urandom(WIDTH * noisy_rows * 3).translate(table)
        pixels += bytes(WIDTH * (HEIGHT - noisy_rows) * 3)
        out = io.BytesIO()
        Image.frombytes("RGB", (WIDTH, HEIGHT), pixels).save(out, "PNG", compress_level=1)
        bases.append(out.getvalue())
    return bases


def variant(png: bytes, n: int) -> bytes:
    """``png`` with a tEXt chunk before IEND: a valid PNG with its own sha256."""
    body = b"tEXt" + b"imgbuild\0target %d" % n
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return png[:-12] + chunk + png[-12:]


def write_project(root: Path, count: int, remote: str | None) -> None:
    lines = ['[provider]', 'name = "placeholder"', "", "[defaults]", 'size = "1536x1024"', ""]
    for n in range(count):
        lines += [f"[images.t{n}]", f'prompt = "Target {n}: a harbour at dusk, seen from the hill"',
                  f'output = "assets/t{n}.png"', ""]
    if remote:
        lines += ["[cache]", f'remote = "{remote}"', ""]
    root.mkdir(parents=True, exist_ok=True)
    (root / "images.toml").write_text("\n".join(lines))


def imgbuild(root: Path, *args: str, cache: Path, check: bool = True) -> tuple[float, str, str]:
    """(wall s, stdout, stderr) of one whole `imgbuild` process."""
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "imgbuild", "-C", str(root), *args], capture_output=True,
                          text=True, env=env)
    wall = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise SystemExit(f"imgbuild {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-800:]}")
    return wall, proc.stdout, proc.stderr


def summary(stdout: str) -> dict[str, object]:
    return json.loads(stdout.strip().splitlines()[-1])


async def put_entries(url: str, lock: dict[str, dict[str, object]]) -> int:
    """A run entry per target, as the builds that made them would have put."""
    remote = open_remote(url, "readwrite")
    records = []
    for entry in lock.values():
        out = entry["outputs"][0]  # type: ignore[index]
        info = OutputInfo(out["sha256"], out["bytes"], WIDTH, HEIGHT, "PNG", out.get("git_blob", ""))
        records.append((entry["spec"], encode_run(RunRecord([info], "placeholder", 0.0, "2026-12-01T00:00:00Z"))))
    done = await asyncio.gather(*(remote.put_run(spec, record) for spec, record in records))  # type: ignore[arg-type]
    assert not remote.warnings, remote.warnings
    return sum(done)


def children_cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds the process ``pid`` (the S3 server) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Restore:
    wall_s: float
    user_s: float  # imgbuild's CPU, in Python and the libraries (hashing, HTTP)
    system_s: float  # imgbuild's CPU in the kernel: the bytes written to the cache and the outputs
    server_s: float  # the S3 server's CPU
    load: tuple[float, float]  # the load average (1 min) before and after


def restore(clone: Path, cache: Path, first: Path, count: int, server: S3Server) -> Restore:
    """A fresh clone's `imgbuild build`, timed."""
    assert server.proc is not None
    os.sync()  # not timed: the previous step's gigabytes are written back, not still being written during this one
    load = os.getloadavg()[0]
    (user, system), server_cpu = children_cpu_s(), process_cpu_s(server.proc.pid)
    wall, out, err = imgbuild(clone, "build", "--json", cache=cache)
    (user_end, system_end), server_end = children_cpu_s(), process_cpu_s(server.proc.pid)
    result = summary(out)
    assert result["restored"] == count and result["requests"] == 0 and result["fetched"] == count, result
    assert "warning" not in out + err, err
    for n in range(0, count, max(1, count // 50)):
        assert (clone / f"assets/t{n}.png").read_bytes() == (first / f"assets/t{n}.png").read_bytes()
    return Restore(wall, user_end - user, system_end - system, server_end - server_cpu, (load, os.getloadavg()[0]))


def no_op(with_remote: Path, without: Path, cache: Path, runs: int, full: bool) -> tuple[float, float]:
    """Medians (s) of alternating no-op builds of the two clones; ``full``: without the fast path."""
    times: dict[Path, list[float]] = {with_remote: [], without: []}
    for _ in range(runs):
        for root in times:
            if full:
                (root / ".imgbuild" / "noop.marshal").unlink(missing_ok=True)
            wall, out, err = imgbuild(root, "build", cache=cache)
            assert "nothing to do" in out and "warning" not in err, (out, err)
            times[root].append(wall)
    return statistics.median(times[with_remote]), statistics.median(times[without])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=9, help="no-op builds of each kind")
    parser.add_argument("--restores", type=int, default=1, help="restores by the lock and by run entries")
    parser.add_argument("--keep", type=Path, help="build in DIR and leave it there")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    server = S3Server().start()
    os.environ.update(server.env())
    os.environ.pop("IMGBUILD_CACHE_KEY", None)
    os.environ.pop("IMGBUILD_REMOTE_CACHE", None)
    bucket = "imgbuild-bench"
    server.create_bucket(bucket)
    url = f"s3://{bucket}/team/cache"
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="imgbuild-remote-bench-"))
    try:
        first, by_lock, by_entries = tmp / "clone-1", tmp / "clone-2", tmp / "clone-3"
        write_project(first, args.count, url)
        bases = base_pngs(4)
        (first / "assets").mkdir(exist_ok=True)
        for n in range(args.count):
            (first / f"assets/t{n}.png").write_bytes(variant(bases[n % len(bases)], n))
        total_mb = sum(p.stat().st_size for p in (first / "assets").iterdir()) / 1e6
        imgbuild(first, "accept", *(f"t{n}" for n in range(args.count)), cache=tmp / "cache-1")
        up_s, out, _ = imgbuild(first, "cache", "push", cache=tmp / "cache-1")
        assert f"push: {args.count} image(s) uploaded" in out, out
        lock = _lock_targets(first)
        assert asyncio.run(put_entries(url, lock)) == args.count

        restores: list[tuple[str, Restore]] = []
        for turn in range(args.restores):
            if turn:  # a new clone and an empty cache each turn; the last turn's stay for the no-op
                for old in (by_lock, by_entries, tmp / "cache-2", tmp / "cache-3"):
                    shutil.rmtree(old)
            for clone in (by_lock, by_entries):
                write_project(clone, args.count, url)
            shutil.copy(first / "images.lock", by_lock / "images.lock")
            restores.append(("build, fresh clone, by the lock:",
                             restore(by_lock, tmp / "cache-2", first, args.count, server)))
            restores.append(("build, fresh clone, by run entries:",
                             restore(by_entries, tmp / "cache-3", first, args.count, server)))

        server.stop()  # from here on, a connection attempt would be a warning
        without = tmp / "clone-2-without"
        shutil.copytree(by_lock, without, ignore=shutil.ignore_patterns(".imgbuild"))
        write_project(without, args.count, None)
        for root in (by_lock, without):  # settle: record each no-op's state, past the racy window
            imgbuild(root, "build", cache=tmp / "cache-2")
        time.sleep(1.1)
        for root in (by_lock, without):
            imgbuild(root, "status", cache=tmp / "cache-2")
        fast = no_op(by_lock, without, tmp / "cache-2", args.runs, full=False)
        full = no_op(by_lock, without, tmp / "cache-2", args.runs, full=True)
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; server: moto (S3 API over HTTP) on 127.0.0.1")
    print(f"{args.count} targets, {total_mb:.0f} MB of 1536x1024 PNG ({total_mb / args.count:.2f} MB each)")
    print(f"{'cache push (upload):':34} {up_s:6.2f} s  {total_mb / up_s:6.1f} MB/s")
    for name, r in restores:
        print(f"{name:34} {r.wall_s:6.2f} s  {total_mb / r.wall_s:6.1f} MB/s  (bar: 20 s) "
              f"{'PASS' if r.wall_s <= 20 else 'FAIL'}; CPU: imgbuild {r.user_s:.1f} s user + {r.system_s:.1f} s "
              f"system, S3 server {r.server_s:.1f} s; load {r.load[0]:.1f} -> {r.load[1]:.1f}")
    for name, (with_s, without_s) in (("no-op build, fast path:", fast), ("no-op build, full path:", full)):
        over = with_s / without_s - 1
        print(f"{name:34} {with_s * 1000:6.0f} ms with the remote, {without_s * 1000:.0f} ms without: "
              f"{over:+.1%} (bar: +10%) {'PASS' if over <= 0.10 else 'FAIL'}")
    print(f"load average (1 min) at start and end: {load_start:.1f}, {os.getloadavg()[0]:.1f}")


def _lock_targets(root: Path) -> dict[str, dict[str, object]]:
    import tomllib

    return tomllib.loads((root / "images.lock").read_text())["targets"]  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
