"""Targets → a DAG by paths, as in make: an input that is another target's output is a dependency."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from .errors import Problem

if TYPE_CHECKING:
    from .target import Target


def producers_of(targets: Mapping[str, Target]) -> tuple[dict[str, str], list[Problem]]:
    """Output path → the target that makes it; two targets writing one path is a problem."""
    producers: dict[str, str] = {}
    problems = []
    for name in sorted(targets):
        for out in targets[name].outputs:
            other = producers.setdefault(out, name)
            if other != name:
                problems.append(Problem(f"images.{name}.output", f"{out} is also the output of images.{other}"))
    problems.extend(case_clashes(targets))
    return producers, problems


def case_clashes(targets: Mapping[str, Target]) -> list[Problem]:
    """Target names and output paths that differ only in case: one name, one file on macOS and
    Windows, so a project that builds on Linux would break there."""
    problems = []
    names: dict[str, str] = {}
    paths: dict[str, tuple[str, str]] = {}
    for name in sorted(targets):
        first = names.setdefault(name.casefold(), name)
        if first != name:
            problems.append(Problem(f"images.{name}", f"differs from images.{first} only in case; "
                                    "they would collide on macOS and Windows: rename one"))
            continue  # its default outputs clash too: one mistake, one line
        for out in targets[name].outputs:
            other, other_out = paths.setdefault(out.casefold(), (name, out))
            if other_out != out:
                problems.append(Problem(f"images.{name}.output", f"{out} differs from {other_out} (the output of "
                                        f"images.{other}) only in case; one file on macOS and Windows: rename one"))
    return problems


def dependencies(targets: Mapping[str, Target], producers: Mapping[str, str]) -> dict[str, list[str]]:
    """Target → the targets whose outputs it reads, sorted, without repeats."""
    return {
        name: sorted({producers[p] for p in t.inputs if p in producers})
        for name, t in targets.items()
    }


def find_cycles(targets: Mapping[str, Target], producers: Mapping[str, str]) -> list[Problem]:
    deps = dependencies(targets, producers)
    problems: list[Problem] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    reported: set[frozenset[str]] = set()
    for start in sorted(deps):
        if state.get(start):
            continue
        # Iterative DFS: manifests with long chains must not hit the recursion limit.
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(deps[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(Problem(f"images.{nxt}", "dependency cycle: " + " → ".join(cycle)))
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(deps[nxt])))
    return problems


def topological_order(deps: Mapping[str, list[str]]) -> list[str]:
    """Dependencies first; ties by name, so the order is the same on every run."""
    import heapq

    waiting = {n: len(d) for n, d in deps.items()}
    users: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            users[d].append(n)
    ready = [n for n, c in waiting.items() if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return order


def closure(deps: Mapping[str, list[str]], names: Iterable[str]) -> set[str]:
    """The named targets and everything they depend on, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(deps[n])
    return seen


def render(targets: Mapping[str, Target], deps: Mapping[str, list[str]], fmt: str) -> str:
    """The graph as Graphviz dot or Mermaid text."""
    names = sorted(targets)
    if fmt == "mermaid":
        ids = {n: f"t{i}" for i, n in enumerate(names)}
        lines = ["graph LR"]
        lines += [f'    {ids[n]}["{n}"]' for n in names]
        lines += [f"    {ids[d]} --> {ids[n]}" for n in names for d in deps[n]]
    else:
        lines = ["digraph imgbuild {", "    rankdir=LR;", "    node [shape=box];"]
        lines += [f'    "{n}";' for n in names]
        lines += [f'    "{d}" -> "{n}";' for n in names for d in deps[n]]
        lines.append("}")
    return "\n".join(lines) + "\n"
