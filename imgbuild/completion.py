"""Shell completion: ``imgbuild completion bash|zsh|fish`` prints a script for that shell.

The commands and options in each script are read from the CLI's own parser when the script is
made, so they cannot fall behind it. Target names are the one thing that changes with the project:
the scripts ask ``imgbuild [-C DIR] [-f MANIFEST] completion --list-targets``, which reads the
manifest with :mod:`tomllib` alone (no validation, no pydantic), so a tab press stays quick.

Imported only by the ``completion`` command: ``imgbuild --help`` never loads it.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
# Top-level options whose value is a path: completed as a folder or a file by the shell itself.
PATH_OPTIONS = {"-C": "dir", "-f": "file"}
# manifest.TARGET_NAME_PATTERN, copied: that module imports pydantic, too slow for a key press.
TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


@dataclass
class Command:
    name: str
    help: str
    options: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)  # option -> its choices ([] = free)
    targets: bool = False


@dataclass
class Spec:
    """What the scripts complete, read from the parser."""

    options: list[str]
    values: dict[str, list[str]]
    commands: list[Command]


def read_parser(parser: argparse.ArgumentParser) -> Spec:
    top = Command("", "")
    _read_actions(parser, top)
    commands = []
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, p in sub.choices.items():
        command = Command(name, helps.get(name, ""))
        _read_actions(p, command)
        commands.append(command)
    return Spec(top.options, top.values, commands)


def _read_actions(parser: argparse.ArgumentParser, into: Command) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if not action.option_strings:
            into.targets = into.targets or action.dest == "targets"
            continue
        if action.help == argparse.SUPPRESS:
            continue  # hidden: for the scripts themselves or for tests
        into.options.extend(action.option_strings)
        if action.nargs != 0:
            for option in action.option_strings:
                into.values[option] = [str(c) for c in action.choices or ()]


def list_targets(directory: str, manifest: str) -> list[str]:
    """The target names of the manifest, in its order; none when it cannot be read. Only TOML
    is parsed: completion must answer within a key press, even for a broken manifest."""
    try:
        data = tomllib.loads((Path(directory) / manifest).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    images = data.get("images")
    if not isinstance(images, dict):
        return []
    return [name for name in images if re.match(TARGET_NAME_PATTERN, name)]


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    spec = read_parser(parser)
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](spec)


def _words(items: list[str]) -> str:
    return " ".join(items)


def _value_cases(spec: Spec, pattern: str, choices: str, free: str) -> list[str]:
    """Case arms for `<command> <option>`: complete an option's choices, or nothing for a free
    value (a number, a URL)."""
    arms = []
    for command in spec.commands:
        for option, values in command.values.items():
            body = choices.format(values=_words(values)) if values else free
            arms.append(pattern.format(cmd=command.name, opt=option, body=body))
    return arms


def _bash(spec: Spec) -> str:
    commands = _words([c.name for c in spec.commands])
    options_arms = "\n".join(
        f'        {c.name}) opts="{_words(c.options)}"; targets={int(c.targets)};;' for c in spec.commands)
    value_arms = "\n".join(_value_cases(
        spec, '        "{cmd} {opt}") {body};;',
        'COMPREPLY=($(compgen -W "{values}" -- "$cur")); return', "return"))
    return f'''# bash completion for imgbuild. Install: see "Shell completion" in imgbuild's README.
_imgbuild() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" i opts="" targets=0
    local -a project=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            -C|-f) project+=("${{COMP_WORDS[i]}}" "${{COMP_WORDS[i+1]}}"); ((i++));;
            -*) ;;
            *) if [[ -z "$cmd" ]]; then cmd="${{COMP_WORDS[i]}}"; fi;;
        esac
    done
    case "$prev" in
        -C) COMPREPLY=($(compgen -d -- "$cur")); return;;
        -f) COMPREPLY=($(compgen -f -- "$cur")); return;;
    esac
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then
            COMPREPLY=($(compgen -W "{_words(spec.options)}" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "{commands}" -- "$cur"))
        fi
        return
    fi
    case "$cmd $prev" in
{value_arms}
    esac
    case "$cmd" in
{options_arms}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ $targets == 1 ]]; then
        COMPREPLY=($(compgen -W "$(imgbuild "${{project[@]}}" completion --list-targets 2>/dev/null)" -- "$cur"))
    fi
}}
complete -F _imgbuild imgbuild
'''


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace(":", "\\:")


def _zsh(spec: Spec) -> str:
    described = " ".join(f"'{c.name}:{_zsh_quote(c.help)}'" for c in spec.commands)
    options_arms = "\n".join(
        f"        {c.name}) opts=({_words(c.options)}); targets={int(c.targets)};;" for c in spec.commands)
    value_arms = "\n".join(_value_cases(
        spec, "        '{cmd} {opt}') {body};;", "compadd -- {values}; return", "return 1"))
    return f'''#compdef imgbuild
# zsh completion for imgbuild. Install: see "Shell completion" in imgbuild's README.
_imgbuild() {{
    local cur=${{words[CURRENT]}} prev=${{words[CURRENT-1]}} cmd="" i=2 targets=0
    local -a project opts commands
    while (( i < CURRENT )); do
        case ${{words[i]}} in
            -C|-f) project+=(${{words[i]}} ${{words[i+1]}}); (( i++ ));;
            -*) ;;
            *) [[ -z $cmd ]] && cmd=${{words[i]}};;
        esac
        (( i++ ))
    done
    case $prev in
        -C) _files -/; return;;
        -f) _files; return;;
    esac
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            compadd -- {_words(spec.options)}
        else
            commands=({described})
            _describe -t commands 'imgbuild command' commands
        fi
        return
    fi
    case "$cmd $prev" in
{value_arms}
    esac
    case $cmd in
{options_arms}
    esac
    if [[ $cur == -* ]]; then
        compadd -- $opts
    elif (( targets )); then
        compadd -- ${{(f)"$(imgbuild $project completion --list-targets 2>/dev/null)"}}
    fi
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _imgbuild "$@"
else
    compdef _imgbuild imgbuild
fi
'''


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(option: str) -> str:
    return f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"


def _fish(spec: Spec) -> str:
    lines = [
        "# fish completion for imgbuild. Install: see \"Shell completion\" in imgbuild's README.",
        "function __imgbuild_command",
        "    set -l tokens (commandline -opc)",
        "    set -l skip 0",
        "    for t in $tokens[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        "        switch $t",
        "            case -C -f",
        "                set skip 1",
        "            case '-*'",
        "            case '*'",
        "                echo $t",
        "                return 0",
        "        end",
        "    end",
        "    return 1",
        "end",
        "function __imgbuild_using",
        "    set -l cmd (__imgbuild_command); or return 1",
        "    contains -- $cmd $argv",
        "end",
        "function __imgbuild_targets",
        "    set -l tokens (commandline -opc)",
        "    set -l project",
        "    for i in (seq 2 (count $tokens))",
        "        if contains -- $tokens[$i] -C -f; and test $i -lt (count $tokens)",
        "            set -a project $tokens[$i] $tokens[(math $i + 1)]",
        "        end",
        "    end",
        "    imgbuild $project completion --list-targets 2>/dev/null",
        "end",
        "complete -c imgbuild -f",
        "complete -c imgbuild -n 'not __imgbuild_command' -s C -x -a '(__fish_complete_directories)'",
        "complete -c imgbuild -n 'not __imgbuild_command' -s f -r -F",
    ]
    for option in spec.options:
        if option not in PATH_OPTIONS:
            lines.append(f"complete -c imgbuild -n 'not __imgbuild_command' {_fish_option(option)}")
    for command in spec.commands:
        lines.append(f"complete -c imgbuild -n 'not __imgbuild_command' -a {command.name} "
                     f"-d {_fish_quote(command.help)}")
        using = f"-n '__imgbuild_using {command.name}'"
        for option in command.options:
            values = command.values.get(option)
            value = "" if values is None else f" -x -a {_fish_quote(' '.join(values))}" if values else " -x"
            lines.append(f"complete -c imgbuild {using} {_fish_option(option)}{value}")
        if command.targets:
            lines.append(f"complete -c imgbuild {using} -a '(__imgbuild_targets)'")
    return "\n".join(lines) + "\n"
