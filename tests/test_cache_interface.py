"""The engine sees the cache only through its interface (cache.CacheStore): has / get / put of
objects by sha256 and of run-cache entries by spec digest, a staging place, reads by content.
Nothing outside the cache layer (cache.py, remotecache.py, remote/) knows how a cache lays out
its folders."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

import imgbuild
from imgbuild.cache import CacheStore, LocalCache

PACKAGE = Path(imgbuild.__file__).parent
CACHE_LAYER = {"cache.py", "remotecache.py", "remote"}
# The local folder's own operations: by path, not by content.
FOLDER_NAMES = {"object_path", "staging_dir", "discard_staging", "adopt_leftovers", "incoming", "admit"}
PRIVATE_LAYOUT = {"_object", "_run"}  # LocalCache's path builders, reached from outside
LAYOUT_LITERALS = ("objects", "runs", "projects.json")  # the cache folder's entries
INTERFACE_ONLY = {"executor.py", "requesting.py", "restoring.py", "deriving.py", "lockwriter.py", "budget.py",
                  "plan.py", "context.py", "safekeep.py", "copybatch.py", "takes.py"}


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


# -- the layered store (local first, then a remote) as the project's cache ---------------------

PLACEHOLDER = """
[provider]
name = "placeholder"

[images.hero]
prompt = "a knight on a hill"
output = "assets/hero.png"
candidates = 3

[images.logo]
prompt = "a round logo"
output = "assets/logo.png"
"""


def _layered(cache: Path, remote: Path):  # type: ignore[no-untyped-def]
    from imgbuild.remote import open_remote
    from imgbuild.remotecache import RemoteCache

    return RemoteCache(LocalCache(cache), open_remote(remote.as_uri(), "readwrite"))


def _load(project: Project, layered: Any) -> Any:  # type: ignore[no-untyped-def]
    from imgbuild.project import Project as Library

    loaded = Library.load(project.root)
    loaded.cache = layered
    return loaded


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_the_layered_store_has_every_operation_of_the_interface() -> None:
    from imgbuild.remotecache import RemoteCache

    test_an_implementation_has_every_operation_of_the_interface(RemoteCache)


def test_a_build_through_the_layered_store_keeps_its_images_locally_and_uploads_them(
        make_project: Callable[..., Project], tmp_path: Path) -> None:
    project = make_project("first")
    project.manifest(PLACEHOLDER)
    layered = _layered(project.cache, tmp_path / "remote")

    summary = _load(project, layered).build()
    uploaded = asyncio.run(layered.drain())

    assert summary.built == 2 and summary.complete
    locked = [o["sha256"] for e in project.lock()["targets"].values() for o in e["outputs"]]
    assert all(layered.local.has(sha) for sha in locked)
    assert uploaded == 4  # the logo and the hero's three takes
    assert len(_files(tmp_path / "remote")) == 4 + 2  # and a run entry each


def test_a_restore_through_the_layered_store_fetches_what_only_the_remote_holds(
        make_project: Callable[..., Project], tmp_path: Path) -> None:
    first = make_project("first")
    first.manifest(PLACEHOLDER)
    layered = _layered(first.cache, tmp_path / "remote")
    _load(first, layered).build()
    asyncio.run(layered.drain())
    clone = make_project("clone", cache="clone-cache").checkout_of(first)
    for rel in ("assets/hero.png", "assets/logo.png"):
        (clone.root / rel).unlink()
    other = _layered(clone.cache, tmp_path / "remote")
    locked = [o["sha256"] for e in clone.lock()["targets"].values() for o in e["outputs"]]
    asyncio.run(other.look_up([], locked, confirm=True))

    summary = _load(clone, other).build()

    assert (summary.restored, summary.built, summary.requests) == (2, 0, 0)
    assert clone.read("assets/hero.png") == first.read("assets/hero.png")
    assert clone.read("assets/logo.png") == first.read("assets/logo.png")
    assert all(other.local.has(sha) for sha in locked)  # fetched, checked, into the local layer


def test_pick_through_the_layered_store_copies_the_take_from_it(
        make_project: Callable[..., Project], tmp_path: Path) -> None:
    project = make_project("first")
    project.manifest(PLACEHOLDER)
    layered = _layered(project.cache, tmp_path / "remote")
    _load(project, layered).build()
    second = project.lock()["targets"]["hero"]["takes"][1]["sha256"]

    _load(project, layered).pick("hero", 2)

    assert hashlib.sha256(project.read("assets/hero.png")).hexdigest() == second


def test_accept_through_the_layered_store_keeps_the_edited_bytes_in_it(
        make_project: Callable[..., Project], tmp_path: Path) -> None:
    project = make_project("first")
    project.manifest(PLACEHOLDER)
    layered = _layered(project.cache, tmp_path / "remote")
    _load(project, layered).build(["logo"])
    project.png("assets/logo.png", color=(1, 2, 3, 255))  # touched up by hand
    edited = hashlib.sha256(project.read("assets/logo.png")).hexdigest()

    _load(project, layered).accept(["logo"])

    assert project.lock()["targets"]["logo"]["outputs"][0]["sha256"] == edited
    assert layered.has(edited) and layered.local.has(edited)


def test_review_through_the_layered_store_links_takes_to_files_on_this_machine(
        make_project: Callable[..., Project], tmp_path: Path) -> None:
    from imgbuild.review.command import write_page

    project = make_project("first")
    project.manifest(PLACEHOLDER)
    layered = _layered(project.cache, tmp_path / "remote")
    _load(project, layered).build(["hero"])
    takes = [t["sha256"] for t in project.lock()["targets"]["hero"]["takes"]]

    page = write_page(_load(project, layered)).read_text()

    for sha in takes[1:]:  # not the output: those are shown from the project
        assert layered.viewable_path(sha).as_uri() in page  # type: ignore[union-attr]


@pytest.fixture
def disks() -> Iterator[Any]:
    from test_disk_faults import Disks

    made = Disks()
    yield made
    made.undo()


def test_a_paid_image_the_layered_store_cannot_take_goes_to_the_rescue_folder(
        make_project: Callable[..., Project], tmp_path: Path, disks: Any) -> None:
    project = make_project("first")
    project.manifest(PLACEHOLDER)
    layered = _layered(project.cache, tmp_path / "remote")
    disks.read_only(project.cache / "objects")
    disks.read_only(project.root / "assets")

    summary = _load(project, layered).build(["logo"])

    assert summary.uncached == 1 and not summary.complete
    rescued = _files(project.root / ".imgbuild" / "rescue" / "logo")
    assert [p.read_bytes()[:8] for p in rescued] == [b"\x89PNG\r\n\x1a\n"]
