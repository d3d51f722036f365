"""Restore from the remote cache: 1,000 targets of 1536x1024 PNG (about 2 MB each) from an S3
server on loopback into an empty local folder (issue 13's bar: at most 20 s on 2 cores).

    .venv/bin/python benchmarks/remote.py [--count 1000] [--concurrency 16] [--no-fsync]

The server is moto in server mode (tests/s3server.py), in its own process, so the figures
include a real HTTP S3 server's cost on the same 2 cores. Each target is a run entry (spec
digest → record naming one output by sha256 and size) and one object. Phase 1, a first clone
publishes them all (objects first, then entries, bounded by the store's concurrency). Then two
restores, each into an empty folder, every object streamed to a temp file, checked against its
sha256 and size, fsynced and renamed into place:

- by the lock: a fresh clone has the committed images.lock, so it knows every output's sha256
  and fetches the objects only (one GET each);
- by run entries: a spec the lock does not know is looked up in the remote run cache first
  (two GETs each).

moto spends about 10 ms of Python per request, whatever its size, and shares the 2 cores with
the client: the load average is printed, since other work on the machine moves the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import platform
import resource
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from s3server import S3Server

from imgbuild.remote import RemoteOptions, open_remote

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


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def publish(url: str, targets: list[tuple[str, bytes, str, Path]], options: RemoteOptions
                  ) -> tuple[int, list[str]]:
    remote = open_remote(url, "readwrite", options=options)
    for spec, record, sha, path in targets:
        remote.publish(spec, record, [(sha, path)])
    uploaded = await remote.drain(timeout_s=600)
    return uploaded, remote.warnings


async def restore(url: str, targets: list[tuple[str, bytes, str, Path]], cache: Path,
                  options: RemoteOptions, by_entries: bool) -> tuple[int, int, list[str]]:
    remote = open_remote(url, "read", options=options)

    async def one(spec: str, known: bytes) -> bool:
        record = await remote.get_run(spec) if by_entries else known
        if record is None:
            return False
        out = json.loads(record)["outputs"][0]
        sha = out["sha256"]
        return await remote.get_object(sha, cache / "objects" / sha[:2] / sha[2:],
                                       expected_size=out["bytes"], file_mode=0o444)

    restored = sum(await asyncio.gather(*(one(spec, record) for spec, record, _, _ in targets)))
    return restored, remote.stats.bytes_down, remote.warnings


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_restore(url: str, targets: list[tuple[str, bytes, str, Path]], folder: Path,
                  options: RemoteOptions, by_entries: bool) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), cpu_s()
    restored, got, warned = asyncio.run(restore(url, targets, folder, options, by_entries))
    elapsed, used = time.perf_counter() - start, cpu_s() - cpu
    assert restored == len(targets) and not warned, (restored, warned)
    for _, _, sha, path in targets[:: max(1, len(targets) // 50)]:
        assert (folder / "objects" / sha[:2] / sha[2:]).read_bytes() == path.read_bytes()
    return elapsed, used, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    options = RemoteOptions(concurrency=args.concurrency, durable=not args.no_fsync)

    load_start = os.getloadavg()[0]
    server = S3Server().start()
    os.environ.update(server.env())
    os.environ.pop("IMGBUILD_CACHE_KEY", None)
    bucket = "imgbuild-bench"
    server.create_bucket(bucket)
    url = f"s3://{bucket}/team/cache"
    try:
        with tempfile.TemporaryDirectory(prefix="imgbuild-remote-bench-") as tmp:
            first = Path(tmp) / "clone-1"
            first.mkdir()
            bases = base_pngs(4)
            targets = []
            for n in range(args.count):
                data = variant(bases[n % len(bases)], n)
                sha = hashlib.sha256(data).hexdigest()
                path = first / f"{n}.png"
                path.write_bytes(data)
                record = json.dumps({"outputs": [{"sha256": sha, "bytes": len(data)}]}).encode()
                targets.append((digest(f"target {n}"), record, sha, path))
            total_mb = sum(t[3].stat().st_size for t in targets) / 1e6

            start, cpu = time.perf_counter(), cpu_s()
            uploaded, warned = asyncio.run(publish(url, targets, options))
            up_s, up_cpu = time.perf_counter() - start, cpu_s() - cpu
            assert uploaded == args.count and not warned, (uploaded, warned)

            by_lock = timed_restore(url, targets, Path(tmp) / "clone-2", options, False)
            by_entries = timed_restore(url, targets, Path(tmp) / "clone-3", options, True)
    finally:
        server.stop()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; server: moto (S3 API over HTTP) on 127.0.0.1")
    print(f"{args.count} targets, {total_mb:.0f} MB of 1536x1024 PNG "
          f"({total_mb / args.count:.2f} MB each), concurrency {args.concurrency}, "
          f"fsync {'off' if args.no_fsync else 'on'}")
    print(f"{'publish:':24} {up_s:6.2f} s  {total_mb / up_s:6.1f} MB/s  client CPU {up_cpu:.1f} s")
    for name, (down_s, down_cpu, got) in (("restore by the lock", by_lock),
                                          ("restore by run entries", by_entries)):
        print(f"{name + ':':24} {down_s:6.2f} s  {got / 1e6 / down_s:6.1f} MB/s  client CPU "
              f"{down_cpu:.1f} s  (bar: 20 s) {'PASS' if down_s <= 20 else 'FAIL'}")
    print(f"load average (1 min) at start and end: {load_start:.1f}, {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
