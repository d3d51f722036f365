"""Save-to-request latency of ``imgbuild watch`` (issue 4's acceptance bar: median <= 300 ms).

    .venv/bin/python benchmarks/watch_latency.py [--saves 15] [--targets 20] [--debounce-ms 150]

A generated project of TARGETS targets, each with its own prompt file, is watched by the real CLI in
a subprocess. Each save rewrites one prompt file; the clock starts just before the write and stops:

1. http: when the local API server (tests/apiserver.py, in a thread of this process, so both ends
   read the same monotonic clock) receives the request — the provider has been called and has sent
   it over the loopback;
2. placeholder: when the watch prints the target's ``started`` event, which the executor emits
   right before it calls the provider.

Each save waits for the previous rebuild to finish and settle, so that every figure is one save
going through debounce, reload, plan and the call, as a user saving in an editor sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
KEY_ENV = "IMGBUILD_BENCH_KEY"
BAR_MS = 300.0


def make_project(root: Path, targets: int, provider: str) -> None:
    (root / "prompts").mkdir(parents=True)
    lines = ['out_dir = "assets"\n', provider]
    for i in range(targets):
        (root / "prompts" / f"t{i:02}.md").write_text(f"picture number {i}, take 0\n")
        lines.append(f'\n[images.t{i:02}]\nprompt_file = "prompts/t{i:02}.md"\nquality = "low"\n')
    (root / "images.toml").write_text("".join(lines))


class Watch:
    """``imgbuild watch --json`` in a subprocess, its events read in a thread."""

    def __init__(self, root: Path, env: dict[str, str], debounce_ms: int) -> None:
        self.proc = subprocess.Popen(
            [str(PYTHON), "-m", "imgbuild", "-C", str(root), "watch", "--json", "--debounce-ms", str(debounce_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), json.loads(line)))

    def wait_for(self, kind: str, timeout_s: float = 60.0, target: str | None = None) -> float:
        """When the next ``kind`` event (for ``target``) arrived."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                at, event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
                raise RuntimeError(f"no {kind} event within {timeout_s} s {err}") from None
            if event.get("event") == "error":
                raise RuntimeError(f"the watch reported: {event['message']}")
            if event.get("event") == kind and (target is None or event.get("target") == target):
                return at

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def measure(root: Path, env: dict[str, str], saves: int, targets: int, debounce_ms: int,
            arrived: Callable[[Watch, int], float]) -> list[float]:
    """Latencies in ms of ``saves`` saves; ``arrived(watch, n)`` blocks until request n (counted
    from 0 after the initial build) reached the provider and says when."""
    watch = Watch(root, env, debounce_ms)
    try:
        watch.wait_for("watching", timeout_s=120)
        time.sleep(0.5)  # let the initial build's own writes pass through the watch
        latencies = []
        for n in range(saves):
            name = f"t{n % targets:02}"
            path = root / "prompts" / f"{name}.md"
            text = f"picture number {n % targets}, take {n + 1}\n"
            start = time.monotonic()
            path.write_text(text)
            latencies.append((arrived(watch, n) - start) * 1000)
            watch.wait_for("summary")
            time.sleep(0.3)
        return latencies
    finally:
        watch.close()


def http_run(scratch: Path, args: argparse.Namespace) -> list[float]:
    sys.path.insert(0, str(ROOT / "tests"))
    from apiserver import TEST_KEY, ApiServer

    server = ApiServer("openai").start()
    try:
        root = scratch / "http"
        make_project(root, args.targets, f'\n[provider]\nname = "compatible"\nmodel = "gpt-image-2"\n'
                                         f'api_key_env = "{KEY_ENV}"\nbase_url = "{server.base_url}"\n')
        env = {**os.environ, KEY_ENV: TEST_KEY, "IMGBUILD_CACHE_DIR": str(scratch / "http-cache"), "NO_COLOR": "1"}
        initial = args.targets

        def arrived(_: Watch, n: int) -> float:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = server.api_requests()
                if len(got) > initial + n:
                    return float(got[initial + n].at)
                time.sleep(0.001)
            raise RuntimeError("the request never reached the server")

        return measure(root, env, args.saves, args.targets, args.debounce_ms, arrived)
    finally:
        server.stop()


def placeholder_run(scratch: Path, args: argparse.Namespace) -> list[float]:
    root = scratch / "placeholder"
    make_project(root, args.targets, '\n[provider]\nname = "placeholder"\n')
    env = {**os.environ, "IMGBUILD_CACHE_DIR": str(scratch / "placeholder-cache"), "NO_COLOR": "1"}
    env.pop("IMGBUILD_PLACEHOLDER_DELAY", None)

    def arrived(watch: Watch, n: int) -> float:
        return watch.wait_for("started", target=f"t{n % args.targets:02}")

    return measure(root, env, args.saves, args.targets, args.debounce_ms, arrived)


def report(label: str, ms: list[float]) -> bool:
    ms_sorted = sorted(ms)
    median = statistics.median(ms)
    p90 = ms_sorted[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    ok = median <= BAR_MS
    print(f"{label}: median {median:.0f} ms, p90 {p90:.0f} ms, min {ms_sorted[0]:.0f} ms, "
          f"max {ms_sorted[-1]:.0f} ms over {len(ms)} saves (bar {BAR_MS:.0f} ms: {'ok' if ok else 'FAIL'})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=15)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--debounce-ms", type=int, default=150)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; {args.targets} targets, debounce {args.debounce_ms} ms")
    with tempfile.TemporaryDirectory(prefix="imgbuild-watch-bench-") as tmp:
        scratch = Path(tmp)
        ok = report("save -> request at the local HTTP server", http_run(scratch, args))
        ok &= report("save -> started event (placeholder)", placeholder_run(scratch, args))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
