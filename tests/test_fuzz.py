"""A manifest and lock fuzzer (issue 9's acceptance): generated and mutated manifests and lock
files through the real loading, planning and building path. Whatever comes in: never an internal
error (exit 3) or a traceback, every line printed is one line with no raw control character, and
nothing is written on exit 2, nor anywhere outside the project and the cache.

Most examples run in this process through ``imgbuild.cli.main`` (the function the command line
calls, mapping exceptions to exit codes); a handful through the real CLI in a subprocess. The
examples are derived from a fixed seed (``derandomize``), so CI runs the same few hundred each
time, in well under 30 s.
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w
from conftest import Project, Result, png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

# -- what a manifest may hold ----------------------------------------------------------------------

HOSTILE = ["", "x", "a\x00b", "hero\n", "\x1b[2J\x1b[H", "..", "../x", "/etc/passwd", "a" * 300,
           "１０２４", "${nope}", "$$", "${style}", "C:\\x", "\u202egnp.exe", "\r\n", "a\tb", " "]
PATHS = ["in.png", "m.png", "bomb.png", "p.md", "dir", "notimage.png", "out/a.png", "a.jpg", "a.webp",
         "a.gif", "out/../out/b.png", ".imgbuild/x.png", ".git/x.png", "images.lock", "images.toml"]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))
path = st.one_of(st.sampled_from(PATHS), st.sampled_from(HOSTILE), st.text(max_size=12))
scalar = st.one_of(text, st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.datetimes())
value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(text, inner, max_size=3)), max_leaves=8)
deep = st.integers(1, 60).map(lambda n: {"k": [[]] if n == 1 else _nest(n)})


def _nest(n: int) -> Any:
    out: Any = 1
    for _ in range(n):
        out = [out]
    return out


FIELDS: dict[str, Any] = {
    "prompt": st.one_of(text, st.just("a knight ${style}")),
    "prompt_file": path,
    "output": path,
    "size": st.one_of(st.sampled_from(["1024x1024", "1536x1024", "auto", "1000x1000", "1024x1024\n",
                                       "１０２４x１０２４", "0x0", "99999x99999", "1x1", "1" * 40 + "x16"]), text),
    "quality": st.sampled_from(["low", "medium", "high", "auto", "ultra", "LOW"]),
    "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
    "background": st.sampled_from(["transparent", "opaque", "auto", "x"]),
    "moderation": st.sampled_from(["low", "auto", "x"]),
    "output_compression": st.integers(-5, 120),
    "n": st.integers(-2, 12),
    "images": st.lists(path, max_size=3),
    "mask": path,
    "revision": st.integers(-3, 2**65),
    "pinned": st.booleans(),
    "extra": st.one_of(st.dictionaries(text, value, max_size=3), deep),
}
target = st.dictionaries(st.sampled_from(list(FIELDS)), st.none(), max_size=7).flatmap(
    lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys},
                                       optional={"colour": value}))  # an unknown field, now and then
target = st.one_of(target, st.fixed_dictionaries({"prompt": st.just("x")}), value)
name = st.one_of(st.sampled_from(["a", "b", "hero", "hero\n", "a" * 300, "bad name", "-x", "é"]), text)
provider = st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["openai", "aimlapi", "compatible", "placeholder", "other"]),
    "base_url": st.sampled_from(["http://127.0.0.1:9/v1", "file:///etc", "x"]),
    "api_key_env": st.sampled_from(["OPENAI_API_KEY", "GITHUB_TOKEN", "X", "1X", "A\nB"]),
    "concurrency": st.integers(-1, 100), "timeout": st.floats(), "max_retries": st.integers(-1, 30),
    "confirm_above": st.floats(), "prices": st.one_of(value, st.fixed_dictionaries({"per_image": st.floats()})),
})
manifest = st.fixed_dictionaries(
    {"images": st.one_of(st.dictionaries(name, target, min_size=1, max_size=4), value)},
    optional={"out_dir": path, "provider": st.one_of(provider, value), "vars": st.one_of(
        st.dictionaries(text, text, max_size=3), value), "defaults": st.one_of(
        st.fixed_dictionaries({}, optional={k: FIELDS[k] for k in ("size", "quality", "n", "extra")}), value),
        "bogus": value},
)
COMMANDS = st.sampled_from([("status",), ("build", "-n"), ("check",), ("build", "--json"), ("graph",),
                            ("clean",), ("build", "-k", "a")])

# -- a project to run them in ------------------------------------------------------------------------


def bomb(path: Path) -> None:
    """A PNG header declaring 30000x30000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 6, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


TEMPLATE = Path(tempfile.mkdtemp(prefix="imgbuild-fuzz-template-"))
BUILT = Path(tempfile.mkdtemp(prefix="imgbuild-fuzz-built-"))
for _folder in (TEMPLATE, BUILT):
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)
png(TEMPLATE / "in.png")
png(TEMPLATE / "m.png", color=(0, 0, 0, 0))
bomb(TEMPLATE / "bomb.png")
(TEMPLATE / "p.md").write_text("a knight ${style}")
(TEMPLATE / "dir").mkdir()
(TEMPLATE / "notimage.png").write_text("hello")


@contextmanager
def fresh_project() -> Iterator[Project]:
    base = Path(tempfile.mkdtemp(prefix="imgbuild-fuzz-"))
    try:
        shutil.copytree(TEMPLATE, base / "proj")
        yield Project(base / "proj", base / "cache")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def everything(base: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in base.rglob("*"):
        if not p.is_dir():
            st_ = p.lstat()
            out[str(p.relative_to(base))] = (st_.st_size, st_.st_mtime_ns)
    return out


def check(project: Project, result: Result, before: dict[str, tuple[int, int]]) -> None:
    """The properties every run must have, whatever it was given."""
    assert result.code in (0, 1, 2), (result.code, result.err)
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    for line in (result.err + result.out).splitlines():
        assert not any(ord(c) < 32 and c != "\t" or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    base = project.root.parent
    after = everything(base)
    outside = {p for p in set(after) ^ set(before) if not (p.startswith("proj/") or p.startswith("cache/"))}
    assert not outside, outside
    if result.code == 2:
        assert after == before, set(after) ^ set(before)
        for line in result.err.splitlines():
            assert line.startswith(("images.toml", "images.lock", "error: ", "warning: ")), line


def run(project: Project, data: bytes, command: tuple[str, ...], *, in_process: bool = True) -> None:
    (project.root / "images.toml").write_bytes(data)
    before = everything(project.root.parent)
    args = (*command, "--provider", "placeholder") if command[0] not in ("clean", "graph") else command
    result = project.run_in_process(*args) if in_process else project.run(*args)
    check(project, result, before)


def toml_of(doc: Any) -> bytes:
    return tomli_w.dumps(doc if isinstance(doc, dict) else {"images": doc}).encode()


# -- the properties ------------------------------------------------------------------------------------

@settings(max_examples=150, **FUZZ)
@given(doc=manifest, command=COMMANDS)
def test_generated_manifests_never_crash_and_write_nothing_on_exit_2(doc: dict[str, Any],
                                                                     command: tuple[str, ...]) -> None:
    with fresh_project() as project:
        run(project, toml_of(doc), command)


GOOD = toml_of({"vars": {"style": "flat"}, "images": {
    "a": {"prompt": "a knight ${style}", "size": "1024x1024"},
    "b": {"prompt_file": "p.md", "images": ["in.png"], "mask": "m.png", "output": "out/b.webp", "quality": "low"},
    "c": {"prompt": "c", "images": ["out/b.webp"], "extra": {"k": [1, {"x": "y"}]}, "n": 2},
}})


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """``data`` with a few bytes inserted, deleted or replaced: mostly invalid TOML, or valid TOML
    that says something else."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(out)))
        piece = draw(st.one_of(st.binary(min_size=1, max_size=3),
                               st.sampled_from([b"[", b"]", b"\"", b"\n", b"=", b"\x00", b"\\u0000", b"..", b"#",
                                                b"[images.a]\n", b"1" * 4400, b"\xff", b"[" * 600])))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            out[at:at] = piece
        elif op == "delete":
            del out[at:at + len(piece)]
        else:
            out[at:at + len(piece)] = piece
    return bytes(out)


@settings(max_examples=80, **FUZZ)
@given(data=mutated(GOOD), command=COMMANDS)
def test_mutated_manifests_never_crash_and_write_nothing_on_exit_2(data: bytes, command: tuple[str, ...]) -> None:
    with fresh_project() as project:
        run(project, data, command)


def built_project() -> Project:
    """The GOOD project, built once with the placeholder; its lock is what gets mutated."""
    if not (BUILT / "proj" / "images.lock").exists():
        shutil.copytree(TEMPLATE, BUILT / "proj", dirs_exist_ok=True)
        project = Project(BUILT / "proj", BUILT / "cache")
        (project.root / "images.toml").write_bytes(GOOD)
        result = project.run_in_process("build", "--provider", "placeholder")
        assert result.code == 0, result.err
    return Project(BUILT / "proj", BUILT / "cache")


@st.composite
def reshaped(draw: Any, data: bytes) -> bytes:
    """The lock ``data`` parsed, with one value somewhere in it replaced by any other value."""
    import tomllib

    doc = tomllib.loads(data.decode())
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or not node[key] or draw(st.booleans()):
            node[key] = draw(value)
            return tomli_w.dumps(doc).encode()
        node = node[key]


@settings(max_examples=60, **FUZZ)
@given(data=st.data(), command=st.sampled_from([("status",), ("build", "--json"), ("check",)]))
def test_mutated_locks_never_crash_and_write_nothing_on_exit_2(data: Any, command: tuple[str, ...]) -> None:
    built = built_project()
    lock = (built.root / "images.lock").read_bytes()
    with fresh_project() as project:
        shutil.copytree(built.root, project.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".imgbuild"))
        shutil.copytree(built.cache, project.cache)
        (project.root / "images.lock").write_bytes(data.draw(st.one_of(mutated(lock), reshaped(lock))))
        before = everything(project.root.parent)
        result = project.run_in_process(*command, "--provider", "placeholder")
        check(project, result, before)


@settings(max_examples=5, **FUZZ)
@given(doc=manifest)
def test_the_real_cli_agrees_on_a_few_generated_manifests(doc: dict[str, Any]) -> None:
    with fresh_project() as project:
        run(project, toml_of(doc), ("build", "--json"), in_process=False)


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_the_fast_lock_reader_reads_every_lock_as_tomllib_does(data: Any) -> None:
    """lockfile reads the lock with rtoml when it can: whatever tomllib reads, it reads the same,
    and whatever tomllib refuses, it refuses (tomllib's error is the one given)."""
    import tomllib

    from imgbuild.lockfile import _parse

    lock = (built_project().root / "images.lock").read_bytes()
    raw = data.draw(st.one_of(mutated(lock), reshaped(lock)))
    try:
        expected: Any = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        expected = type(exc)
    try:
        got: Any = _parse(raw)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        got = type(exc)
    assert got == expected


# A manifest of the kind rtoml's answer is taken for (no inline table), and lines of what TOML 1.1
# or rtoml read differently from tomllib, to insert between its lines.
PLAIN = b"""# a project
out_dir = "assets"

[provider]
name = "placeholder"
timeout = 30.5
concurrency = 2

[defaults]
quality = "low"

[vars]
style = "flat, ${not} a var"

[images.a]
prompt = "a knight ${style}"  # a comment
size = "1024x1024"
revision = 9223372036854775807

[images.b]
prompt_file = 'p.md'
images = ["in.png",
  "out/a.png",  # the hero
]
mask = "m.png"
pinned = true
prompt = \"\"\"several
lines\"\"\"

[images.b.extra]
k = [1, 2.5, -0.0, "x"]
"quoted key" = 'literal \\ string'
"""
TOML_11_LINES = [b"x = { b = 1, }\n", b"x = {\n b = 1 }\n", b"x = { b = 1 }\n", b'x = "\\e"\n', b'x = "\\x41"\n',
                 b"t = 12:30\n", b"d = 1979-05-27T07:32:00Z\n", b"d = 1979-05-27T07:32Z\n", b"d = 1979-05-27\n",
                 b"f = nan\n", b"f = -inf\n", b"f = 1e400\n", b'm = """a\r\nb"""\n', b"m = '''a\r\nb'''\n",
                 b'k."\xc3\xa9" = 1\n', b"\xc3\xa9 = 1\n", b"i = 99999999999999999999\n", b'x = "${x}"\n',
                 b"x = [{ b = 1 }]\n", b"[[arr]]\n", b"x.y = 1\n", b"\xef\xbb\xbf"]


@st.composite
def with_toml_11_lines(draw: Any, data: bytes) -> bytes:
    """``data`` with a few of TOML_11_LINES inserted at line starts."""
    out = data
    for _ in range(draw(st.integers(1, 3))):
        starts = [0] + [i + 1 for i, byte in enumerate(out) if byte == ord("\n")]
        at = draw(st.sampled_from(starts))
        out = out[:at] + draw(st.sampled_from(TOML_11_LINES)) + out[at:]
    return out


def _read_alike(raw: bytes) -> None:
    import tomllib

    from imgbuild.resolve import toml_loads

    text = raw.decode("utf-8", "replace")
    try:
        expected: Any = repr(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = repr(toml_loads(text))
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        got = (type(exc), str(exc))
    assert got == expected


@settings(max_examples=300, **FUZZ)
@given(raw=st.one_of(mutated(PLAIN), with_toml_11_lines(PLAIN), mutated(GOOD), manifest.map(toml_of)))
def test_the_fast_manifest_reader_reads_every_manifest_as_tomllib_does(raw: bytes) -> None:
    """resolve reads the manifest with rtoml where that is certainly tomllib's answer: whatever
    tomllib reads, it reads the same (in the same order), and whatever tomllib refuses, it refuses
    (tomllib's error, with its place, is the one given)."""
    _read_alike(raw)


def test_the_fast_manifest_reader_reads_each_toml_11_line_anywhere_as_tomllib_does() -> None:
    starts = [0] + [i + 1 for i, byte in enumerate(PLAIN) if byte == ord("\n")]
    for line in TOML_11_LINES:
        for at in starts:
            _read_alike(PLAIN[:at] + line + PLAIN[at:])
