"""The commands, each a function of the parsed arguments that returns an exit code (cli.py
parses and dispatches; the library does the work). Each imports what it needs when it runs."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's, as in cli.py
if TYPE_CHECKING:
    import argparse

    from .plan import Decision
    from .project import Plan, Project
    from .ui import Reporter


def _project(args: argparse.Namespace) -> Project:
    from .project import Project

    project = Project.load(args.directory, args.manifest, provider=getattr(args, "provider", None),
                           base_url=getattr(args, "base_url", None))
    for warning in project.warnings:
        if args.json:
            import json

            print(json.dumps({"event": "warning", "message": warning}, sort_keys=True))
        else:
            print(f"warning: {warning}", file=sys.stderr)
    return project


def _reporter(args: argparse.Namespace) -> Reporter:
    from .ui import make_reporter

    return make_reporter(json_lines=args.json, quiet=args.quiet)


# -- commands: each returns an exit code -------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    if not (args.dry_run or args.targets or args.force is not False):  # a few tables edited: scoped.py
        from . import scoped

        code = scoped.build(args, _reporter, _collect_garbage_from_now)
        if code is not None:
            return code
    from .executor import BuildOptions

    project = _project(args)
    force = None if args.force is False else tuple(args.targets)
    options = BuildOptions(jobs=args.jobs, keep_going=args.keep_going, max_cost_usd=args.max_cost, force=force,
                           remote=args.remote)
    reporter = _reporter(args)
    try:
        if args.dry_run:
            from .executor import check_budget

            plan = project.plan_with_remote(args.targets, force=force, remote=args.remote, on_warning=reporter.warn)
            total = check_budget(plan.decisions, None)
            reporter.plan(plan.decisions, total, dry_run=True, real=project.manifest_provider_estimate(plan))
            return 0
        _collect_garbage_from_now()
        asks = not args.yes and sys.stdin.isatty() and sys.stdout.isatty()  # else nothing is asked (_confirm)
        summary = project.build(args.targets, options, reporter,
                                confirm=(lambda p: _confirm(args, project, p)) if asks else None)
    finally:
        reporter.close()
    reporter.summary(summary)
    if not args.targets and summary.up_to_date == len(project.order) and summary.complete and not (
            summary.built or summary.restored or summary.skipped or force is not None):
        _record_states(project, args)
    if summary.interrupted:
        return 130
    return 0 if summary.complete else 1


def _confirm(args: argparse.Namespace, project: Project, plan: Plan) -> bool:
    limit = project.settings.confirm_above_usd
    if args.yes or plan.estimate_usd <= limit or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return True
    todo = sum(1 for d in plan.decisions if d.action in ("request", "wait"))
    answer = input(f"{todo} request(s), estimated ${plan.estimate_usd:.2f} (over ${limit:.2f}). Build? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_status(args: argparse.Namespace) -> int:
    from .errors import one_line
    from .plan import State
    from .ui import decision_rows

    project = _project(args)
    decisions = project.status(args.targets, remote=args.remote, on_warning=_warner(args))
    not_ok = [d for d in decisions if d.state is not State.OK]
    if args.json:
        import json

        for d in decisions:
            print(json.dumps({"event": "status", **d.to_json()}, sort_keys=True))
    elif not args.quiet or args.command == "check":
        # check -q (a pre-commit hook) still names each target that is not ok, and why.
        for row in decision_rows(not_ok if args.quiet else decisions):
            print(one_line(row))
    if not not_ok and not args.targets:
        _record_states(project, args)
    if args.command == "check":
        if not_ok and not args.json:
            print(f"check: {len(not_ok)} of {len(decisions)} target(s) not ok", file=sys.stderr)
        unpicked = _unpicked(args, project, decisions) if args.require_picks else []
        return 1 if not_ok or unpicked else 0
    return 0


def _unpicked(args: argparse.Namespace, project: Project, decisions: list[Decision]) -> list[Decision]:
    """check --require-picks: the targets with candidates whose current spec has no pick, each
    said once (on stderr: stdout is the status lines)."""
    from .plan import unpicked

    found = unpicked(decisions, project.targets)
    for d in found:
        why = d.takes.line if d.takes is not None else "no takes yet"
        if args.json:
            import json

            print(json.dumps({"event": "unpicked", "target": d.name, "reason": why}, sort_keys=True))
        else:
            print(f"check: {d.name}: {why}; choose one with `imgbuild pick {d.name} K`", file=sys.stderr)
    return found


def _warner(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Where a command without a reporter says a warning (the remote cache's, say)."""
    def warn(message: str) -> None:
        if args.json:
            import json

            print(json.dumps({"event": "warning", "message": message}, sort_keys=True), flush=True)
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)
    return warn


def cmd_cache(args: argparse.Namespace) -> int:
    """``cache push``: upload what the lock records to the remote cache; ``cache pull``: fetch it
    into the local cache (a later build restores from there, with no network)."""
    import asyncio

    from . import remotecache
    from .errors import UsageError

    project = _project(args)
    url = remotecache.configured_url(project._manifest_data)
    if not url:
        raise UsageError(f"no remote cache: set [cache] remote in {args.manifest} or "
                         "IMGBUILD_REMOTE_CACHE (e.g. s3://bucket/prefix)")
    names = project.select(args.targets)
    layer = remotecache.open_layer(url, "readwrite" if args.action == "push" else "read", project.cache,
                                   _warner(args))
    assert layer is not None
    work = remotecache.push if args.action == "push" else remotecache.pull
    moved, there, missing = asyncio.run(work(layer, project.lock, names))
    verb, held = ("uploaded to", "the remote had already") if args.action == "push" else (
        "fetched from", "the local cache had already")
    why = "not in the local cache, or failed" if args.action == "push" else "not in the remote, or failed"
    _say(args, {"event": "summary", "action": args.action, "moved": moved, "present": there, "missing": missing,
                "remote": layer.url},
         f"{args.action}: {moved} image(s) {verb} {layer.url}; {there} {held}"
         + (f"; {missing} {why}" if missing else ""), summary=True)
    return 1 if missing else 0


def _say(args: argparse.Namespace, event: dict[str, object], line: str, *, summary: bool = False) -> None:
    """One result: a JSON line with --json, else a plain line (only summaries with -q)."""
    if args.json:
        import json

        print(json.dumps(event, sort_keys=True))
    elif summary or not args.quiet:
        from .errors import one_line

        print(one_line(line))


def cmd_clean(args: argparse.Namespace) -> int:
    project = _project(args)
    removed, kept = project.clean(args.targets, force=args.force)
    for rel in removed:
        _say(args, {"event": "removed", "path": rel}, f"removed  {rel}")
    for rel in kept:
        _say(args, {"event": "kept", "path": rel},
             f"kept     {rel}: edited by hand (`imgbuild accept` adopts it; clean --force removes it)")
    _say(args, {"event": "summary", "removed": len(removed)},
         f"clean: {len(removed)} file(s) removed; the lock and cache keep them, `imgbuild build` restores them",
         summary=True)
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    project = _project(args)
    for name in project.accept(args.targets):
        _say(args, {"event": "accepted", "target": name}, f"accepted {name}")
    return 0


def cmd_pick(args: argparse.Namespace) -> int:
    project = _project(args)
    project.pick(args.target, args.take)
    entry = project.lock.get(args.target) or {}
    rel = project.targets[args.target].outputs[0]
    _say(args, {"event": "picked", "target": args.target, "take": args.take, "path": rel},
         f"picked {args.target}: take {args.take} of {len(entry.get('takes', []))} is now {rel}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from .cache import LocalCache
    from .errors import StateFileError
    from .lockfile import Lock

    cache = LocalCache()
    keep: set[str] = set()
    for root in cache.projects():
        for lock_path in root.glob("*.lock") if root.is_dir() else ():
            try:
                lock = Lock.load(lock_path, root / ".imgbuild")
            except Exception as exc:  # noqa: BLE001 - a foreign file (poetry.lock) needs nothing
                if not lock_path.with_suffix(".toml").exists():
                    continue
                # A project's own lock that cannot be read (a merge conflict): what it needs is
                # unknown, so nothing may go.
                raise StateFileError(f"gc removed nothing: {lock_path} cannot be read ({exc}); fix it, or "
                                     "delete it if that project is gone") from None
            for entry in lock.targets.values():
                keep.update(o.get("sha256", "") for o in entry.get("outputs", []))
                keep.update(t.get("sha256", "") for t in entry.get("takes", []))  # takes not picked yet
    removed, freed = cache.gc(keep, args.older_than)
    _say(args, {"event": "summary", "removed": removed, "freed_bytes": freed, "cache": cache.where},
         f"gc: removed {removed} object(s), freed {freed / 1e6:.1f} MB from {cache.where}", summary=True)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import render

    project = _project(args)
    sys.stdout.write(render(project.targets, project.deps, args.format))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import write_starter

    path = write_starter(args.directory, args.manifest)
    print(f"wrote {path}; try: imgbuild build --provider placeholder")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .manifest import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import watch

    _collect_garbage_from_now()
    return watch(args)


def cmd_review(args: argparse.Namespace) -> int:
    from .review.command import review

    first = [True]

    def load() -> Project:
        if first[0]:  # its warnings once, as every command says them; not again on each reload
            first[0] = False
            return _project(args)
        from .project import Project

        return Project.load(args.directory, args.manifest, provider=args.provider, base_url=args.base_url)

    from pathlib import Path

    def say(event: dict[str, object], line: str) -> None:
        _say(args, event, line, summary=True)
        sys.stdout.flush()  # the URL must reach a pipe at once: a script waits for it

    return review(load, Path(args.directory) / args.manifest, say, serve=args.serve, port=args.port,
                  open_browser=args.open)


# -- the parser ----------------------------------------------------------------------------------


def _record_states(project: Project, args: argparse.Namespace) -> None:
    """After a full run found every target ``ok``: the no-op fast path's state, and beside it what
    the next one-table change needs (scoped.py). Only speed-ups: neither raises for I/O."""
    from . import fastpath

    recorded = fastpath.record(project, args.provider, args.base_url)
    if recorded is not None:
        from . import scoped

        scoped.record(project, recorded[4], recorded[3], recorded[6])


def _collect_garbage_from_now() -> None:
    """A build or a watch may run for hours and leave garbage in cycles (asyncio, httpx): collect
    again, but leave what was loaded so far out of every pass (it lives until the end anyway)."""
    import gc

    gc.freeze()
    gc.enable()
