"""The engine sees the cache only through its interface (cache.CacheStore): has / get / put of
objects by sha256 and of run-cache entries by spec digest, a staging place, reads by content.
Nothing outside the cache layer (cache.py, remotecache.py, remote/) knows how a cache lays out
its folders."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import imgbuild
from imgbuild.cache import CacheStore, LocalCache

PACKAGE = Path(imgbuild.__file__).parent
CACHE_LAYER = {"cache.py", "remotecache.py", "remote"}
# The local folder's own operations: by path, not by content.
FOLDER_NAMES = {"object_path", "staging_dir", "discard_staging", "adopt_leftovers", "incoming", "admit"}
PRIVATE_LAYOUT = {"_object", "_run"}  # LocalCache's path builders, reached from outside
LAYOUT_LITERALS = ("objects", "runs", "projects.json")  # the cache folder's entries
INTERFACE_ONLY = {"executor.py", "plan.py", "context.py", "safekeep.py", "copybatch.py", "takes.py"}


def engine_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] not in CACHE_LAYER)


def folder_uses(source: str, filename: str) -> list[str]:
    """Every place in ``source`` that reaches into a cache's folders: a line each."""
    found: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names.append(node.attr)
            receiver = ast.unparse(node.value)
            if node.attr in PRIVATE_LAYOUT and receiver != "self":
                say(node, f"{receiver}.{node.attr}: a cache's private path")
            last = receiver.rsplit(".", 1)[-1].lower()
            if node.attr == "root" and ("cache" in last or last in ("local", "store", "layer")):
                say(node, f"{receiver}.root: the cache's folder")
        elif isinstance(node, ast.Name):
            names.append(node.id)
        elif isinstance(node, ast.arg):
            names.append(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.keyword) and node.arg:
            names.append(node.arg)
        elif isinstance(node, ast.alias):
            names.append(node.asname or node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in LAYOUT_LITERALS or text.startswith(("objects/", "runs/", "stage-")) or "/objects/" in text:
                say(node, f"{text!r}: a path inside the cache folder")
        for name in names:
            if name in FOLDER_NAMES:
                say(node, f"{name}: a folder-level cache operation")
    return found


def test_no_module_outside_the_cache_layer_reaches_into_cache_folders() -> None:
    found = [line for p in engine_modules()
             for line in folder_uses(p.read_text(encoding="utf-8"), str(p.relative_to(PACKAGE)))]
    assert found == []


@pytest.mark.parametrize("snippet", [
    "source = self.project.cache.object_path(sha)",
    "staging = cache.staging_dir()",
    "self.cache.adopt_leftovers()",
    "cache.discard_staging(path, keep=True)",
    "path = self.project.cache._object(sha)",
    "links = page(project.cache.root / 'x')",
    "objects = root / 'objects'",
    "temp = layer.local.incoming(sha)",
])
def test_the_guard_sees_each_kind_of_folder_use(snippet: str) -> None:
    assert folder_uses(snippet, "x.py"), snippet


def test_the_guard_lets_the_interface_and_project_folders_through() -> None:
    ok = ("with cache.stage() as staging:\n    f = staging.file('a.png')\n"
          "cache.put_file(f); cache.open_object(sha); self.project.root / rel; self._run(d)")
    assert folder_uses(ok, "x.py") == []


def test_the_engine_names_the_interface_not_the_local_folder() -> None:
    """executor, plan, the build context, safekeep, copybatch and takes never name LocalCache;
    the project names it only to make one (in load)."""
    for p in engine_modules():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "LocalCache"]
        if p.name in INTERFACE_ONLY:
            assert uses == [], p
        elif p.name == "project.py":
            calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
            assert all(any(u is c for c in calls) for u in uses), "project.py annotates with LocalCache"


def _parameters(cls: type, name: str) -> list[str] | str:
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, property):
        return "property"
    return [p for p in inspect.signature(getattr(cls, name)).parameters if p != "self"]


def _operations() -> list[str]:
    return [n for n in vars(CacheStore) if not n.startswith("_")]


def test_the_interface_is_small_and_by_content() -> None:
    assert set(_operations()) == {
        "where", "has", "get_run", "put_run", "stage", "put_file", "put_copy", "describe", "open_object",
        "copy_to", "touch", "recover", "viewable_path", "register_project"}


@pytest.mark.parametrize("implementation", [LocalCache])
def test_an_implementation_has_every_operation_of_the_interface(implementation: type) -> None:
    for name in _operations():
        wanted = _parameters(CacheStore, name)
        have = _parameters(implementation, name)
        assert have == wanted if isinstance(wanted, str) else have[:len(wanted)] == wanted, name
