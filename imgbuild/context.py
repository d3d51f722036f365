"""What a build needs of a project: the narrow view the executor (and the removal of dead
outputs) take, so that neither imports the project that runs them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .cache import CacheStore
    from .lockfile import Lock
    from .providers.base import ProviderSettings
    from .statcache import StatCache
    from .target import Target


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
