"""What makes a fresh clone's `check` fast changes nothing it decides.

Files the plan will hash are hashed ahead, on threads (statcache.StatCache.prefetch): a digest
hashed ahead is used only for the file as it was when its hashing began.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from imgbuild import statcache
from imgbuild.statcache import StatCache


def _files(root: Path, count: int) -> list[str]:
    rels = []
    for i in range(count):
        (root / f"f{i}.bin").write_bytes(os.urandom(64 * 1024))
        rels.append(f"f{i}.bin")
    return rels


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _hash_small_files_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "PREFETCH_MIN_BYTES", 0)


def test_files_hashed_ahead_have_the_digests_of_their_bytes(tmp_path: Path) -> None:
    rels = _files(tmp_path, 6)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.prefetch(rels)
    assert set(stats._ahead) == set(rels)  # hashed ahead, on threads
    assert [stats.digest(rel) for rel in reversed(rels)] == [_sha(tmp_path / rel) for rel in reversed(rels)]


def test_a_file_rewritten_after_it_was_hashed_ahead_is_hashed_again(tmp_path: Path) -> None:
    rels = _files(tmp_path, 3)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.prefetch(rels)
    for _, future in stats._ahead.values():
        future.result()
    path = tmp_path / rels[1]
    st = path.stat()
    time.sleep(0.05)  # past the file system's timestamp tick: its ctime tells
    path.write_bytes(os.urandom(st.st_size))  # other bytes, the same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert stats.digest(rels[1]) == _sha(path)
    assert stats.digest(rels[0]) == _sha(tmp_path / rels[0])


def test_files_the_cache_trusts_or_that_are_missing_are_not_hashed_ahead(tmp_path: Path) -> None:
    rels = _files(tmp_path, 3)
    stats = StatCache(tmp_path, tmp_path / "stat.json")
    stats.digest(rels[0])  # hashed this run: trusted
    stats.prefetch([*rels, "missing.bin"])
    assert set(stats._ahead) == set(rels[1:])
    assert stats.digest("missing.bin") is None
