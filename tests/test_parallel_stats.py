"""The no-op's stats in two halves, the second in a forked child (fastpath.unchanged(halves=True)),
and the scoped path's stats in a child while it loads the engine (fastpath.in_child): the same
answers as one process gives, whichever half holds the change, and no child left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from imgbuild import fastpath

COUNT = fastpath.HALVES_FROM + 10


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("halves")
    return root, _state(root)


def _state(root: Path) -> tuple:  # type: ignore[type-arg]
    """A no-op state of COUNT files under root/out, as fastpath.record lays it out."""
    (root / "out").mkdir()
    (root / "images.lock").write_text("lock")
    names = [f"out/f{i:05d}.png" for i in range(COUNT)]
    sigs: list[int] = []
    for i, rel in enumerate(names):
        path = root / rel
        path.write_bytes(b"x" * (i % 7))
        st = os.lstat(path)
        sigs.extend((st.st_size, st.st_mtime_ns, st.st_ino))
    lock = os.lstat(root / "images.lock")
    return (fastpath.FORMAT, "v", "images.toml", b"", (None, None), "images.lock",
            (lock.st_size, lock.st_mtime_ns, lock.st_ino), True, "", b"", "\0".join(names), tuple(sigs),
            "out", (os.lstat(root / "out").st_ino,), ("", "", "", {}))


def _no_child_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize("where", [None, 3, COUNT - 3])
def test_both_halves_answer_as_one_process_does(project: tuple[Path, tuple], where: int | None) -> None:  # type: ignore[type-arg]
    root, state = project
    if where is not None:  # as if that file's mtime had changed since the record
        sigs = list(state[11])
        sigs[3 * where + 1] += 1
        state = (*state[:11], tuple(sigs), *state[12:])
    one = fastpath.unchanged(state, str(root))
    assert fastpath.unchanged(state, str(root), halves=True) is one is (where is None)
    assert _no_child_left()


@pytest.mark.skipif(sys.platform != "linux", reason="the stats run in a forked child on Linux only")
def test_the_check_runs_in_another_process_and_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "pid"

    def check() -> bool:
        marker.write_text(str(os.getpid()))
        return True

    wait = fastpath.in_child(check)
    assert wait() is True
    assert int(marker.read_text()) != os.getpid()
    assert _no_child_left()


def test_a_child_no_longer_needed_is_stopped_and_reaped(tmp_path: Path) -> None:
    import time

    wait = fastpath.in_child(lambda: time.sleep(30) is None)
    started = time.monotonic()
    assert wait(True) is False
    assert time.monotonic() - started < 10
    assert _no_child_left()
