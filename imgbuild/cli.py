"""The command line: arguments → a command of commands.py → an exit code, and every error as
one readable line.

Nothing but the no-op fast path (fastpath.py) is imported at start-up; then argparse, and each
command imports what it needs, so `imgbuild --help` stays fast.
"""

from __future__ import annotations

import errno  # built in: free at start-up
import os
import sys

from . import __version__

TYPE_CHECKING = False  # not typing's: importing typing (and argparse) costs the no-op fast path ~8 ms
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence


def cmd_completion(args: argparse.Namespace) -> int:
    from . import completion

    if args.list_targets:
        for name in completion.list_targets(args.directory, args.manifest):
            print(name)
    elif args.shell:
        sys.stdout.write(completion.script(args.shell, build_parser()))
    else:
        from .errors import UsageError

        raise UsageError("completion needs a shell: bash, zsh or fish")
    return 0


def _positive(text: str) -> int:
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _usd(text: str) -> float:
    import argparse

    # float() takes "nan", "inf" and "-1": none of them is a ceiling.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an amount in USD, not {text!r}") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite amount in USD, 0 or more, not {text}")
    return value


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it (COLUMNS, then stdout's terminal,
    else 80), without importing shutil (bz2, lzma, fnmatch: ~4.5 ms of `--help`)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser() -> argparse.ArgumentParser:
    import argparse

    width = _columns() - 2  # as argparse's own formatter sets it

    class Formatter(argparse.HelpFormatter):
        """argparse's, with the width found once: argparse makes a formatter for every argument
        added, and each would import shutil to ask the terminal again."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = width) -> None:
            super().__init__(prog, indent_increment, max_help_position, width)

    common = argparse.ArgumentParser(add_help=False, formatter_class=Formatter)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON lines on stdout")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print less")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")

    parser = argparse.ArgumentParser(
        prog="imgbuild", parents=[common], formatter_class=Formatter,
        description="A make-like build system for AI-generated images: builds what images.toml declares, "
                    "calling the image API only for targets whose request changed.",
    )
    parser.add_argument("--version", action="version", version=f"imgbuild {__version__}")
    parser.add_argument("-C", dest="directory", default=".", metavar="DIR", help="run in DIR (default: .)")
    parser.add_argument("-f", dest="manifest", default="images.toml", metavar="MANIFEST",
                        help="the manifest, relative to DIR (default: images.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: object, help: str) -> argparse.ArgumentParser:
        """A subcommand; ``func`` names its function in commands.py (loaded when it runs, not for
        ``--help``), or is cli.py's own."""
        p = sub.add_parser(name, parents=[common], help=help, description=help, formatter_class=Formatter)
        p.set_defaults(func=func)
        return p

    def provider_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--provider", choices=["openai", "aimlapi", "compatible", "placeholder"],
                       help="override the manifest's provider preset (env IMGBUILD_PROVIDER)")
        p.add_argument("--base-url", metavar="URL", help="override the endpoint (env IMGBUILD_BASE_URL)")

    def remote_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--remote", choices=["readwrite", "read", "off"], default="readwrite",
                       help="the remote cache, if configured: readwrite (default), read (untrusted pull "
                            "requests: look up, never upload), off (no connection)")

    def build_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="*", metavar="TARGET")
        p.add_argument("-j", "--jobs", type=_positive, metavar="N", help="requests in flight at most")
        p.add_argument("-k", "--keep-going", action="store_true",
                       help="after a failure, go on with what does not depend on it")
        p.add_argument("-B", "--force", action="store_true", help="rebuild the named targets (or all) anyway")
        p.add_argument("--max-cost", type=_usd, metavar="USD",
                       help="refuse to start over this estimate; never start a request that could pass it")
        provider_options(p)
        remote_option(p)

    b = command("build", "cmd_build", "bring the targets (default: all) and what they depend on up to date")
    build_options(b)
    b.add_argument("-n", "--dry-run", action="store_true", help="print the plan and its estimated cost; do nothing")
    b.add_argument("--yes", action="store_true", help="do not ask before a build over confirm_above")

    for name, help in (("status", "one line per target: name, state, reason"),
                       ("check", "like status, but exit 1 unless every target is ok")):
        p = command(name, "cmd_status", help)
        p.add_argument("targets", nargs="*", metavar="TARGET")
        provider_options(p)
        if name == "check":
            p.add_argument("--require-picks", action="store_true",
                           help="also exit 1 while a target with candidates has no pick")
        remote_option(p)

    w = command("watch", "cmd_watch", "build, then rebuild what each change to the manifest or an input affects")
    build_options(w)
    w.add_argument("--debounce-ms", type=int, default=150, help=argparse.SUPPRESS)

    c = command("clean", "cmd_clean", "delete outputs (lock and cache stay: the next build restores them)")
    c.add_argument("targets", nargs="*", metavar="TARGET")
    c.add_argument("--force", action="store_true", help="also delete outputs edited by hand (their bytes are cached)")

    a = command("accept", "cmd_accept", "record the outputs on disk as the targets' outputs for their current spec")
    a.add_argument("targets", nargs="+", metavar="TARGET")
    provider_options(a)

    pk = command("pick", "cmd_pick", "make take K of a target with candidates its output (no request)")
    pk.add_argument("target", metavar="TARGET")
    pk.add_argument("take", type=_positive, metavar="K", help="the take, 1 to the target's candidates")
    provider_options(pk)

    g = command("gc", "cmd_gc", "prune cache objects no lock of this machine's recent projects needs")
    g.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                   help="only objects unused for DAYS days (default: 30)")

    ca = command("cache", "cmd_cache", "push what the lock records to the remote cache, or pull it into the local one")
    ca.add_argument("action", choices=["push", "pull"])
    ca.add_argument("targets", nargs="*", metavar="TARGET")

    gr = command("graph", "cmd_graph", "print the dependency graph")
    gr.add_argument("--format", choices=["dot", "mermaid"], default="dot")

    r = command("review", "cmd_review", "write the review page (.imgbuild/review/index.html), or serve it with pick buttons")
    r.add_argument("--open", action="store_true", help="open the page in the browser")
    r.add_argument("--serve", action="store_true", help="serve it on 127.0.0.1, with pick buttons and live cards")
    r.add_argument("--port", type=int, default=0, metavar="N", help="with --serve: the port (default: a free one)")
    provider_options(r)

    command("init", "cmd_init", "write a commented starter images.toml (refuses to overwrite)")
    command("schema", "cmd_schema", "print the JSON Schema of images.toml")
    co = command("completion", cmd_completion, "print a shell completion script (see the README to install it)")
    co.add_argument("shell", nargs="?", choices=["bash", "zsh", "fish"])
    co.add_argument("--list-targets", action="store_true", help=argparse.SUPPRESS)  # what the scripts ask
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code, leaving the collector as it was (tests call this
    in-process; the console entry point is :func:`run`)."""
    import gc

    collecting = gc.isenabled()
    try:
        return _command(argv)
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


def _command(argv: Sequence[str] | None) -> int:
    import gc

    # What a run loads (10,000 targets are a million objects) lives until it ends: the collector's
    # passes over it would be wasted. A build turns it back on for what comes after loading.
    gc.disable()
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:  # no fast answer to give: not even its module is loaded
        return _main(argv)
    from . import fastpath

    try:
        code = fastpath.answer(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if code is not None else _main(argv, fastpath.build_args())


def _main(argv: Sequence[str] | None, parsed: object | None = None) -> int:
    """Parse the command line (unless the fast path has: ``parsed``) and run its command."""
    import signal

    # Ctrl-C works even where SIGINT came inherited as ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if parsed is None:
        parsed = build_parser().parse_args(argv)
    args: argparse.Namespace = parsed  # type: ignore[assignment]  # or fastpath's equivalent
    for flag in ("json", "quiet", "verbose"):
        if not hasattr(args, flag):
            setattr(args, flag, False)
    import warnings

    warnings.showwarning = _show_warning
    try:
        func = args.func
        if isinstance(func, str):
            from . import commands

            func = getattr(commands, func)
        return int(func(args))
    except BrokenPipeError:
        # `imgbuild schema | head`: the reader left; that is no bug. Silence the final flush. (An
        # OSError too: it must come before the clause below, or it would be taken for a bug.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.errno not in MACHINE_FAULTS:
            return _internal_error(exc, args.verbose)
        if args.verbose:
            import traceback

            traceback.print_exc()
        from .errors import one_line

        print(one_line(f"error: {_fault(exc)}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - ours said plainly; anything else, the last line of defence
        return _error(exc, args.verbose)


def _error(exc: Exception, verbose: bool) -> int:
    """An error of ours as its line(s) (errors.py is loaded only now: the one-prompt change gets
    its helper process going ~15 ms sooner), or a bug."""
    from .errors import ImgbuildError, ManifestError, one_line

    if isinstance(exc, ManifestError):
        print(str(exc), file=sys.stderr)  # one line per problem, each already escaped
        return exc.exit_code
    if not isinstance(exc, ImgbuildError):
        return _internal_error(exc, verbose)
    if verbose:
        import traceback

        traceback.print_exc()
    print(one_line(f"error: {exc}"), file=sys.stderr)
    return exc.exit_code


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """A warning from the library (or one it uses) as one line, not Python's two-line format."""
    from .errors import one_line

    print(one_line(f"warning: {message}"), file=sys.stderr)


# What the machine, not imgbuild, refused: a full disk, a read-only or forbidden folder, an I/O
# error. A fault to fix there (exit 1), not a bug.
MACHINE_FAULTS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG,
    errno.EMFILE, errno.ENFILE,
})


def _fault(exc: OSError) -> str:
    """``<folder or file>: <what the system said>``; a temporary file is named by its folder."""
    from .fsutil import TEMP_PREFIX

    where = str(exc.filename or "")
    if os.path.basename(where).startswith(TEMP_PREFIX):
        where = os.path.dirname(where)
    what = (exc.strerror or str(exc)).lower()
    advice = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space"}.get(exc.errno or 0,
                                                                                  "check its permissions")
    return f"{where}: {what}; {advice} and run again" if where else f"{what}; {advice} and run again"


def _internal_error(exc: Exception, verbose: bool) -> int:
    import tempfile
    import traceback

    text = traceback.format_exc()
    if verbose:
        sys.stderr.write(text)
    fd, path = tempfile.mkstemp(prefix="imgbuild-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    from .errors import one_line

    print(one_line(f"internal error (a bug in imgbuild): {type(exc).__name__}: {exc}; traceback saved to {path}"),
          file=sys.stderr)
    return 3


def run() -> None:
    """The console entry point: once what it printed is flushed, the process ends at once, without
    tearing down what it loaded (a second's work after a large build), and without turning the
    collector back on over it. Every write that must last (lock, cache, outputs) was made durable
    before the command returned."""
    try:
        code = _command(None)
    except SystemExit as exc:  # argparse: --help, --version, a usage error
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        code = exc.code or 0
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass  # the reader left (`imgbuild status | head`): nothing more to tell it
    except OSError:
        code = code or 120  # as Python's own exit does when it cannot flush
    threading = sys.modules.get("threading")
    if threading is not None:  # as the interpreter would: wait for threads that are not daemons
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    os._exit(code)
