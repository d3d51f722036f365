"""The bundled quickstart builds offline, and a second build does nothing."""

from __future__ import annotations

import shutil

from conftest import ROOT, Project


def test_quickstart_builds_with_placeholder_then_second_build_touches_nothing(project: Project) -> None:
    shutil.copytree(ROOT / "examples" / "quickstart", project.root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("assets", "images.lock", ".imgbuild"))
    first = project.build("--provider", "placeholder")
    assert first.code == 0, first.err
    assert first.summary["built"] == 3 and first.requests == 3
    before = project.snapshot()
    second = project.run("build", "--provider", "placeholder")
    assert second.code == 0
    assert "nothing to do" in second.out
    assert project.snapshot() == before
