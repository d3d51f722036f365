"""The no-op fast path: "nothing to do" decided from one stat per file, before the engine is imported.

ninja is fast on a no-op because it reads a compact log and stats files. This is ours. After a
full run found every target ``ok`` (a no-op ``build``, or ``status``/``check`` of all targets),
:func:`record` writes ``.imgbuild/noop.marshal``: the manifest's digest (BLAKE2b), the provider
overrides and imgbuild version it was resolved under, the lock's (size, mtime_ns, inode), the same
of every input and output, the inode of every folder on their paths, and the lines to print. The
next run of those commands (:func:`answer`) reads the manifest and that file, hashes the one and
stats each file once, and prints the same answer the full path would: any difference at all, or
anything it does not understand (an option, a target name, a symlink, a newer format), and it
returns None, and the full path runs as before. It imports only the standard library.

Why the answer holds: every target was ``ok`` for those exact bytes of the manifest, those
overrides and that lock, and for input and output files that have not changed since. Whether a
target is ``ok`` does not depend on the cache (that is only consulted for targets that are not),
so no cache entry is part of the state. As with the stat cache, a file whose mtime is within
:data:`RACY_NS` of the run that recorded it is not trusted ("racily clean": rewritten within one
timestamp tick, it would keep its size and mtime); such a state is not written at all, and a later
run writes it. Folders are recorded by inode and must stay folders: one swapped for a symlink (to
outside the project, say) falls back to the full path, which checks where paths lead.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
import time

from . import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs ~5 ms, a tenth of a no-op
if TYPE_CHECKING:
    import subprocess
    import threading

    from .project import Project

FORMAT = 2
FILE = "noop.marshal"
STATE_DIR = ".imgbuild"
RACY_NS = 1_000_000_000  # as in statcache.py: far above any local filesystem's timestamp granularity
PROVIDERS = ("openai", "aimlapi", "compatible", "placeholder")  # --provider's choices
SENTINEL = -987654321  # stands for the count in a recorded summary line
NAME_SENTINEL = "<<name>>"  # JSON leaves it as it is

_run_started_ns = 0  # when this run began: anything modified since is not trusted by what it records

_COMMON = {"--json": "json", "-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
_BUILD_SWITCHES = {"-k": "keep_going", "--keep-going": "keep_going", "--yes": "yes"}  # no bearing on a no-op's answer
_VALUES = {"--provider": "provider", "--base-url": "base_url", "-j": "jobs", "--jobs": "jobs",
           "--max-cost": "max_cost"}
_STATUS_VALUES = frozenset({"--provider", "--base-url"})
_REMOTE_MODES = ("readwrite", "read", "off")


class _Args:
    def __init__(self) -> None:
        self.directory = "."
        self.manifest = "images.toml"
        self.command = ""
        self.flags: set[str] = set()
        self.values: dict[str, str] = {}
        self.targets: list[str] = []


def _parse(argv: list[str]) -> _Args | None:
    """The command line, if it is one the fast path answers: build/status/check with options that
    do not change a no-op's answer. Anything else (help, -n, -B, an unknown or abbreviated option,
    a value that argparse might reject) is left to argparse and the full path."""
    args = _Args()
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in _COMMON:
            args.flags.add(_COMMON[arg])
        elif arg in ("-C", "-f") and i + 1 < len(argv) and argv[i + 1] and not argv[i + 1].startswith("-"):
            i += 1
            if arg == "-C":
                args.directory = argv[i]
            else:
                args.manifest = argv[i]
        else:
            return None
        i += 1
    if i == len(argv) or argv[i] not in ("build", "status", "check"):
        return None
    args.command = argv[i]
    runs = 0  # argparse takes the targets as one run of positionals
    previous_was_target = False
    for arg in (rest := iter(argv[i + 1:])):
        if not arg.startswith("-"):
            runs += 0 if previous_was_target else 1
            if runs > 1:
                return None
            args.targets.append(arg)
            previous_was_target = True
            continue
        previous_was_target = False
        if arg in _COMMON:
            args.flags.add(_COMMON[arg])
        elif args.command == "build" and arg in _BUILD_SWITCHES:
            args.flags.add(_BUILD_SWITCHES[arg])
        elif arg.startswith("--remote=") and arg[9:] in _REMOTE_MODES:
            args.values["remote"] = arg[9:]  # a no-op never asks the remote cache anything, whatever its mode
        elif arg in _VALUES and (args.command == "build" or arg in _STATUS_VALUES):
            value = next(rest, None)
            if value is None or not value or value.startswith("-") or not _valid(_VALUES[arg], value):
                return None
            args.values[_VALUES[arg]] = value
        else:
            return None
    return args


def _valid(option: str, value: str) -> bool:
    if option == "provider":
        return value in PROVIDERS
    if option == "jobs":
        return value.isascii() and value.isdigit() and int(value) >= 1
    if option == "max_cost":  # a no-op estimates $0: any limit of 0 or more lets it through
        return value.isascii() and value.replace(".", "", 1).isdigit()
    return True


def _overrides(provider: str | None, base_url: str | None) -> tuple[str | None, str | None]:
    """As resolve.Overrides.from_env: the command line wins over the environment."""
    return (provider or os.environ.get("IMGBUILD_PROVIDER") or None,
            base_url or os.environ.get("IMGBUILD_BASE_URL") or None)


def _paths(directory: str, manifest: str) -> tuple[str, str]:
    """(root, manifest path) as Project.load finds them: Path(directory).absolute() / manifest."""
    base = directory if os.path.isabs(directory) else os.path.join(os.getcwd(), directory)
    path = os.path.join(base, manifest)
    return os.path.dirname(path), path


# -- the fast path --------------------------------------------------------------------------------

def answer(argv: list[str]) -> int | None:
    """Print the no-op answer and return the exit code, or return None for the full path."""
    global _run_started_ns, _read, _manifest, _parsed
    _run_started_ns = time.time_ns()
    _read = _manifest = None  # what an earlier run in this process read is not this run's
    args = _parsed = _parse(argv)
    if args is None:
        return None
    try:
        root, manifest_path = _paths(args.directory, args.manifest)
        state = read_state(os.path.join(root, STATE_DIR, FILE))
        out = _check(state, args, root, manifest_path)
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError):
        return None  # no state, or one this code cannot read: the full path decides
    if out is None:
        return None
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        # `imgbuild status | head`: the reader left. As the full path does: quietly, exit code 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


_parsed: _Args | None = None  # the command line answer() parsed


def build_args() -> object | None:
    """The command line :func:`answer` parsed, as argparse gives it to ``build`` (cli.py), when
    it is a build of every target: the command line of a one-prompt change, which then needs no
    argparse (~15 ms). None for any other (argparse parses it). tests/test_cli.py holds the two
    to the same namespace."""
    from types import SimpleNamespace

    args = _parsed
    if args is None or args.command != "build" or args.targets:
        return None
    values, flags = args.values, args.flags
    max_cost = values.get("max_cost")
    return SimpleNamespace(
        json="json" in flags, quiet="quiet" in flags, verbose="verbose" in flags,
        directory=args.directory, manifest=args.manifest, command="build", func="cmd_build", targets=[],
        jobs=int(values["jobs"]) if "jobs" in values else None, keep_going="keep_going" in flags, force=False,
        max_cost=float(max_cost) if max_cost is not None else None, provider=values.get("provider"),
        base_url=values.get("base_url"), remote=values.get("remote", "readwrite"), dry_run=False,
        yes="yes" in flags)


_read: tuple[str, tuple[int, int, int], tuple] | None = None  # type: ignore[type-arg]  # the last state read


def read_state(path: str) -> tuple:  # type: ignore[type-arg]
    """The no-op state at ``path``; read once while the file stays as it was (the scoped path
    asks for it after the fast path did)."""
    global _read
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        if _read is None or _read[:2] != (path, sig):
            # One read, then loads: marshal.load on a file reads it object by object (a call into
            # the file per path and number), ten times slower than the whole no-op's stats.
            _read = (path, sig, marshal.loads(f.read()))
    return _read[2]


_manifest: tuple[str, bytes] | None = None  # the manifest this run read, and where from


def read_manifest(path: str) -> bytes:
    """The manifest's bytes, read once per run (the scoped path reads them after the fast path)."""
    global _manifest
    if _manifest is None or _manifest[0] != path:
        with open(path, "rb") as f:
            _manifest = (path, f.read())
    return _manifest[1]


def _check(state: tuple, args: _Args, root: str, manifest_path: str) -> str | None:  # type: ignore[type-arg]
    (fmt, version, manifest_name, manifest_digest, overrides, lock_name, lock_sig, lock_complete,
     names, deps, files, sigs, dirs, dir_inodes, lines) = state[:15]
    if fmt != FORMAT or version != __version__ or manifest_name != os.path.basename(manifest_path):
        return None
    if overrides != _overrides(args.values.get("provider"), args.values.get("base_url")):
        return None
    if args.command == "build" and not args.targets and not lock_complete:
        return None  # a full build drops lock entries of targets no longer in the manifest
    if digest_of(read_manifest(manifest_path)) != manifest_digest:
        return None
    if not unchanged(state, root):
        return None
    return _render(args, names, deps, lines)


def unchanged(state: tuple, root: str, read: dict[str, bytes] | None = None) -> bool:  # type: ignore[type-arg]
    """Whether the lock, every folder, input and output are as ``state`` recorded them: one stat
    each, and the bytes of the few a scoped build (scoped.py) left racily clean, which it recorded
    by digest (written within a timestamp tick of the record, their stat alone proves nothing).
    ``read``: files the caller has read already (by relative path), whose bytes are checked so."""
    return _stats_unchanged(state, root) and _racy_unchanged(state, root, read, "all")


def _stats_unchanged(state: tuple, root: str) -> bool:  # type: ignore[type-arg]
    """One process, one thread: a thread would wait for the GIL after each stat, and a forked child
    stats as fast but costs more than it saves here (its copy-on-write faults: measured, 10,000
    files, 70 → 80 ms). A caller with other work to do meanwhile has :class:`StatCheck`."""
    lock_name, lock_sig, files, sigs, dirs, dir_inodes = state[5], state[6], *state[10:14]
    if _signature(os.path.join(root, lock_name)) != lock_sig:
        return False
    lstat = os.lstat
    prefix = root + os.sep
    for rel, inode in zip(dirs.split("\0") if dirs else (), dir_inodes):
        st = lstat(prefix + rel)
        if st.st_ino != inode or not stat.S_ISDIR(st.st_mode):
            return False
    names = files.split("\0") if files else ()
    if len(sigs) != 3 * len(names):
        return False
    # Each file by its path from the root's descriptor: the kernel walks one or two names, not
    # the root's path again (its folders were checked above; a symlink among them fails there).
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if os.lstat in os.supports_dir_fd else None
    base = "" if fd is not None else prefix
    try:
        expected = iter(sigs)
        for rel, size, mtime, inode in zip(names, expected, expected, expected):
            st = lstat(base + rel, dir_fd=fd)
            if st.st_size != size or st.st_mtime_ns != mtime or st.st_ino != inode:
                return False
    finally:
        if fd is not None:
            os.close(fd)
    return True


def _racy_unchanged(state: tuple, root: str, read: dict[str, bytes] | None, which: str) -> bool:  # type: ignore[type-arg]
    """The racily clean files' bytes against their digests: ``which`` is "all", "lock" (the lock
    alone) or "others" (all but the lock)."""
    racy = state[15] if len(state) > 15 else ()
    if which != "all":
        racy = [(rel, d) for rel, d in racy if (rel == state[5]) == (which == "lock")]
    if racy:
        from hashlib import sha256  # the lock's digest, as lockfile takes it: 5x blake2's speed here

        for rel, digest in racy:
            data = read.get(rel) if read else None
            if data is None:
                with open(os.path.join(root, rel), "rb") as f:
                    data = f.read()
            if sha256(data).hexdigest() != digest:
                return False
    return True


HELPER_FILES = 2000  # from this many files, StatCheck stats them in a helper process (below: here)
# The helper: isolated (-I: no PYTHON* variables, no user site, not the working directory, which is
# a project's and may hold anything) and with no site at all (-S); this package is found last on
# its path, after the standard library, where nothing of that name is.
_HELPER = ("import sys; sys.path.append(sys.argv[1]); from imgbuild.fastpath import _helper; "
           "sys.stdout.write(_helper(*sys.argv[2:]))")


class StatCheck:
    """:func:`unchanged`, begun now and answered by :meth:`result`. Given many files (and more
    than one core), a helper interpreter stats them beside this process, which meanwhile loads
    what it needs next: the scoped path's imports (~0.12 s) hide the helper (~0.06-0.1 s at
    10,000 files, its start included). git stats its index from parallel threads the same way;
    Python's GIL would serialize those here. The helper reads the same state file (by the
    signature it had when this process read it). The racy digests of the files the caller read
    (:meth:`given`: the lock it splices) are checked on the caller's bytes, in a thread (hashing
    lets go of the GIL). Any doubt about the helper (it could not start, it died, it said
    something else) and the stats are taken here, as without it."""

    def __init__(self, state_path: str, state: tuple, root: str) -> None:  # type: ignore[type-arg]
        self._args = (state, root)
        self._read: dict[str, bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._read_ok = False
        asked = os.environ.get("IMGBUILD_STAT_HELPER_FILES")  # tests: from 1 file, whatever the cores
        many = state[10].count("\0") + 1 >= int(asked or HELPER_FILES) and (asked is not None or _cores() > 1)
        if many and _read is not None and _read[0] == state_path and sys.executable:
            import subprocess

            package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            sig = ",".join(map(str, _read[1]))
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _HELPER, package_parent, state_path, sig, root],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError:
                self._proc = None

    def given(self, read: dict[str, bytes]) -> None:
        """The lock's bytes as the caller read them (by its relative path), to check its racy
        digest on (:func:`unchanged`'s ``read``)."""
        self._read = read
        if self._proc is not None:
            import threading

            state, root = self._args

            def check() -> None:
                try:
                    self._read_ok = _racy_unchanged(state, root, read, "lock")
                except OSError:
                    self._read_ok = False

            self._thread = threading.Thread(target=check, name="imgbuild-lock-digest", daemon=True)
            self._thread.start()

    def result(self) -> bool:
        state, root = self._args
        proc, self._proc = self._proc, None
        if proc is not None:
            out = proc.communicate()[0]
            if proc.returncode == 0 and out in (b"0", b"1"):
                _trace_helper(out)
                if self._thread is not None:
                    self._thread.join()
                    return out == b"1" and self._read_ok
                return out == b"1" and _racy_unchanged(state, root, self._read, "lock")
        return unchanged(state, root, self._read)

    def abandon(self) -> None:
        """Not waited for: end the helper now."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _trace_helper(out: bytes) -> None:
    trace = os.environ.get("IMGBUILD_TRACE_SCOPED")
    if trace:  # for tests: that the helper answered, and what
        with open(trace, "a") as f:
            f.write(f"stat helper: {out.decode()}\n")


def _helper(state_path: str, sig: str, root: str) -> str:
    """In the helper: "1" when the state's files are unchanged (but the lock's racy digest), "0"
    when not, or when the state file is not the one the caller read."""
    with open(state_path, "rb") as f:
        st = os.fstat(f.fileno())
        if f"{st.st_size},{st.st_mtime_ns},{st.st_ino}" != sig:
            return "0"
        state = marshal.loads(f.read())
    return "1" if _stats_unchanged(state, root) and _racy_unchanged(state, root, None, "others") else "0"


_seen: tuple[bytes, bytes] = (b"", b"")  # the manifest this run hashed, and its digest


def digest_of(manifest: bytes) -> bytes:
    """:func:`_digest` of the manifest, hashed once per run (the scoped path asks again)."""
    global _seen
    if manifest != _seen[0] or not _seen[1]:
        _seen = (manifest, _digest(manifest))
    return _seen[1]


def _digest(data: bytes) -> bytes:
    """BLAKE2b-256 of the manifest, from CPython's own module: hashlib would load OpenSSL first,
    which costs more (~15 ms) than hashing a 2.5 MB manifest."""
    try:
        from _blake2 import blake2b
    except ImportError:  # an interpreter without it
        from hashlib import blake2b
    return blake2b(data, digest_size=32).digest()


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _render(args: _Args, names: str, deps: bytes, lines: tuple) -> str | None:  # type: ignore[type-arg]
    build_line, build_json, status_json = lines[:3]
    notes = lines[3] if len(lines) > 3 else {}  # what an ok target's line says besides ok (takes.py)
    json_lines = "json" in args.flags
    if args.command == "build":
        if not args.targets:
            count = names.count("\0") + 1 if names else 0
        else:
            order = names.split("\0") if names else []
            if not set(args.targets) <= set(order):
                return None  # the full path says which name is unknown
            count = _closure_size(order, marshal.loads(deps), args.targets)
        return (build_json if json_lines else build_line).replace(str(SENTINEL), str(count)) + "\n"
    order = names.split("\0") if names else []
    shown = order
    if args.targets:
        wanted = set(args.targets)
        if not wanted <= set(order):
            return None
        shown = [n for n in order if n in wanted]
    if json_lines:
        return "".join(_status_json(status_json, name, notes.get(name)) for name in shown)
    if "quiet" in args.flags or not shown:
        return ""
    # As cli.cmd_status prints an ok line: name padded to the longest, two spaces, the state.
    lengths = set(map(len, shown))
    if not notes and len(lengths) == 1:  # names of one length (t00001, t00002, ...): nothing to pad
        return "  ok\n".join(shown) + "  ok\n"
    width = max(lengths)
    return "".join([f"{name:<{width}}  {'ok':<8}  {notes[name]}\n" if name in notes else f"{name:<{width}}  ok\n"
                    for name in shown])


def _status_json(line: str, name: str, note: str | None) -> str:
    line = line.replace(NAME_SENTINEL, name)
    return (line.replace('"reason": ""', f'"reason": "{note}"') if note else line) + "\n"


def _closure_size(order: list[str], deps: tuple[tuple[int, ...], ...], targets: list[str]) -> int:
    index = {name: i for i, name in enumerate(order)}
    seen: set[int] = set()
    todo = [index[t] for t in targets]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(deps[i])
    return len(seen)


# -- recording, by the full path ----------------------------------------------------------------

def record(project: Project, provider: str | None, base_url: str | None) -> tuple | None:  # type: ignore[type-arg]
    """After a full run found every target ``ok``: write the state the next run checks, and
    return it. Skipped (the full path simply runs again) where a file is racily clean, a symlink,
    or the manifest on disk is no longer what was loaded. Only a speed-up: never raises for I/O."""
    if _run_started_ns == 0:
        return None  # not a CLI run (a library caller): it has no start time to trust files by
    try:
        data = _state(project, provider, base_url)
        if data is None:
            return None
        from .fsutil import rewrite_cache_file

        rewrite_cache_file(project.state_dir / FILE, [data])
    except OSError:
        return None
    state: tuple = marshal.loads(data)  # type: ignore[type-arg]
    return state


def _state(project: Project, provider: str | None, base_url: str | None) -> bytes | None:
    import json

    from . import resolvecache
    from .resolve import Overrides

    if not project.state_dir.is_dir():
        return None  # status and check make no folder; a build makes it
    overrides = Overrides.from_env(provider, base_url)
    manifest = project.manifest_path.read_bytes()
    if resolvecache.key_of(manifest, overrides) != project._resolved_key:
        return None  # edited since it was loaded: this run's answer is not about these bytes
    trusted_before = _run_started_ns - RACY_NS
    lock_sig = _signature(str(project.lock.path))
    if lock_sig is not None and lock_sig[1] >= trusted_before:
        return None
    files = sorted({p for t in project.targets.values() for p in (*t.outputs, *t.inputs)})
    sigs: list[int] = []
    folders: set[str] = set()
    for rel in files:
        st = os.lstat(os.path.join(project.root, rel))
        if not stat.S_ISREG(st.st_mode) or st.st_mtime_ns >= trusted_before:
            return None
        sigs.extend((st.st_size, st.st_mtime_ns, st.st_ino))
        parent = os.path.dirname(rel)
        while parent and parent not in folders:
            folders.add(parent)
            parent = os.path.dirname(parent)
    dirs = sorted(folders)
    dir_inodes = tuple(os.lstat(os.path.join(project.root, d)).st_ino for d in dirs)
    order = list(project.order)
    index = {name: i for i, name in enumerate(order)}
    deps = tuple(tuple(index[d] for d in project.deps[name]) for name in order)
    if any("\0" in s for s in files) or any(json.dumps(name) != f'"{name}"' for name in order):
        return None  # a name JSON would escape: the recorded line could not be filled in with it
    notes = _notes(project)
    if notes is None:
        return None
    state = (FORMAT, __version__, project.manifest_path.name, _digest(manifest),
             (overrides.provider, overrides.base_url), project.lock.path.name, lock_sig,
             not (set(project.lock.targets) - set(project.targets)),
             "\0".join(order), marshal.dumps(deps), "\0".join(files), tuple(sigs), "\0".join(dirs),
             dir_inodes, (*_lines(), notes))
    return marshal.dumps(state)


def _notes(project: Project) -> dict[str, str] | None:
    """The reasons of ok targets that have one (a target with candidates says which take it
    holds), by name: plain text the fast path puts in a line or a JSON string as it is. None when
    one would need escaping (then no state is written)."""
    notes = {n: d.reason for n, d in project._decisions.items() if d.reason}
    plain = all(r.isascii() and all(c.isalnum() or c in " ," for c in r) for r in notes.values())
    return notes if plain else None


def _lines() -> tuple[str, str, str]:
    """What the full path prints for a no-op, rendered by its own code, with stand-ins for the count
    and the name: the fast path fills them in, so its output stays the full path's to the byte."""
    import json

    from .plan import Action, Decision, State
    from .summary import Summary
    from .ui import summary_line

    summary = Summary(up_to_date=SENTINEL)
    decision = Decision(NAME_SENTINEL, State.OK, Action.NOTHING)
    return (summary_line(summary),
            json.dumps({"event": "summary", **summary.to_json()}, sort_keys=True),
            json.dumps({"event": "status", **decision.to_json()}, sort_keys=True))
