"""SPEC §8: the library offers what the commands use."""

from __future__ import annotations

import imgbuild
from conftest import Project


def test_public_api_is_a_deliberate_list() -> None:
    assert imgbuild.__all__ == [
        "Action", "BuildOptions", "Decision", "ImgbuildError", "JsonReporter", "LiveReporter", "LocalCache",
        "ManifestError", "NullReporter", "Plan", "Project", "ProviderError", "Reporter", "Spec", "State",
        "Summary", "Target", "UsageError", "json_schema", "load_project",
    ]
    for name in imgbuild.__all__:  # each name is the class or function of that name, from its home
        value = getattr(imgbuild, name)
        assert (value.__name__, value.__module__.split(".")[0]) == (name, "imgbuild"), name


def test_a_build_script_can_load_plan_and_build(project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project.manifest('[provider]\nname = "placeholder"\n[images.logo]\nprompt = "a logo"\n')
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(project.cache))
    p = imgbuild.load_project(project.root)
    assert [d.state for d in p.status()] == [imgbuild.State.NEW]
    summary = p.build(options=imgbuild.BuildOptions(jobs=1))
    assert summary.built == 1 and summary.requests == 1
    again = imgbuild.load_project(project.root)
    assert again.plan().decisions[0].state is imgbuild.State.OK
    assert (project.root / "build/images/logo.png").exists()


def test_manifest_errors_carry_every_problem(project: Project) -> None:
    project.manifest('[images.a]\nprompt = "x"\nsize = "5x5"\n[images.b]\n')
    try:
        imgbuild.load_project(project.root)
    except imgbuild.ManifestError as exc:
        assert [p.where for p in exc.problems] == ["images.a.size", "images.b"]
    else:
        raise AssertionError("no ManifestError")


def test_a_build_is_quiet_unless_given_a_reporter(project: Project, monkeypatch, capfd) -> None:  # type: ignore[no-untyped-def]
    import io

    project.manifest('[provider]\nname = "placeholder"\n[images.logo]\nprompt = "a logo"\n[images.icon]\nprompt = "i"\n')
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(project.cache))
    assert imgbuild.load_project(project.root).build(["logo"]).built == 1
    assert capfd.readouterr() == ("", "")
    out = io.StringIO()
    summary = imgbuild.load_project(project.root).build(["icon"], reporter=imgbuild.Reporter(out=out))
    assert summary.built == 1
    assert out.getvalue().splitlines()[-1].startswith("built     icon")
    assert capfd.readouterr() == ("", "")
