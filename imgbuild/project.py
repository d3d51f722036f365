"""A loaded project: the library API the commands (and a game's build script) use."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import CacheStore, LocalCache
from .errors import ImgbuildError, ManifestError, ProjectBusy, StateFileError, UnsafePath, UsageError
from .summary import BuildOptions, Summary  # the executor (and asyncio) only where a build needs it
from .fsutil import allow_writes_under, atomic_write, is_inside, remove, remove_leftovers
from .graph import closure, dependencies, producers_of, topological_order
from .lockfile import Lock
from .plan import Action, Decision, Planner, State, estimate_of
from .providers.base import Provider, ProviderSettings
from .resolve import Overrides, Resolved, Target, parse_manifest, read_manifest, resolve
from .stale import recorded_outputs, remove_dead
from .statcache import StatCache
from .ui import NullReporter, Reporter

if TYPE_CHECKING:
    from .remotecache import RemoteCache

STATE_DIR = ".imgbuild"
LOCK_WAIT_S = 3600.0  # how long a build waits for another build of the same project


@dataclass
class Plan:
    """Decisions for the selected targets (and what they depend on), in build order."""

    decisions: list[Decision]
    planner: Planner
    order: list[str]

    @property
    def estimate_usd(self) -> float:
        return sum(d.estimate_usd for d in self.decisions if d.action in (Action.REQUEST, Action.WAIT))

    @property
    def has_work(self) -> bool:
        return any(d.action not in (Action.NOTHING,) for d in self.decisions)


class Project:
    def __init__(self, root: Path, manifest_path: Path, resolved: Resolved, cache: CacheStore) -> None:
        self.root = root
        self.manifest_path = manifest_path
        self.resolved = resolved
        self.targets: dict[str, Target] = resolved.targets
        self.settings: ProviderSettings = resolved.settings
        self.cache = cache
        self.producers, _ = producers_of(self.targets)
        self.deps = dependencies(self.targets, self.producers)
        self.order = topological_order(self.deps)
        self.state_dir = root / STATE_DIR
        allow_writes_under(root)
        self.lock = Lock.load(manifest_path.with_suffix(".lock"), self.state_dir)
        if self.lock.replayed:
            self._fold_journal()
        self.stats = self._stat_cache()
        self._resolved_key = ""
        self.warnings: list[str] = []  # what loading found worth a word, e.g. an option it ignores
        self._resolved_ns = 0
        self._changes: tuple[Any, dict[str, Any] | None] | None = None  # incremental state to save
        self._decisions: dict[str, Decision] = {}  # of the last plan
        self._manifest_data = b""  # as read: its [cache] remote is parsed only when a build needs it
        self._remote: RemoteCache | None = None  # the remote layer, while a build or status runs

    def _fold_journal(self) -> None:
        """A killed build's journal was replayed on load: write it into the lock now (status and
        check included), so that the lock a person commits holds every target that was finished.
        Not while another build runs: that one writes the lock itself."""
        from filelock import Timeout

        try:
            run_lock = self._file_lock()
            run_lock.acquire(timeout=0)
        except (Timeout, OSError):  # busy, or a read-only checkout: the replay in memory stands
            return
        try:
            # Read again under the run lock: a build may have finished since, folding it itself.
            self.lock = Lock.load(self.lock.path, self.state_dir)
            self.lock.fold_journal()
        finally:
            run_lock.release()

    @classmethod
    def load(
        cls,
        root: str | os.PathLike[str] = ".",
        manifest: str = "images.toml",
        *,
        provider: str | None = None,
        base_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Project:
        """Read and validate a project's manifest. Raises ManifestError with every problem."""
        from . import resolvecache

        if not os.path.isdir(root):
            raise UsageError(f"the folder {root} does not exist" if not os.path.exists(root) else f"{root} is not a folder")
        manifest_path = Path(root).absolute() / manifest
        root_path = manifest_path.parent
        data = read_manifest(manifest_path)
        check_state_dir(root_path)
        read_ns = time.time_ns()
        overrides = Overrides.from_env(provider, base_url)
        key = resolvecache.key_of(data, overrides)
        resolved = resolvecache.load(root_path / STATE_DIR, key, root_path)
        changes = None
        if resolved is None:
            resolved, changes = cls._resolve_changes(data, root_path, manifest_path.name, overrides)
        cache = LocalCache(Path(cache_dir) if cache_dir else None)
        project = cls(root_path, manifest_path, resolved, cache)
        project._resolved_key = key
        if resolved.settings.preset == "placeholder":
            source = _ignored_base_url(data, manifest_path.name, overrides, base_url)
            if source:
                project.warnings.append(f"{source} is ignored: the placeholder provider renders locally and calls "
                                        "no endpoint")
        project._resolved_ns = read_ns
        project._manifest_data = data
        project._changes = changes
        return project

    def manifest_provider_estimate(self, plan: Plan) -> tuple[str, float] | None:
        """Under ``--provider placeholder``: the manifest's own provider and what it would charge
        for the requests of ``plan`` (a placeholder run plans the real one). None otherwise."""
        from .manifest import ProviderTable
        from .resolve import resolve_settings

        if self.settings.preset != "placeholder":
            return None
        raw = parse_manifest(read_manifest(self.manifest_path), self.manifest_path.name).get("provider", {})
        settings, _ = resolve_settings(ProviderTable.model_validate(raw), Overrides(), [])
        if settings.preset == "placeholder":
            return None
        todo = [self.targets[d.name] for d in plan.decisions if d.action in (Action.REQUEST, Action.WAIT)]
        return settings.preset, sum(estimate_of(t, settings.prices) for t in todo)

    def _stat_cache(self) -> StatCache:
        from .gitcheck import GitVouch

        stats = StatCache(self.root, self.state_dir / "stat.json")
        stats.vouch = GitVouch(self.root, self.lock.targets)  # a fresh clone's outputs: git's word
        return stats

    @staticmethod
    def _resolve_changes(data: bytes, root: Path, name: str, overrides: Overrides
                         ) -> tuple[Resolved, tuple[Any, dict[str, Any] | None] | None]:
        """Validate only the target tables that changed since the last build when that is
        certainly enough; else the whole manifest (pydantic's located messages included)."""
        from . import incremental

        try:
            inc = incremental.begin(data.decode("utf-8"), root / STATE_DIR, overrides)
        except UnicodeDecodeError:
            inc = None
        found = incremental.resolve_changed(inc, root) if inc is not None else None
        if found is not None:
            incremental.trace_validated(inc.revalidated)  # type: ignore[union-attr]
            return found[0], (inc, found[1])
        incremental.trace_validated(None)
        resolved = resolve(parse_manifest(data, name), root, name, overrides)
        return resolved, (inc, None) if inc is not None else None

    # -- selection and planning ----------------------------------------------------------------

    def select(self, names: Sequence[str] = ()) -> list[str]:
        """The named targets (default: all) and their dependencies, in build order."""
        if not names:
            return self.order
        unknown = [n for n in names if n not in self.targets]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], self.targets, n=1)
            more = f" (did you mean {hint[0]}?)" if hint else ""
            raise UsageError(f"no target named {unknown[0]} in {self.manifest_path.name}{more}")
        wanted = closure(self.deps, names)
        return [n for n in self.order if n in wanted]

    def plan(self, names: Sequence[str] = (), *, force: Iterable[str] | None = None) -> Plan:
        """Decide the state of the selected targets. Reads files; writes nothing."""
        order = self.select(names)
        # force: None forces nothing; () forces every selected target; names force those.
        forced = set() if force is None else set(force) or set(order)
        self.stats.prefetch(_files_planned(self.targets, self.producers, order))
        planner = Planner(self.targets, self.producers, self.resolved.preset.canonical_model(self.settings.model),
                          self.settings.preset, self.settings.prices, self.lock, self.cache, self.stats, forced)
        if self._changes is not None:
            planner.known_digests = self._changes[0].known_digests
        planner.remote = self._remote
        decisions = planner.decide_all(order)
        self._decisions = planner.decisions
        return Plan(decisions, planner, order)

    def status(self, names: Sequence[str] = (), *, remote: str = "readwrite",
               on_warning: Callable[[str], None] | None = None) -> list[Decision]:
        """One decision per named target (default: all), without building anything. A target
        the local cache cannot restore is looked up in the remote cache (unless ``remote`` is
        ``off``): ``remote`` if it can restore it."""
        plan = self.plan_with_remote(names, remote=remote, on_warning=on_warning)
        shown = set(names) if names else None
        return [d for d in plan.decisions if shown is None or d.name in shown]

    def plan_with_remote(self, names: Sequence[str] = (), *, force: Iterable[str] | None = None,
                         remote: str = "readwrite", on_warning: Callable[[str], None] | None = None) -> Plan:
        """:meth:`plan`, with the remote cache's answers (checked: every object is asked for)."""
        plan = self.plan(names, force=force)
        if not plan.has_work:
            return plan  # nothing to look up: no connection
        import asyncio

        try:
            return asyncio.run(self._consult_remote(plan, names, force, remote, on_warning, confirm=True))
        finally:
            self._remote = None

    async def _consult_remote(self, plan: Plan, names: Sequence[str], force: Iterable[str] | None, mode: str,
                              on_warning: Callable[[str], None] | None, *, confirm: bool,
                              defer: bool = False) -> Plan:
        """The plan again, knowing what the remote cache can restore of what the local one cannot.
        With ``defer``, run entries are not asked for here: the executor asks for each as its
        target starts, so that restores begin with the first answer (objects a lock names are
        known without a request, and still here)."""
        from .remotecache import configured_url, open_layer, questions

        self._remote = open_layer(configured_url(self._manifest_data), mode, self.cache, on_warning)
        if self._remote is None:
            return plan
        specs, shas = questions(plan.decisions, self.lock, plan.planner.force)
        if defer:
            specs = []
        if await self._remote.look_up(specs, shas, confirm=confirm):
            return self.plan(names, force=force)
        plan.planner.remote = self._remote  # for targets that wait for others: asked when they start
        return plan

    # -- building ------------------------------------------------------------------------------

    def build(
        self,
        names: Sequence[str] = (),
        options: BuildOptions | None = None,
        reporter: Reporter | None = None,
        *,
        confirm: Callable[[Plan], bool] | None = None,
    ) -> Summary:
        """Bring the selected targets up to date. Returns the summary; raises ImgbuildError."""
        import asyncio

        return asyncio.run(self.abuild(names, options, reporter, confirm=confirm))

    async def abuild(
        self,
        names: Sequence[str] = (),
        options: BuildOptions | None = None,
        reporter: Reporter | None = None,
        *,
        confirm: Callable[[Plan], bool] | None = None,
    ) -> Summary:
        """:meth:`build` for callers that already run an event loop (watch mode)."""
        from .executor import check_budget

        options = options or BuildOptions()
        reporter = reporter or NullReporter()  # a library is quiet unless asked to speak
        plan = self.plan(names, force=options.force)
        # Entries of targets no longer in the manifest go on a full build, so that the lock says
        # what the manifest builds (and gc may prune what only they kept).
        gone = sorted(set(self.lock.targets) - set(self.targets)) if not names else []
        if not plan.has_work and not gone:
            check_budget(plan.decisions, options.max_cost_usd)
            self._save_copies()
            return Summary(up_to_date=len(plan.decisions))
        try:
            return await self._abuild(plan, gone, names, options, reporter, confirm)
        finally:
            self._remote = None

    async def _abuild(self, plan: Plan, gone: list[str], names: Sequence[str], options: BuildOptions,
                      reporter: Reporter, confirm: Callable[[Plan], bool] | None) -> Summary:
        import asyncio

        from .executor import Executor, check_budget

        deferred = False
        if plan.has_work:  # what the remote cache restores costs nothing: before the budget's check
            deferred = _entries_can_wait(plan, options, confirm)
            plan = await self._consult_remote(plan, names, options.force, options.remote, reporter.warn,
                                              confirm=False, defer=deferred)
            deferred = deferred and self._remote is not None
        check_budget(plan.decisions, options.max_cost_usd)
        if confirm is not None and not confirm(plan):
            raise UsageError("build cancelled")
        async with self._arun_lock(reporter):
            # Another build may have done the work while we waited: if the lock moved, decide again.
            if self.lock.changed_on_disk():
                self.lock = Lock.load(self.lock.path, self.state_dir)
                self.stats = self._stat_cache()
                plan = self.plan(names, force=options.force)
            jobs = options.jobs or self.settings.concurrency
            # Opened now when a request is planned: a missing key is one line, before any request.
            # A plan that only waits on upstream targets opens it when (if) it needs it.
            # With run entries still to be asked for, a planned request may be restored instead.
            provider = self._open_provider(jobs) if not deferred and any(
                d.action is Action.REQUEST and not self.targets[d.name].derived for d in plan.decisions) else None
            recorded = recorded_outputs(self.lock, [*plan.order, *gone])  # before the build rewrites them
            for name in gone:
                self.lock.remove(name)
            with contextlib.suppress(OSError):  # a full or read-only cache: the build says so if it matters
                self.cache.register_project(self.root)
            await asyncio.to_thread(self._take_leftovers)
            self._save_copies()
            executor = Executor(self, plan.planner, plan.order, reporter, options,
                                lambda: provider or self._open_provider(jobs))
            summary = await executor.run()
            if self._remote is not None:  # bounded: what is not up by then, a later build uploads
                uploaded = await self._remote.drain()
                summary.uploaded = uploaded if self._remote.store.mode == "readwrite" else None
                summary.fetched = self._remote.restored
            if not summary.interrupted:
                await asyncio.to_thread(remove_dead, self, recorded, reporter)
            return summary

    def _take_leftovers(self) -> None:
        """What a killed build left: its paid images (into the cache) and its temp files. Run
        under the run lock, so no build of this project is writing."""
        self.cache.recover(self.state_dir / "tmp")
        parts = {out.rpartition("/")[0] for t in self.targets.values() for out in t.outputs}
        remove_leftovers([self.state_dir, self.lock.path.parent, *(self.root / p for p in sorted(parts))])

    def _save_copies(self) -> None:
        """Keep machine-local copies of what this run had to parse, so the next one need not."""
        remove_leftovers([self.state_dir])  # only a dead writer's (by pid): safe without the run lock
        if self._changes is not None:
            from . import incremental

            inc, globals_ = self._changes
            if globals_ is None and self.resolved.manifest is not None:
                globals_ = incremental.globals_of(self.resolved.manifest)
            if globals_ is not None:
                self._ensure_state_dir()
                digests = dict(inc.known_digests)  # what the plan found for the rest:
                for n, d in self._decisions.items():
                    if d.spec is not None and n not in digests:
                        digests[n] = (tuple(i.sha256 for i in d.spec.inputs), d.spec.digest)
                inc.save(self.resolved, self.root, globals_, digests)
            self._changes = None
        if self.resolved.manifest is not None:
            from . import resolvecache

            self._ensure_state_dir()
            resolvecache.save(self.state_dir, self._resolved_key, self.resolved, self.root, self._resolved_ns)
            self.resolved.manifest = None
        self.lock.save_json_copy()
        self.stats.save()  # digests of files hashed this run (e.g. settling racy entries)

    def _open_provider(self, jobs: int) -> Provider:
        from .providers import open_provider

        # -j overrides concurrency for this build: the provider's own limiter must know it too.
        return open_provider(dataclasses.replace(self.settings, concurrency=jobs))

    def _ensure_state_dir(self) -> None:
        if not self.state_dir.is_dir():
            check_state_dir(self.root)  # not made a link out since the project was loaded
            # Machine-local state is never committed, even where the project forgot to ignore it.
            atomic_write(self.state_dir / ".gitignore", b"*\n", durable=False)

    def _file_lock(self):  # type: ignore[no-untyped-def]
        from filelock import FileLock

        self._ensure_state_dir()
        # Not thread-local: an async build waits for it in a worker thread and releases it in the
        # event loop's thread.
        return FileLock(str(self.state_dir / "run.lock"), thread_local=False)

    def _wait_for(self, lock, reporter: Reporter) -> bool:  # type: ignore[no-untyped-def]
        """Take the run lock if it is free; else say so and return False (the caller waits)."""
        from filelock import Timeout

        try:
            lock.acquire(timeout=0)
            return True
        except Timeout:
            reporter.warn("another imgbuild build of this project is running; waiting for it to finish")
            return False
        except OSError as exc:  # a read-only or full .imgbuild/: say so before anything is paid
            raise ImgbuildError(f"{STATE_DIR}/run.lock: cannot be taken ({exc.strerror or exc}); imgbuild keeps "
                                f"its machine-local state in {STATE_DIR}/: make it writable") from None

    @staticmethod
    def _busy(lock) -> ProjectBusy:  # type: ignore[no-untyped-def]
        return ProjectBusy("another imgbuild build of this project has run for an hour; "
                           f"if none is running, delete {lock.lock_file}")

    @classmethod
    def _acquire(cls, lock) -> None:  # type: ignore[no-untyped-def]
        from filelock import Timeout

        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise cls._busy(lock) from None

    @contextlib.contextmanager
    def _run_lock(self, reporter: Reporter) -> Iterator[None]:
        lock = self._file_lock()
        if not self._wait_for(lock, reporter):
            self._acquire(lock)
        try:
            yield
        finally:
            lock.release()

    @contextlib.asynccontextmanager
    async def _arun_lock(self, reporter: Reporter) -> AsyncIterator[None]:
        import asyncio

        from filelock import Timeout

        lock = self._file_lock()
        if not self._wait_for(lock, reporter):
            # Poll, so that the loop stays live while we wait: Ctrl-C, and watch's own events.
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                await asyncio.sleep(0.1)
                try:
                    lock.acquire(timeout=0)
                    break
                except Timeout:
                    if time.monotonic() > deadline:
                        raise self._busy(lock) from None
        try:
            yield
        finally:
            lock.release()

    # -- clean and accept ----------------------------------------------------------------------

    def clean(self, names: Sequence[str] = (), *, force: bool = False) -> tuple[list[str], list[str]]:
        """Delete the outputs of the named targets (default: all); returns (removed, kept).

        Nothing is lost: bytes the cache lacks (a checkout that came without it) are put in it
        first, so the next build restores them for free. An output edited by hand (neither the
        locked bytes nor any imgbuild made) is kept unless ``force``; even then its bytes are
        cached first."""
        selected = list(names) if names else self.order
        self.select(selected)
        removed: list[str] = []
        kept: list[str] = []
        with self._run_lock(Reporter()):
            for name in selected:
                entry = self.lock.get(name) or {}
                locked = {o.get("sha256") for o in entry.get("outputs", [])}
                for rel in self.targets[name].outputs:
                    digest = self.stats.digest(rel)
                    if digest is None:
                        continue
                    if digest not in locked and not self.cache.has(digest) and not force:
                        kept.append(rel)
                        continue
                    if not self.cache.has(digest):
                        self.cache_copy(rel)
                    remove(self.root / rel)
                    self.stats.forget(rel)
                    removed.append(rel)
            self.stats.save()
        return removed, kept

    def cache_copy(self, rel: str) -> None:
        self.cache.put_copy(self.root / rel)  # the cache takes a copy; the file stays

    def pick(self, name: str, take: int) -> None:
        """Make take ``take`` (1-based) of target ``name``, which has candidates, its output: no
        request; the pick is recorded in the lock with the target's spec (see takes.py). Raises
        UsageError on a bad name or take, or when the target has no takes for its current spec or
        its output was edited by hand."""
        from .takes import Takes, count, lock_fields

        self.select([name])  # an unknown name: the usual located error
        target = self.targets[name]
        k = count(target)
        if not k:
            raise UsageError(f"{name} has no candidates: pick chooses among the takes of a target with "
                             "`candidates = K` in images.toml")
        if type(take) is not int or not 1 <= take <= k:
            raise UsageError(f"{name} has {k} takes: pick one of 1 to {k}, not {take}")
        with self._run_lock(Reporter()):
            if self.lock.changed_on_disk():  # a build finished while we waited: its lock counts
                self.lock = Lock.load(self.lock.path, self.state_dir)
            decision = self.plan([name]).planner.decisions[name]
            entry = self.lock.get(name)
            takes = decision.takes
            if decision.state is State.MODIFIED:
                raise UsageError(f"{name}: {decision.reasons[0].split(':')[0]}; pick would overwrite it: "
                                 f"`imgbuild accept {name}` adopts it, or move it away first")
            if takes is None or entry is None or decision.spec is None or entry.get("spec") != decision.spec.digest:
                raise UsageError(f"{name} has no takes for its current spec yet: build it first (imgbuild build {name})")
            chosen = takes.takes[take - 1]
            rel = target.outputs[0]
            if self.stats.digest(rel) != chosen.sha256:
                if not self.cache.has(chosen.sha256):
                    raise ImgbuildError(f"{name}: take {take} ({chosen.sha256[:12]}) is not in the cache (a checkout "
                                        f"without it?); `imgbuild build -B {name}` asks for new takes")
                try:
                    self.cache.copy_to(chosen.sha256, self.root / rel)
                except OSError as exc:
                    raise ImgbuildError(f"{rel}: cannot be written ({exc.strerror or exc}); nothing was changed") from exc
                self.stats.record(rel, chosen.sha256)
            self.cache.touch(chosen.sha256)
            new = dict(entry)
            output = dict(entry["outputs"][0]) if entry.get("outputs") else {"path": rel}
            output.update(path=rel, sha256=chosen.sha256, bytes=chosen.bytes, width=chosen.width, height=chosen.height)
            output.pop("git_blob", None)  # of the bytes it held before
            new["outputs"] = [output]
            for key in ("takes", "pick", "picks"):
                new.pop(key, None)
            new.update(lock_fields(Takes(takes.takes, take, takes.picks), decision.spec.digest, chosen.sha256))
            self.lock.set(name, new)
            self.lock.save()
            self.stats.save()

    def accept(self, names: Sequence[str]) -> list[str]:
        """Record the outputs now on disk as the named targets' outputs for their current spec.
        The files go into the cache too, so that clean + build brings them back."""
        if not names:
            raise UsageError("accept needs the names of the targets whose outputs to adopt")
        self.select(names)
        by_name = {d.name: d for d in self.plan().decisions}
        with self._run_lock(Reporter()):
            for name in names:
                self._accept_one(by_name[name])
            self.lock.save()
            self.stats.save()
        return list(names)

    def _accept_one(self, decision: Decision) -> None:
        name = decision.name
        if decision.spec is None:
            raise UsageError(f"{name}: an input comes from a target that must be built first; build it, then accept")
        entry = self.lock.get(name) or {}
        if str(entry.get("model", "")).startswith("placeholder:") and self.settings.preset != "placeholder":
            raise UsageError(f"{name} was last built by the placeholder provider: a stand-in never passes for a "
                             "real image; accept it with --provider placeholder, or build it for real")
        target = self.targets[name]
        missing = [o for o in target.outputs if not (self.root / o).exists()]
        if missing:
            raise UsageError(f"{name}: {missing[0]} does not exist; nothing to accept")
        outputs = []
        for rel in target.outputs:
            info = self.cache.put_copy(self.root / rel)  # the cache takes a copy; the file stays
            self.stats.record(rel, info.sha256)
            outputs.append((rel, info))
        # Into the lock and the objects, not the run cache: a person's touch-up is this project's
        # answer to the spec, not what the API returned for it anywhere else.
        from .executor import lock_entry, utc_now

        self.lock.set(name, lock_entry(decision, outputs, "accepted", None, utc_now()))


def _entries_can_wait(plan: Plan, options: BuildOptions, confirm: Callable[[Plan], bool] | None) -> bool:
    """Whether a build may ask the remote cache for run entries as each target starts rather
    than all before the first: only when no answer could change what happens before the build
    (nobody is asked to confirm it, and the budget holds even if every target were requested)."""
    return confirm is None and (options.max_cost_usd is None or plan.estimate_usd <= options.max_cost_usd)


def _files_planned(targets: dict[str, Target], producers: dict[str, str], order: Sequence[str]) -> Iterator[str]:
    """The files a plan of ``order`` hashes: every output, and each input no target makes."""
    for name in order:
        target = targets[name]
        yield from target.outputs
        yield from (p for p in target.images + ((target.mask,) if target.mask else ()) if p not in producers)


def _ignored_base_url(data: bytes, name: str, overrides: Overrides, flag: str | None) -> str | None:
    """Where a base URL the placeholder will not use came from, if one was given."""
    if overrides.base_url:
        return "--base-url" if flag else "IMGBUILD_BASE_URL"
    if b"base_url" not in data:  # the no-op path of a large manifest parses nothing more
        return None
    provider = parse_manifest(data, name).get("provider")
    return "[provider] base_url" if isinstance(provider, dict) and provider.get("base_url") else None


def check_state_dir(root: Path) -> None:
    """``.imgbuild`` must be a folder inside the project: state is never written or read elsewhere."""
    path = root / STATE_DIR
    if os.path.islink(path):
        real, inside = os.path.realpath(path), os.path.realpath(root)
        if not is_inside(real, inside) or real == inside:
            raise UnsafePath(f"{STATE_DIR}: a symlink to {real}, outside the project; imgbuild keeps its "
                             f"machine-local state inside the project: remove the link (rm {path})")
    if path.exists() and not path.is_dir():
        raise StateFileError(f"{STATE_DIR}: a file, where imgbuild keeps its machine-local state in a folder; "
                             "move it away or delete it")


def load_project(root: str | os.PathLike[str] = ".", manifest: str = "images.toml", **kw: object) -> Project:
    """Load a project (see :meth:`Project.load`)."""
    return Project.load(root, manifest, **kw)  # type: ignore[arg-type]


__all__ = ["ManifestError", "Plan", "Project", "load_project"]
