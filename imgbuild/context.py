"""What a build needs of a project: the narrow view the executor (and the removal of dead
outputs) take, so that neither imports the project that runs them; and what each kind of target
(requesting.py, deriving.py, restoring.py) needs of the executor that schedules it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .cache import CacheStore
    from .fsutil import DirSyncs
    from .lockfile import Lock
    from .plan import Decision, Planner
    from .providers.base import ProviderSettings
    from .remotecache import RemoteCache
    from .statcache import StatCache
    from .summary import BuildOptions, Summary
    from .target import Target
    from .ui import Reporter


class BuildContext(Protocol):
    # Read-only properties: a project's own attributes (dicts, a Lock) satisfy them.
    @property
    def root(self) -> Path: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def targets(self) -> Mapping[str, Target]: ...
    @property
    def deps(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def producers(self) -> Mapping[str, str]: ...
    @property
    def settings(self) -> ProviderSettings: ...
    @property
    def lock(self) -> Lock: ...
    @property
    def stats(self) -> StatCache: ...
    @property
    def cache(self) -> CacheStore: ...

    def cache_copy(self, rel: str) -> None:
        """Put a copy of the project file ``rel`` into the cache (the file stays)."""


class RunContext(Protocol):
    """The executor, as the kinds of target it runs see it: the build's shared state, and how a
    target ends (finished, skipped, failed)."""

    project: BuildContext
    planner: Planner
    reporter: Reporter
    options: BuildOptions
    summary: Summary
    stopping: bool  # set: start nothing new
    dirs: DirSyncs  # the folders of outputs written, synced before the lock that names them

    @property
    def remote(self) -> RemoteCache | None: ...

    def restore(self, decision: Decision, staged: dict[str, Path] | None = None) -> None:
        """Write a run's outputs from the cache (or ``staged`` files) and record them in the lock."""

    def finished(self, decision: Decision) -> None: ...

    def skip(self, name: str, why: str, *, started: bool = True) -> None: ...

    def fail(self, name: str, error: BaseException | str) -> None: ...
