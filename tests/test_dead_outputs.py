"""An output no target makes any more goes with the next build, as `ninja -t cleandead` does;
nothing paid for is lost (its bytes stay in the cache) and nothing touched by hand is deleted."""

from __future__ import annotations

import hashlib
import re

from conftest import Project, copy_of_built

MANIFEST = """
[provider]
name = "placeholder"

[images.knight]
prompt = "a knight"
output = "assets/knight.png"

[images.tree]
prompt = "a tree"
output = "assets/tree.png"
"""


def _built(project: Project, manifest: str = MANIFEST) -> Project:
    """``project`` as its first build of ``manifest`` left it (a copy of one built once)."""
    return copy_of_built(project, manifest)


def _cached(project: Project, data: bytes) -> bool:
    from imgbuild.cache import LocalCache

    return LocalCache(project.cache).has(hashlib.sha256(data).hexdigest())


def test_renaming_an_output_removes_the_old_file_and_keeps_its_bytes(project: Project) -> None:
    _built(project)
    old = project.read("assets/knight.png")
    project.manifest(MANIFEST.replace("assets/knight.png", "assets/hero.png"))
    result = project.build()
    assert result.code == 0 and result.requests == 0, result.err
    assert project.read("assets/hero.png") == old
    assert not (project.root / "assets/knight.png").exists()
    assert [(e["target"], e["path"]) for e in result.events if e["event"] == "removed"] == [
        ("knight", "assets/knight.png")]
    assert _cached(project, old)


def test_removing_a_target_removes_its_output(project: Project) -> None:
    _built(project)
    tree = project.read("assets/tree.png")
    project.manifest(MANIFEST.split("[images.tree]")[0])
    assert project.build().code == 0
    assert not (project.root / "assets/tree.png").exists()
    assert "tree" not in project.lock()["targets"]
    project.manifest(MANIFEST)  # a revert brings it back, for free
    result = project.build()
    assert result.requests == 0 and project.read("assets/tree.png") == tree


def test_a_fresh_checkout_without_the_cache_caches_the_old_file_before_removing_it(
        project: Project, make_project) -> None:  # type: ignore[no-untyped-def]
    _built(project)
    old = project.read("assets/knight.png")
    clone = make_project("clone", cache="other-cache").checkout_of(project)
    clone.manifest(MANIFEST.replace("assets/knight.png", "assets/hero.png"))
    result = clone.build()
    assert result.code == 0 and result.requests == 0, result.err
    assert not (clone.root / "assets/knight.png").exists()
    assert _cached(clone, old)
    (clone.root / "assets/hero.png").unlink()
    assert clone.build().requests == 0 and clone.read("assets/hero.png") == old


def test_a_hand_edited_old_output_is_kept_and_named(project: Project) -> None:
    _built(project)
    edited = project.read("assets/tree.png") + b"touched up"
    (project.root / "assets/tree.png").write_bytes(edited)
    project.manifest(MANIFEST.split("[images.tree]")[0])
    result = project.run("build")
    assert result.code == 0, result.err
    assert project.read("assets/tree.png") == edited
    assert re.search(r"^warning: assets/tree\.png is no output of any target now .*edited by hand: kept",
                     result.err, re.M), result.err


def test_an_old_output_that_became_an_input_is_kept(project: Project) -> None:
    _built(project)
    art = project.read("assets/tree.png")
    project.manifest(MANIFEST.split("[images.tree]")[0] + """
        [images.forest]
        prompt = "a forest"
        images = ["assets/tree.png"]
    """.replace("        ", ""))
    assert project.build().code == 0
    assert project.read("assets/tree.png") == art


def test_a_lock_cannot_make_a_build_delete_outside_the_project(project: Project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import tomli_w

    _built(project)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "tree.png"
    victim.write_bytes(project.read("assets/tree.png"))
    (project.root / "link").symlink_to(outside)
    (project.root / "alias.png").symlink_to(project.root / "assets/tree.png")
    lock = project.lock()
    tree = lock["targets"]["tree"]
    # Entries of targets no longer in the manifest, as a hostile or careless commit could write them.
    for i, path in enumerate(["../outside/tree.png", "link/tree.png", str(victim), "alias.png",
                              "assets/../../outside/tree.png", ".imgbuild/../../outside/tree.png"]):
        lock["targets"][f"gone{i}"] = {**tree, "outputs": [{**tree["outputs"][0], "path": path}]}
    (project.root / "images.lock").write_text(tomli_w.dumps(lock))
    result = project.build()
    assert result.code == 0, result.err
    assert victim.exists() and (project.root / "alias.png").is_symlink()
    assert (project.root / "assets/tree.png").exists()
    assert not [e for e in result.events if e["event"] == "removed"]
