"""What a build is asked to do and what it did: shared by the executor that runs it, the reporters
that print it and the library that returns it, so that none of those imports another for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BuildOptions:
    jobs: int | None = None
    keep_going: bool = False
    max_cost_usd: float | None = None
    force: tuple[str, ...] | None = None  # None: nothing forced; () : everything
    remote: str = "readwrite"  # the remote cache, if one is configured: readwrite | read | off


@dataclass
class Summary:
    built: int = 0
    restored: int = 0
    failed: int = 0
    skipped: int = 0
    up_to_date: int = 0
    requests: int = 0
    retries: int = 0
    cost_usd: float = 0.0
    estimate_usd: float = 0.0  # of the requests started: where cost_usd passed it, the summary says so
    interrupted: bool = False
    not_started: int = 0  # of the skipped: left undone by a stop or the budget (the build is short)
    failures: list[str] = field(default_factory=list)
    uncached: int = 0  # paid images the cache could not take (they went to outputs or a rescue folder)
    fetched: int = 0  # images brought from the remote cache
    uploaded: int | None = None  # images uploaded to the remote cache; None: no remote to write to

    @property
    def complete(self) -> bool:
        """Every selected target is done, or deliberately left alone (modified, pinned), and every
        paid image is in the cache."""
        return not (self.failed or self.not_started or self.interrupted or self.uncached)

    def to_json(self) -> dict[str, Any]:
        return {
            "built": self.built, "restored": self.restored, "failed": self.failed,
            "skipped": self.skipped, "up_to_date": self.up_to_date, "requests": self.requests,
            "retries": self.retries, "cost_usd": round(self.cost_usd, 6),
            "estimate_usd": round(self.estimate_usd, 6), "interrupted": self.interrupted,
            "not_started": self.not_started, "uncached": self.uncached,
            **({"fetched": self.fetched} if self.fetched else {}),
            **({"uploaded": self.uploaded} if self.uploaded is not None else {}),
        }
