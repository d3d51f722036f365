"""Shell completion (issue 14 §4): `imgbuild completion bash|zsh|fish` prints a script that
completes commands, options, their choices and the manifest's target names, run here in the real
shells; `--help` does not get slower for it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project

BIN = str(Path(sys.executable).parent)  # where the installed `imgbuild` script is
MANIFEST = """
[provider]
name = "placeholder"
[images.knight]
prompt = "a knight"
[images.knight-armed]
prompt = "the knight, armed"
images = ["build/images/knight.png"]
[images.mage]
prompt = "a mage"
"""



def needs(shell: str) -> None:
    """zsh and fish come from the system: .ci/run installs them, so CI always runs these tests;
    on a developer's machine without them they are skipped, saying why."""
    if shutil.which(shell) is None and not os.environ.get("CI"):
        pytest.skip(f"{shell} is not installed here (apt-get install {shell}); CI installs it and runs this")


def script(project: Project, shell: str) -> Path:
    result = project.run("completion", shell)
    assert result.code == 0, result.err
    path = project.root.parent / f"imgbuild.{shell}"
    path.write_text(result.out)
    return path


def shell_env(project: Project) -> dict[str, str]:
    return {**project.env, "PATH": BIN + os.pathsep + project.env.get("PATH", "")}


def bash_complete(project: Project, line: str) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end), run in the project's folder."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    code = (f"source {shlex.quote(str(script(project, 'bash')))}\n"
            f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            '_imgbuild; printf "%s\\n" "${COMPREPLY[@]}"')
    proc = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True,
                          cwd=project.root, env=shell_env(project), timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return sorted(filter(None, proc.stdout.splitlines()))


def test_bash_completes_commands(project: Project) -> None:
    assert bash_complete(project, "imgbuild c") == ["cache", "check", "clean", "completion"]
    assert "build" in bash_complete(project, "imgbuild ") and "schema" in bash_complete(project, "imgbuild ")


def test_bash_completes_a_commands_options_and_their_choices(project: Project) -> None:
    assert bash_complete(project, "imgbuild build --ma") == ["--max-cost"]
    assert bash_complete(project, "imgbuild build --provider pl") == ["placeholder"]
    assert bash_complete(project, "imgbuild graph --format ") == ["dot", "mermaid"]
    assert bash_complete(project, "imgbuild build -j ") == []  # a number: nothing to offer


def test_bash_completes_target_names_from_the_manifest(project: Project) -> None:
    project.manifest(MANIFEST)
    assert bash_complete(project, "imgbuild build kn") == ["knight", "knight-armed"]
    assert bash_complete(project, "imgbuild status ") == ["knight", "knight-armed", "mage"]
    assert bash_complete(project, "imgbuild gc ") == []  # gc takes no target


def test_bash_reads_the_targets_of_the_folder_and_manifest_named_on_the_line(
        project: Project, tmp_path: Path) -> None:
    project.write("sub/other.toml", '[images.castle]\nprompt = "a castle"\n')
    assert bash_complete(project, "imgbuild -C sub -f other.toml build ") == ["castle"]


def test_zsh_completes_commands_options_and_targets(project: Project) -> None:
    needs("zsh")
    project.manifest(MANIFEST)
    path = script(project, "zsh")

    def complete(line: str) -> list[str]:
        words = shlex.split(line) + ([""] if line.endswith(" ") else [])
        # compadd and _describe are completion-system builtins: here they print what they get.
        code = ("compadd() { [[ $1 == -- ]] && shift; print -l -- \"$@\" }\n"
                "_describe() { print -l -- ${${(P)4}%%:*} }\n"
                "compdef() { : }\n"
                f"source {shlex.quote(str(path))}\n"
                f"words=({' '.join(shlex.quote(w) for w in words)}); CURRENT={len(words)}\n"
                "_imgbuild")
        proc = subprocess.run(["zsh", "-f", "-c", code], capture_output=True, text=True,
                              cwd=project.root, env=shell_env(project), timeout=30)
        assert proc.returncode in (0, 1) and proc.stderr == "", proc.stderr
        return sorted(w for w in proc.stdout.splitlines() if w.startswith(words[-1]))

    assert complete("imgbuild c") == ["cache", "check", "clean", "completion"]
    assert complete("imgbuild build --ma") == ["--max-cost"]
    assert complete("imgbuild build --provider pl") == ["placeholder"]
    assert complete("imgbuild build kn") == ["knight", "knight-armed"]


def test_zsh_script_registers_itself_with_compinit(project: Project) -> None:
    needs("zsh")
    path = script(project, "zsh")
    code = f"autoload -Uz compinit && compinit -u -D\nsource {shlex.quote(str(path))}\nprint $_comps[imgbuild]"
    proc = subprocess.run(["zsh", "-f", "-c", code], capture_output=True, text=True,
                          env=shell_env(project), timeout=30)
    assert proc.stdout.strip() == "_imgbuild", proc.stderr


def fish_complete(project: Project, line: str) -> list[str]:
    code = f"source {shlex.quote(str(script(project, 'fish')))}; complete -C {shlex.quote(line)}"
    proc = subprocess.run(["fish", "--no-config", "-c", code], capture_output=True, text=True,
                          cwd=project.root, env=shell_env(project), timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return sorted(line.split("\t")[0] for line in proc.stdout.splitlines())


def test_fish_completes_commands_options_and_targets(project: Project) -> None:
    needs("fish")
    project.manifest(MANIFEST)
    assert fish_complete(project, "imgbuild c") == ["cache", "check", "clean", "completion"]
    assert fish_complete(project, "imgbuild build --ma") == ["--max-cost"]
    assert fish_complete(project, "imgbuild build --provider pl") == ["placeholder"]
    assert fish_complete(project, "imgbuild build kn") == ["knight", "knight-armed"]
    project.write("sub/other.toml", '[images.castle]\nprompt = "a castle"\n')
    assert fish_complete(project, "imgbuild -C sub -f other.toml status c") == ["castle"]


def test_listing_targets_reads_only_the_toml_even_of_a_manifest_with_problems(project: Project) -> None:
    project.manifest(MANIFEST + '[images.bad]\nprompt = "x"\nsize = "1000x1000"\n')
    code = ("import json, sys\nfrom imgbuild import cli\ncode = cli.main(sys.argv[1:])\n"
            "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "-C", str(project.root), "completion", "--list-targets"],
                          capture_output=True, text=True, env=project.env, timeout=30)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0
    assert proc.stdout.split() == ["knight", "knight-armed", "mage", "bad"]
    assert not {"pydantic", "httpx", "PIL"} & set(report["modules"])


def test_listing_targets_of_an_unreadable_manifest_prints_nothing(project: Project) -> None:
    project.manifest("[images.a\n")  # not TOML
    result = project.run("completion", "--list-targets")
    assert (result.code, result.out, result.err) == (0, "", "")


def test_completion_needs_a_shell(project: Project) -> None:
    result = project.run("completion")
    assert result.code == 2 and "bash, zsh or fish" in result.err


def test_help_does_not_load_the_completion_code() -> None:
    code = ("import sys\nfrom imgbuild import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('imgbuild.completion' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.stderr.strip().splitlines()[-1] == "False"


def test_the_target_name_pattern_is_the_manifests() -> None:
    from imgbuild import completion, manifest

    assert completion.TARGET_NAME_PATTERN == manifest.TARGET_NAME_PATTERN


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_shell_the_readme_names_has_a_script_and_its_shell_is_here(shell: str) -> None:
    needs(shell)
    # The scripts are run in their real shells above: those tests need bash, zsh and fish installed.
    assert shutil.which(shell), f"{shell} is not installed: the completion tests need it (apt-get install {shell})"
