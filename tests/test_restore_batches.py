"""Restores from the cache go in batches (one sync, one folder check for many files): a batch is
still per target in what it reports, and a restored file is whole and recorded."""

from __future__ import annotations

import hashlib

from conftest import Project

TARGETS = 40


def _manifest(project: Project) -> None:
    body = ['[provider]\nname = "placeholder"\nconcurrency = 4\n']
    for i in range(TARGETS):
        folder = "blocked" if i == 7 else "out"
        body.append(f'[images.t{i:02d}]\nprompt = "picture {i}"\noutput = "{folder}/t{i:02d}.png"\nquality = "low"\n')
    project.manifest("\n".join(body))


def test_a_restore_that_cannot_write_fails_its_target_only_and_the_rest_of_its_batch_is_restored(
        project: Project) -> None:
    _manifest(project)
    assert project.build("-j", "4").code == 0
    for path in [*(project.root / "out").glob("*.png"), project.root / "blocked" / "t07.png"]:
        path.unlink()
    (project.root / "blocked").rmdir()
    (project.root / "blocked").write_text("a file where the output's folder was\n")

    result = project.build("-k")

    assert result.code == 1
    assert result.summary["restored"] == TARGETS - 1 and result.summary["failed"] == 1
    failed = [e for e in result.events if e["event"] == "failed"]
    assert [e["target"] for e in failed] == ["t07"] and "blocked/t07.png" in failed[0]["detail"]
    lock = project.lock()["targets"]
    for i in range(TARGETS):
        if i != 7:
            out = lock[f"t{i:02d}"]["outputs"][0]
            assert hashlib.sha256(project.read(out["path"])).hexdigest() == out["sha256"]
    assert not list((project.root / "out").glob(".imgbuild-tmp-*"))


def test_every_output_restored_in_batches_is_in_place_and_the_next_build_is_a_no_op(project: Project) -> None:
    _manifest(project)
    (project.root / "images.toml").write_text((project.root / "images.toml").read_text().replace("blocked/", "out/"))
    assert project.build("-j", "4").code == 0
    for path in (project.root / "out").glob("*.png"):
        path.unlink()
    assert project.build().summary["restored"] == TARGETS
    again = project.build()
    assert again.summary["up_to_date"] == TARGETS and again.summary["restored"] == 0
