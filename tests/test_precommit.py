"""The pre-commit hook this repository provides (issue 14 §4): `.pre-commit-hooks.yaml` at the root
declares `imgbuild-check` as pre-commit reads it, and docs/ci.md shows a project adding it by this
repository's URL and the hook's id."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from conftest import ROOT, Project

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
REPOSITORY = PYPROJECT["project"]["urls"]["Repository"]


def hooks() -> dict[str, dict[str, Any]]:
    declared = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert isinstance(declared, list)
    return {hook["id"]: hook for hook in declared}


def test_the_repository_declares_the_imgbuild_check_hook() -> None:
    hook = hooks()["imgbuild-check"]
    # pre-commit's required keys, and a language that installs this repository with pip
    assert {"id", "name", "entry", "language"} <= set(hook)
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False  # check takes target names, never file names
    command, *args = shlex.split(hook["entry"])
    assert command in PYPROJECT["project"]["scripts"] and args == ["check"]


def test_the_hook_runs_on_the_files_that_can_make_a_target_stale() -> None:
    files = re.compile(hooks()["imgbuild-check"]["files"])  # pre-commit matches with re.search
    for path in ("images.toml", "images.lock", "game/images.toml", "art/crown.png", "a/b.jpg",
                 "x.jpeg", "sprites/hero.webp", "prompts/crowned.md", "prompts/hero.txt"):
        assert files.search(path), path
    for path in ("src/main.py", "package.json", "my-images.tomlx", "images.toml.bak"):
        assert not files.search(path), path


def test_the_hooks_command_is_imgbuild_check_and_fails_on_a_stale_target(project: Project) -> None:
    # As pre-commit runs it: the entry, at the project root, with no file names
    entry = shlex.split(hooks()["imgbuild-check"]["entry"])
    command = [str(Path(sys.executable).parent / entry[0]), *entry[1:]]
    project.manifest('[provider]\nname = "placeholder"\n[images.hero]\nprompt = "a knight"\n')
    assert project.build().code == 0

    clean = subprocess.run(command, cwd=project.root, env=project.env, capture_output=True, text=True)
    project.manifest('[provider]\nname = "placeholder"\n[images.hero]\nprompt = "a crowned knight"\n')
    stale = subprocess.run(command, cwd=project.root, env=project.env, capture_output=True, text=True)

    assert clean.returncode == 0, clean.stderr
    assert stale.returncode == 1 and "hero" in stale.stdout


def test_ci_docs_add_the_hook_by_this_repositorys_url_and_its_id() -> None:
    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    configs = [yaml.safe_load(block) for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)]
    remote = [repo for config in configs if isinstance(config, dict)
              for repo in config.get("repos", []) if repo.get("repo") == REPOSITORY]
    assert len(remote) == 1, f"no pre-commit config using {REPOSITORY} in docs/ci.md"
    (repo,) = remote
    assert repo["rev"] and [h["id"] for h in repo["hooks"]] == ["imgbuild-check"]
    assert set(h["id"] for h in repo["hooks"]) <= set(hooks())
