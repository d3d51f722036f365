"""``${name}`` in prompts, prompt files and ``[vars]`` itself; ``$$`` is a literal ``$``.

A var may use other vars: they are resolved first, recursively, and a cycle is an error naming it.
A ``${...}`` that cannot be resolved is always an error, never text sent to the API. A mistake is
reported once, where it is: a prompt that uses a broken var says nothing more about it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from .errors import Problem

# `$$`, `${name}`, or a `${` that is never closed.
_REFERENCE = re.compile(r"\$(\$|\{([^}]*)\}|\{)")


def substitute(text: str, variables: Mapping[str, str], where: str, problems: list[Problem],
               broken: Collection[str] | None = ()) -> str:
    """``text`` with its references replaced. ``broken`` names vars already reported as mistakes
    (their users stay silent); ``None`` when [vars] itself is unreadable, so no name can be judged."""
    if "$" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name = m.group(2)
        if name is None:
            problems.append(Problem(where, "a ${ is never closed (write $$ for a literal $)"))
            return m.group(0)
        if name in variables:
            return variables[name]
        if broken is not None and name not in broken:
            problems.append(Problem(where, f"${{{name}}} is not defined in [vars]"))
        return m.group(0)

    return _REFERENCE.sub(repl, text)


def resolve_vars(raw: Mapping[str, str], problems: list[Problem],
                 reported: Collection[str] = ()) -> tuple[dict[str, str], set[str]]:
    """Every var with the vars it uses resolved: (resolved, names of the broken ones).

    A broken var (a cycle, or a reference to nothing) is reported once, at ``vars.NAME``;
    ``reported`` names vars already reported elsewhere (a value that is not a string)."""
    resolved: dict[str, str] = {}
    broken: set[str] = set(reported)
    for name in raw:
        _resolve_one(name, raw, resolved, broken, [], problems)
    return resolved, broken


def _resolve_one(name: str, raw: Mapping[str, str], resolved: dict[str, str], broken: set[str],
                 path: list[str], problems: list[Problem]) -> None:
    if name in resolved or name in broken:
        return
    if name in path:
        cycle = path[path.index(name):] + [name]
        problems.append(Problem(f"vars.{name}", "the vars use each other in a cycle: " + " → ".join(cycle)))
        broken.update(cycle)
        return
    path.append(name)
    for used in _references(raw[name]):
        if used in raw:
            _resolve_one(used, raw, resolved, broken, path, problems)
    path.pop()
    if name in broken:  # part of a cycle found deeper down: already reported
        return
    before = len(problems)
    value = substitute(raw[name], resolved, f"vars.{name}", problems, broken)
    # A var that uses a broken one is broken too, but says nothing: its user's mistake is reported.
    if len(problems) > before or any(u in broken for u in _references(raw[name])):
        broken.add(name)
    else:
        resolved[name] = value


def _references(text: str) -> list[str]:
    return [m.group(2) for m in _REFERENCE.finditer(text) if m.group(2) is not None]


def var_names(raw_vars: Any) -> set[str] | None:
    """The names [vars] declares as written, also those whose value is not a string; None when
    [vars] is not a table at all."""
    return set(raw_vars) if isinstance(raw_vars, dict) else None
