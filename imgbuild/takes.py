"""Candidates: K takes of one spec, and the pick among them (issue 12).

A target with ``candidates = K`` asks for K images of the same spec (one request with ``n = K``;
the provider splits it into K requests of one where the API wants that, as for ``n``). Every take
goes into the cache, and the run cache records all K under the spec digest, as it records any
request's images. The target still has one output: the picked take, take 1 until a pick.

Where the choice lives — the lock, because it is a person's decision and is committed with the
images (SPEC §9: the lock records choices as well as results). A candidates target's entry holds:

- ``takes``: the K takes in order, ``{sha256, bytes, width, height}`` each (users number them 1..K);
- ``pick``: the take now in the output, present only once one was picked;
- ``picks``: spec digest → picked take, for every spec of this target a take was picked for.

``picks`` is what keeps a pick with its spec: a reformatting or an output rename leaves the spec
as it is; a spec change asks for new takes (and says the old pick no longer applies), and a revert
to an earlier spec finds its takes in the run cache and its pick in ``picks``: 0 requests, the
picked bytes come back. A new request for a spec (``-B``) brings new takes, so its old pick goes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .cache import OutputInfo, RunRecord

if TYPE_CHECKING:
    from .target import Target

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Takes:
    """The takes of a target's current spec and which one its output holds."""

    takes: tuple[OutputInfo, ...]
    pick: int | None  # 1-based; None: none picked yet (the output holds take 1)
    picks: Mapping[str, int] = field(default_factory=dict)  # spec digest → take, earlier specs included

    @property
    def line(self) -> str:
        """What status says: ``3 takes, none picked`` or ``take 2 of 3``."""
        if self.pick is None:
            return f"{len(self.takes)} takes, none picked"
        return f"take {self.pick} of {len(self.takes)}"


def count(target: Target) -> int:
    """K for a target with candidates, else 0."""
    return int(target.params.get("candidates", 0))


def images_asked(params: Mapping[str, Any]) -> int:
    """How many images one build of the target asks for (and pays for)."""
    return int(params.get("candidates") or params["n"])


def expected_images(target: Target) -> int:
    return count(target) or len(target.outputs)


def _picks(entry: Mapping[str, Any] | None) -> dict[str, int]:
    raw = entry.get("picks") if entry else None
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if _SHA256.fullmatch(k) and type(v) is int and v >= 1}


def choose(target: Target, entry: Mapping[str, Any] | None, digest: str, run: RunRecord | None,
           *, fresh: bool = False) -> tuple[RunRecord | None, Takes | None]:
    """The run whose one output is the chosen take of ``run`` (all K takes), and the takes.
    ``fresh``: the takes just came back from a request, so no earlier pick of this spec applies.
    A run of another size than K is of no use to a candidates target (None: ask again)."""
    k = count(target)
    if not k or run is None:
        return run, None
    if len(run.outputs) != k:
        return None, None
    picks = _picks(entry)
    if fresh:
        picks.pop(digest, None)
    pick = picks.get(digest)
    if pick is not None and pick > k:
        pick = None
    chosen = run.outputs[(pick or 1) - 1]
    return replace(run, outputs=[chosen]), Takes(tuple(run.outputs), pick, picks)


def from_entry(entry: Mapping[str, Any]) -> Takes | None:
    """The takes a lock entry records for its own spec, or None if it records none usable."""
    raw = entry.get("takes")
    if not isinstance(raw, list) or not raw:
        return None
    takes = []
    for t in raw:
        if not isinstance(t, dict) or not _SHA256.fullmatch(str(t.get("sha256", ""))):
            return None
        takes.append(OutputInfo(t["sha256"], _int(t.get("bytes")), _int(t.get("width")), _int(t.get("height")), None))
    pick = entry.get("pick")
    if type(pick) is not int or not 1 <= pick <= len(takes):
        pick = None
    return Takes(tuple(takes), pick, _picks(entry))


def _int(value: Any) -> int:
    return value if type(value) is int else 0


def lock_fields(takes: Takes, digest: str, output_sha256: str) -> dict[str, Any]:
    """``takes``, ``pick`` and ``picks`` of a lock entry whose output has ``output_sha256``. A pick
    is recorded only while the output holds that take (an output a person touched up and accepted
    is no take)."""
    pick = takes.pick
    if pick is not None and takes.takes[pick - 1].sha256 != output_sha256:
        pick = None
    picks = dict(takes.picks)
    if pick is None:
        picks.pop(digest, None)
    else:
        picks[digest] = pick
    fields: dict[str, Any] = {
        "takes": [{"sha256": t.sha256, "bytes": t.bytes, "width": t.width, "height": t.height} for t in takes.takes],
    }
    if pick is not None:
        fields["pick"] = pick
    if picks:
        fields["picks"] = picks
    return fields
