"""Fixtures that start real things: a project in a temporary folder, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["apiserver"]
# The suite never sees a real key: every variable a provider could read a key from is dropped
# before any test runs (a test that needs one sets its own, to the local server's test key).
for _name in ("OPENAI_API_KEY", "AIMLAPI_API_KEY", "IMGBUILD_API_KEY", "IMGBUILD_API_KEY_ENV"):
    os.environ.pop(_name, None)


def key_variables() -> set[str]:
    """Every variable a preset reads a key from, and anything else named like a secret (a test's
    manifest may name GITHUB_TOKEN, as a hostile one would)."""
    from imgbuild.providers import PRESETS

    named = {p.api_key_env for p in PRESETS.values() if p.api_key_env}
    named |= {"OPENAI_API_KEY", "AIMLAPI_API_KEY", "IMGBUILD_API_KEY"}
    secret = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
    return named | {name for name in os.environ if secret.search(name)}


# Before any test runs (conftest is imported before collection): the suite never sees a real key,
# neither in this process nor in the CLI subprocesses it starts, which inherit this environment.
for _name in key_variables():
    os.environ.pop(_name, None)


def _share_compiled_bytecode() -> None:
    """The suite starts the CLI as a subprocess over a thousand times. Where the environment says
    PYTHONDONTWRITEBYTECODE (some sandboxes do), each of them compiled every imgbuild module from
    source again (an editable install ships no .pyc): ~0.15 s of CPU per start. The children write
    their bytecode to one folder of this session instead, outside the source tree; nothing a test
    checks depends on it (a failed bytecode write is ignored by Python)."""
    import atexit
    import shutil
    import tempfile

    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    folder = tempfile.mkdtemp(prefix="imgbuild-tests-pyc-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = folder


_share_compiled_bytecode()


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]

    @property
    def summary(self) -> dict[str, Any]:
        found = [e for e in self.events if e.get("event") == "summary"]
        assert found, f"no summary in output:\n{self.out}\n{self.err}"
        return found[-1]

    @property
    def requests(self) -> int:
        return int(self.summary["requests"])


def png(path: Path, size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (200, 40, 40, 255),
        mode: str = "RGBA") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color[: len(mode)]).save(path)
    return path


class Project:
    """A project folder with its own cache; `run` invokes the CLI as a user does."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root = root
        self.cache = cache
        self.env = {**os.environ, "IMGBUILD_CACHE_DIR": str(cache), "NO_COLOR": "1"}
        for key in ("IMGBUILD_PROVIDER", "IMGBUILD_BASE_URL", "IMGBUILD_PLACEHOLDER_DELAY"):
            self.env.pop(key, None)

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def manifest(self, text: str) -> Path:
        return self.write("images.toml", text)

    def png(self, rel: str, **kw: Any) -> Path:
        return png(self.root / rel, **kw)

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "imgbuild", "-C", str(self.root), *args],
            capture_output=True, text=True, timeout=timeout, env={**self.env, **(env or {})},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def run_in_process(self, *args: str) -> Result:
        """`run`, through the very function the CLI's entry point calls (``imgbuild.cli.main``),
        in this process: the same exit codes and lines, without a Python start-up per call."""
        import contextlib
        import io

        from imgbuild import cli

        out, err = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in ("IMGBUILD_CACHE_DIR", "IMGBUILD_PROVIDER", "IMGBUILD_BASE_URL")}
        os.environ["IMGBUILD_CACHE_DIR"] = str(self.cache)
        os.environ.pop("IMGBUILD_PROVIDER", None)
        os.environ.pop("IMGBUILD_BASE_URL", None)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["-C", str(self.root), *args])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return Result(code, out.getvalue(), err.getvalue())

    def build(self, *args: str, **kw: Any) -> Result:
        result = self.run("build", "--json", *args, **kw)
        return result

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def lock(self) -> dict[str, Any]:
        import tomllib

        return tomllib.loads((self.root / "images.lock").read_text())

    def checkout_of(self, other: Project) -> Project:
        """Make this folder what a fresh clone of ``other`` would hold: its files (outputs and lock
        included, as committed) without its machine-local ``.imgbuild/``."""
        import shutil

        shutil.copytree(other.root, self.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".imgbuild"))
        return self

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) of every file outside .imgbuild/, to prove nothing was touched."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file() and ".imgbuild" not in p.parts:
                st = p.stat()
                out[str(p.relative_to(self.root))] = (st.st_size, st.st_mtime_ns)
        return out


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    root.mkdir()
    return Project(root, tmp_path / "cache")


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[[str], Project]:
    def make(name: str, cache: str = "cache") -> Project:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        return Project(root, tmp_path / cache)

    return make


_built_once: dict[tuple[str, Callable[[Project], object] | None], Project] = {}


def copy_of_built(project: Project, manifest: str, inputs: Callable[[Project], object] | None = None) -> Project:
    """``project`` (and its cache) as its first build of ``manifest`` left it, after ``inputs``
    wrote its input files: a copy of a project built once per session (a placeholder build of a
    few targets costs a second or two; many tests only start from one). The copy has new inodes,
    so its first command takes the full path: for tests whose subject comes after that build,
    not the build itself."""
    import atexit
    import shutil
    import tempfile

    built = _built_once.get((manifest, inputs))
    if built is None:
        base = Path(tempfile.mkdtemp(prefix="imgbuild-built-once-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        built = Project(base / "proj", base / "cache")
        if inputs is not None:
            inputs(built)
        built.manifest(manifest)
        result = built.build()
        assert result.code == 0, result.err
        _built_once[(manifest, inputs)] = built
    shutil.copytree(built.root, project.root, dirs_exist_ok=True)
    shutil.copytree(built.cache, project.cache, dirs_exist_ok=True)
    return project
