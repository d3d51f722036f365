"""The lock's journal: each finished target is appended to ``.imgbuild/lock.journal`` as it
completes, so that a build does work proportional to what it finished, not to the project, and
``images.lock`` itself is rewritten only now and then (ninja appends to ``.ninja_log`` the same way).

The file is one JSON object per line. The first line names the lock the records extend (the sha256
of ``images.lock`` as it was on disk when the journal was started, "" when there was none); a record
is ``{"set": NAME, "entry": {...}}``. Loading the lock replays the records when the lock is still the
one they extend; a line that is not complete (no newline: the process died while writing it) ends
the replay, and so does one that does not parse. A journal that extends another lock is stale (its
records were already folded into the lock, or the lock was replaced since): it is ignored.

Appends are single ``write`` calls on an ``O_APPEND`` descriptor: a killed process leaves every
record it finished in the page cache, and the file system writes them out. Neither they nor the
header are fsynced: the lock itself is rewritten durably at least once a second, so a power cut can
lose at most the last second of *records*, whose images are in the cache already and come back for
free (a journal lost with them, or one left naming an older lock, extends nothing).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fsutil import atomic_write

JOURNAL_VERSION = 1
FILE = "lock.journal"


def _header(lock_digest: str | None) -> bytes:
    return (json.dumps({"journal": JOURNAL_VERSION, "lock": lock_digest or ""}) + "\n").encode()


def read(state_dir: Path, lock_digest: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The records that extend the lock whose sha256 is ``lock_digest``, in the order written."""
    try:
        data = (state_dir / FILE).read_bytes()
    except OSError:
        return []
    lines = data.split(b"\n")
    try:
        head = json.loads(lines[0])
    except ValueError:
        return []
    if not isinstance(head, dict) or head.get("journal") != JOURNAL_VERSION or head.get("lock") != (lock_digest or ""):
        return []
    records: list[tuple[str, dict[str, Any]]] = []
    # The last element is what follows the last newline: empty, or a torn record.
    for line in lines[1:-1]:
        try:
            record = json.loads(line)
            name, entry = record["set"], record["entry"]
        except (ValueError, KeyError, TypeError):
            break
        if not isinstance(name, str) or not isinstance(entry, dict):
            break
        records.append((name, entry))
    return records


def discard(state_dir: Path) -> None:
    try:
        os.unlink(state_dir / FILE)
    except OSError:
        pass


class Journal:
    """An open journal. Thread-safe: restores finish in a pool of threads."""

    def __init__(self, state_dir: Path, lock_digest: str | None) -> None:
        self.path = state_dir / FILE
        self.mutex = threading.Lock()
        self._fd = -1
        self._start(_header(lock_digest))

    def _start(self, data: bytes) -> None:
        # Not made durable (see the module's docstring): two fsyncs saved per build, a tenth of a
        # one-target change.
        atomic_write(self.path, data, durable=False)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._size = len(data)

    def append(self, name: str, entry: Mapping[str, Any]) -> None:
        """Append one record; the caller holds :attr:`mutex` (it sets the entry in the same step)."""
        line = (json.dumps({"set": name, "entry": entry}, separators=(",", ":")) + "\n").encode()
        try:
            view = memoryview(line)
            while view:  # a write may take part of the line (a signal, a nearly full disk)
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            exc.filename = str(self.path)  # say which file the disk refused
            raise
        self._size += len(line)

    @property
    def size(self) -> int:
        """Bytes written so far; the caller holds :attr:`mutex`."""
        return self._size

    def rebase(self, lock_digest: str | None, folded: int) -> None:
        """The lock on disk now holds the records before byte ``folded``: start a journal on it,
        carrying over the records appended since."""
        with self.mutex:
            if folded < self._size:
                with open(self.path, "rb") as f:
                    f.seek(folded)
                    rest = f.read()
            else:
                rest = b""
            self._start(_header(lock_digest) + rest)

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError:
            pass

    def close(self) -> None:
        """Close and remove it: the lock on disk holds every record."""
        with self.mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            discard(self.path.parent)
