"""A target after defaults, vars and paths are resolved: what the graph, plan and executor work on.

Its own module so that the graph (which orders targets) and resolving (which makes them) do not
import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    """One target after defaults, vars and paths are resolved. Paths are POSIX, relative to root."""

    name: str
    prompt: str
    params: dict[str, Any]  # size, quality, output_format, background, moderation, n[, output_compression]
    # (a derived target's: its recipe, params["derive"] = "from" | "sheet"; images are what it reads)
    outputs: tuple[str, ...]
    images: tuple[str, ...] = ()
    mask: str | None = None
    prompt_file: str | None = None
    revision: int = 0
    pinned: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        """Made locally from its ``images`` (imgbuild.derive), not by a request."""
        return "derive" in self.params

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every file the target reads, in spec order: images, mask, prompt file."""
        extra = tuple(p for p in (self.mask, self.prompt_file) if p)
        return self.images + extra
