"""SPEC §5: every target state with its reason, as `status` shows it and `build` acts on it."""

from __future__ import annotations

from conftest import Project, copy_of_built

BASE = """
[provider]
name = "placeholder"

[images.hero]
prompt = "a knight"
output = "assets/hero.png"

[images.crowned]
prompt = "the knight, crowned"
images = ["assets/hero.png"]
output = "assets/crowned.png"
"""


def _built(project: Project, manifest: str = BASE) -> Project:
    project.manifest(manifest)
    result = project.build()
    assert result.code == 0, result.err
    return project


def _states(project: Project, *args: str) -> dict[str, tuple[str, str]]:
    result = project.run("status", "--json", *args)
    assert result.code == 0, result.err
    return {e["target"]: (e["state"], e["reason"]) for e in result.events}


def test_ok_after_a_build(project: Project) -> None:
    _built(project)
    assert _states(project) == {"hero": ("ok", ""), "crowned": ("ok", "")}


def test_new_before_the_first_build(project: Project) -> None:
    project.manifest(BASE)
    states = _states(project)
    assert states["hero"][0] == "new"
    assert states["crowned"] == ("upstream", "input assets/hero.png comes from hero, which will be rebuilt")


def test_changed_names_the_fields(project: Project) -> None:
    copy_of_built(project, BASE)
    project.manifest(BASE.replace('prompt = "a knight"', 'prompt = "a tall knight"\nsize = "1536x1024"'))
    state, reason = _states(project)["hero"]
    assert state == "changed"
    assert reason == "prompt; size: 1024x1024 → 1536x1024"


def test_changed_names_the_input(project: Project) -> None:
    project.png("art/crown.png")
    _built(project, BASE.replace('images = ["assets/hero.png"]', 'images = ["assets/hero.png", "art/crown.png"]'))
    project.png("art/crown.png", color=(1, 2, 3, 255))
    assert _states(project)["crowned"] == ("changed", "input art/crown.png")


def test_restore_when_an_output_is_missing(project: Project) -> None:
    copy_of_built(project, BASE)
    (project.root / "assets/hero.png").unlink()
    assert _states(project)["hero"] == ("restore", "assets/hero.png is missing")
    result = project.build()
    assert result.requests == 0 and result.summary["restored"] == 1


def test_modified_output_is_kept_until_force(project: Project) -> None:
    copy_of_built(project, BASE)
    project.png("assets/hero.png", size=(1024, 1024), color=(0, 255, 0, 255))  # a hand touch-up
    touched = project.read("assets/hero.png")
    state, reason = _states(project)["hero"]
    assert state == "modified"
    assert "edited by hand" in reason and "imgbuild accept hero" in reason
    result = project.build()
    assert result.code == 0
    # The touched-up hero is kept, and what depends on it is rebuilt from it.
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["crowned"]
    assert project.read("assets/hero.png") == touched
    forced = project.build("--force", "hero")
    assert forced.requests == 1
    assert project.read("assets/hero.png") != touched


def test_accept_adopts_a_hand_edited_output(project: Project) -> None:
    copy_of_built(project, BASE)
    project.png("assets/hero.png", size=(1024, 1024), color=(0, 255, 0, 255))
    touched = project.read("assets/hero.png")
    result = project.run("accept", "hero")
    assert result.code == 0, result.err
    states = _states(project)
    assert states["hero"] == ("ok", "")
    assert states["crowned"][0] == "changed"  # its input is now the touched-up image
    assert project.build().requests == 1
    assert project.read("assets/hero.png") == touched
    assert project.lock()["targets"]["hero"]["provider"] == "accepted"


def test_accepted_output_survives_clean_and_build(project: Project) -> None:
    copy_of_built(project, BASE)
    project.png("assets/hero.png", size=(1024, 1024), color=(0, 255, 0, 255))
    touched = project.read("assets/hero.png")
    assert project.run("accept", "hero").code == 0
    project.run("clean", "hero")
    assert project.build("hero").requests == 0
    assert project.read("assets/hero.png") == touched


def test_an_existing_file_not_made_by_imgbuild_is_not_overwritten(project: Project) -> None:
    project.manifest(BASE)
    project.png("assets/hero.png", color=(7, 7, 7, 255))
    mine = project.read("assets/hero.png")
    state, reason = _states(project)["hero"]
    assert state == "modified" and "not made by imgbuild" in reason
    project.build()
    assert project.read("assets/hero.png") == mine


def test_pinned_target_is_left_alone_when_its_spec_changes(project: Project) -> None:
    copy_of_built(project, BASE)
    before = project.read("assets/hero.png")
    project.manifest(BASE.replace('prompt = "a knight"', 'prompt = "a dragon"\npinned = true'))
    state, reason = _states(project)["hero"]
    assert state == "pinned" and reason.startswith("prompt")
    result = project.build()
    assert result.requests == 0
    assert project.read("assets/hero.png") == before
    assert any(e["event"] == "skipped" and e["target"] == "hero" for e in result.events)


def test_upstream_target_is_rebuilt_after_its_dependency(project: Project) -> None:
    copy_of_built(project, BASE)
    project.manifest(BASE.replace("a knight", "a knight at night"))
    states = _states(project)
    assert states["hero"][0] == "changed" and states["crowned"][0] == "upstream"
    result = project.build()
    built = [e["target"] for e in result.events if e["event"] == "built"]
    assert built == ["hero", "crowned"]


def test_status_and_dry_run_write_nothing(project: Project) -> None:
    copy_of_built(project, BASE)
    project.manifest(BASE.replace("a knight", "a knight at noon"))
    (project.root / "assets/crowned.png").unlink()
    before = project.snapshot()
    state_dir = sorted(p.name for p in (project.root / ".imgbuild").iterdir())
    cache_before = sorted(str(p) for p in project.cache.rglob("*"))
    dry = project.run("build", "-n")
    assert dry.code == 0
    assert "hero     changed   prompt" in dry.out and "nothing was done" in dry.out
    assert project.run("status").code == 0
    assert project.snapshot() == before
    assert sorted(p.name for p in (project.root / ".imgbuild").iterdir()) == state_dir
    assert sorted(str(p) for p in project.cache.rglob("*")) == cache_before


def test_dry_run_prints_estimated_cost_for_a_real_provider(project: Project) -> None:
    project.manifest(BASE.replace('name = "placeholder"', 'name = "openai"'))
    result = project.run("build", "-n", "--json")
    assert result.code == 0
    plan = {e["target"]: e for e in result.events if e["event"] == "plan"}
    assert plan["hero"]["state"] == "new" and plan["hero"]["estimate_usd"] > 0
    total = [e for e in result.events if e["event"] == "estimate"][0]["estimate_usd"]
    assert abs(total - sum(e["estimate_usd"] for e in plan.values())) < 1e-6


def test_check_fails_unless_every_target_is_ok(project: Project) -> None:
    project.manifest(BASE)
    assert project.run("check").code == 1
    project.build()
    assert project.run("check").code == 0
    (project.root / "assets/crowned.png").unlink()
    result = project.run("check")
    assert result.code == 1 and "crowned  restore" in result.out


def test_lock_is_deterministic_sorted_and_unchanged_by_no_ops(project: Project) -> None:
    copy_of_built(project, BASE)
    data = project.read("images.lock")
    text = data.decode()
    assert text.index("[targets.crowned]") < text.index("[targets.hero]")  # name order
    hero = text[text.index("[targets.hero]"):]
    keys = [line.split(" =")[0] for line in hero.splitlines()[1:] if " = " in line][:8]
    assert keys == sorted(keys)
    project.manifest("\n".join(reversed(BASE.strip().split("\n\n"))))  # tables reordered
    assert project.build().requests == 0
    assert project.read("images.lock") == data
    import tomllib

    assert tomllib.loads(text)["version"] == 1 and text.splitlines()[1] == "version = 1"


def test_force_does_not_request_a_pinned_target(project: Project) -> None:
    copy_of_built(project, BASE)
    project.manifest(BASE.replace('prompt = "a knight"', 'prompt = "a knight"\npinned = true'))
    result = project.build("-B")
    assert [e["target"] for e in result.events if e["event"] == "built"] == ["crowned"]
    assert result.requests == 1


def test_clean_keeps_an_output_edited_by_hand_unless_forced(project: Project) -> None:
    copy_of_built(project, BASE)
    project.png("assets/hero.png", size=(1024, 1024), color=(0, 255, 0, 255))
    touched = project.read("assets/hero.png")
    result = project.run("clean")
    assert result.code == 0
    assert "kept     assets/hero.png: edited by hand" in result.out
    assert project.read("assets/hero.png") == touched
    assert not (project.root / "assets/crowned.png").exists()
    assert project.run("clean", "--force").code == 0
    assert not (project.root / "assets/hero.png").exists()
    import hashlib

    digest = hashlib.sha256(touched).hexdigest()  # even forced, the bytes went to the cache first
    assert (project.cache / "objects" / digest[:2] / digest[2:]).exists()


def test_clean_in_a_checkout_without_the_cache_loses_nothing(make_project) -> None:  # type: ignore[no-untyped-def]
    original = copy_of_built(make_project("original"), BASE)
    clone = make_project("clone", cache="empty-cache").checkout_of(original)
    assert clone.run("clean").code == 0
    result = clone.build()
    assert result.requests == 0 and result.summary["restored"] == 2
    assert clone.read("assets/hero.png") == original.read("assets/hero.png")


def test_a_renamed_output_in_a_checkout_without_the_cache_is_taken_from_its_old_path(make_project) -> None:  # type: ignore[no-untyped-def]
    original = copy_of_built(make_project("original"), BASE)
    clone = make_project("clone", cache="empty-cache").checkout_of(original)
    clone.manifest(BASE.replace('output = "assets/crowned.png"', 'output = "assets/crowned-v2.png"'))
    result = clone.build()
    assert result.requests == 0 and result.summary["restored"] == 1
    assert clone.read("assets/crowned-v2.png") == original.read("assets/crowned.png")


def test_accept_refuses_a_placeholder_render_under_a_real_model(project: Project) -> None:
    project.manifest(BASE.replace('name = "placeholder"', 'name = "openai"'))
    assert project.build("--provider", "placeholder").code == 0
    project.png("assets/hero.png", size=(1024, 1024), color=(0, 255, 0, 255))
    refused = project.run("accept", "hero")
    assert refused.code == 2 and "placeholder provider" in refused.err
    assert project.run("accept", "hero", "--provider", "placeholder").code == 0
    assert project.run("check", "--provider", "placeholder").code == 1  # crowned now depends on it
    assert project.run("check").code == 1


def test_a_pinned_target_whose_outputs_are_gone_and_uncached_makes_no_request(make_project) -> None:  # type: ignore[no-untyped-def]
    original = copy_of_built(make_project("original"), BASE)
    original.manifest(BASE.replace('prompt = "a knight"', 'prompt = "a knight"\npinned = true'))
    (original.root / "assets/hero.png").unlink()
    import shutil

    shutil.rmtree(original.cache)
    state, reason = _states(original)["hero"]
    assert state == "pinned" and "pinned: left alone" in reason
    assert original.build().requests == 0


def test_a_pinned_target_with_a_changed_spec_gets_its_locked_outputs_back(project: Project) -> None:
    copy_of_built(project, BASE)
    before = project.read("assets/hero.png")
    project.manifest(BASE.replace('prompt = "a knight"', 'prompt = "a dragon"\npinned = true'))
    project.run("clean", "hero")
    result = project.build()
    assert result.requests == 0
    assert project.read("assets/hero.png") == before
    assert project.lock()["targets"]["hero"]["prompt"] == "a knight"  # the lock still says what it is
    assert _states(project)["hero"][0] == "pinned"


def test_a_full_build_drops_lock_entries_of_removed_targets(project: Project) -> None:
    copy_of_built(project, BASE)
    project.manifest(BASE.replace("[images.crowned]", "[images.crowned-v2]"))
    result = project.build()
    assert result.code == 0
    assert sorted(project.lock()["targets"]) == ["crowned-v2", "hero"]
