"""Derived work in a process pool beside the request queue (SPEC §9, issue 11 point 5).

Decoding, resampling and encoding hold the CPU, and in the event loop's process they would hold the
GIL too: requests in flight would stall. Workers are separate processes, as many as the cores this
process may use (``IMGBUILD_DERIVE_WORKERS`` overrides it); ``-j`` bounds requests only. A job is
small to send (paths, digests, the recipe): each worker reads its inputs and writes its outputs
into a staging folder itself, so no image crosses the pipe.

Workers start from a fork server that has imported Pillow once (Linux), else by spawning; they
ignore Ctrl-C: the build decides what stops, and a derivation in flight just finishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def default_workers() -> int:
    wanted = os.environ.get("IMGBUILD_DERIVE_WORKERS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Job:
    """One derived target: its inputs (path, label, the sha256 its spec has), recipe and outputs."""

    name: str
    params: dict[str, Any]
    inputs: tuple[tuple[str, str, str], ...]
    outputs: tuple[str, ...]  # files to write, in the target's output order


def run(job: Job) -> None:
    """In a worker: read the inputs, make the outputs. Inputs whose bytes are not the spec's (saved
    since the plan) fail the target: its spec must say what it was made from."""
    from . import DeriveError
    from .ops import derive_one, open_image

    datas = []
    for path, label, sha in job.inputs:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DeriveError(f"{label} cannot be read: {exc.strerror or exc}") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise DeriveError(f"{label} changed while the build ran; build again")
        datas.append((data, label))
    if job.params["derive"] == "from":
        (data, label), = datas
        results = [derive_one(data, job.params, label)]
    else:
        from .recipe import frames_of
        from .sheet import pack

        frames = [open_image(data, label) for data, label in datas]
        results = list(pack(frames, frames_of(job.params), job.params))
    for dest, content in zip(job.outputs, results):
        with open(dest, "wb") as f:
            f.write(content)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DerivePool:
    """The pool, started at the first derived job of a build."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context: multiprocessing.context.BaseContext
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["imgbuild.derive.ops", "imgbuild.derive.sheet"])
            else:
                context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init)
        return self._pool

    async def run(self, job: Job) -> None:
        if self._pool is None:  # starting the fork server and its first workers takes a moment
            await asyncio.to_thread(self._executor)
        await asyncio.get_running_loop().run_in_executor(self._executor(), run, job)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
