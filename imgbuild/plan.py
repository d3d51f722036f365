"""The state of every target and the reason for it, decided in one place (ninja's `-d explain`).

``status``, ``build -n``, ``--json`` and ``watch`` all render the :class:`Decision` objects made
here. Deciding reads files (through the stat cache) and the cache's index, and writes nothing. The
cheapest checks come first: a target whose spec digest matches its lock entry and whose outputs
still have their recorded (size, mtime) is ``ok`` without hashing a byte.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from .cache import CacheStore, OutputInfo, RunRecord
from .derive import RECIPE_MODEL
from .pricing import estimate_usd
from .spec import InputRef, Spec, changed_fields
from .takes import Takes, choose, count, from_entry, images_asked

if TYPE_CHECKING:
    from .lockfile import Lock
    from .resolve import Target
    from .statcache import StatCache


class RemoteAnswers(Protocol):
    """What planning asks of a remote cache (remotecache.RemoteCache): answers it already has,
    never the network."""

    def run_for(self, spec_digest: str) -> RunRecord | None: ...
    def holds(self, sha256: str) -> bool: ...


class State(StrEnum):
    OK = "ok"
    NEW = "new"
    CHANGED = "changed"
    RESTORE = "restore"
    REMOTE = "remote"  # not in the local cache, but the remote cache can restore it: no request
    MODIFIED = "modified"
    PINNED = "pinned"
    UPSTREAM = "upstream"


class Action(StrEnum):
    NOTHING = "nothing"
    REQUEST = "request"  # call the provider
    RESTORE = "restore"  # copy the right bytes from the cache; no request
    SKIP = "skip"  # leave alone (modified, pinned)
    WAIT = "wait"  # decide again once the targets it depends on are built
    FAIL = "fail"  # cannot be built as things stand (e.g. an input vanished)


@dataclass
class Decision:
    name: str
    state: State
    action: Action
    reasons: list[str] = field(default_factory=list)
    spec: Spec | None = None
    run: RunRecord | None = None  # what RESTORE copies
    estimate_usd: float = 0.0  # for REQUEST and WAIT
    # The digests the outputs will have once this target is done; None where unknown yet.
    promised: tuple[str | None, ...] = ()
    # Locked bytes the cache lacks but a file in the project still holds (sha256 → path), e.g. a
    # fresh checkout without the cache after an output was renamed: RESTORE caches them first.
    sources: dict[str, str] = field(default_factory=dict)
    # A target with candidates: the takes of its spec and the pick (takes.py); None otherwise.
    takes: Takes | None = None
    derived: bool = False  # made locally (imgbuild.derive): its REQUEST or WAIT is free, no request

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.name, "state": str(self.state), "action": str(self.action),
            "reason": self.reason, "estimate_usd": round(self.estimate_usd, 6),
        }


class Planner:
    """Decides targets in dependency order; the executor asks again for those that WAIT."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        producers: Mapping[str, str],
        model: str,
        preset: str,
        prices: Mapping[str, Any],
        lock: Lock,
        cache: CacheStore,
        stats: StatCache,
        force: Iterable[str] = (),
    ) -> None:
        self.targets = targets
        self.producers = producers
        self.model = model
        self.free = preset == "placeholder"
        self.prices = prices
        self.lock = lock
        self.cache = cache
        self.stats = stats
        self.force = set(force)
        self.decisions: dict[str, Decision] = {}
        # Spec digests an earlier build computed for targets unchanged since (their inputs'
        # digests → the spec digest): hashing 10,000 canonical specs is most of a plan's time.
        self.known_digests: Mapping[str, tuple[tuple[str, ...], str]] = {}
        # The remote cache's answers, looked up before planning (the planner never waits on a
        # network): a target it can restore is ``remote``, and costs nothing.
        self.remote: RemoteAnswers | None = None

    def decide_all(self, order: Iterable[str]) -> list[Decision]:
        return [self.decide(name) for name in order]

    def _input_digest(self, rel: str) -> tuple[str | None, str | None]:
        """(digest, producer still to build) of one input."""
        producer = self.producers.get(rel)
        if producer is not None:
            d = self.decisions.get(producer)
            if d is not None:
                idx = self.targets[producer].outputs.index(rel)
                promised = d.promised[idx] if idx < len(d.promised) else None
                if promised is not None:
                    return promised, None
                if d.action in (Action.REQUEST, Action.WAIT):
                    return None, producer
                return None, None  # its producer is not going to make it: missing
        return self.stats.digest(rel), None

    def spec_of(self, target: Target, digests: Mapping[str, str]) -> Spec:
        refs = [InputRef("image", p, digests[p]) for p in target.images]
        if target.derived:  # its recipe, its inputs and our version of the recipe: never the provider's model
            return Spec(RECIPE_MODEL, "", target.params, tuple(refs), 0, {})
        if target.mask:
            refs.append(InputRef("mask", target.mask, digests[target.mask]))
        return Spec(self.model, target.prompt, target.params, tuple(refs), target.revision, target.extra)

    def estimate(self, target: Target) -> float:
        return 0.0 if self.free else estimate_of(target, self.prices)

    def decide(self, name: str) -> Decision:
        decision = self._decide(name)
        annotate(decision, self.targets[name], self.lock.get(name))
        decision.derived = self.targets[name].derived
        self.decisions[name] = decision
        return decision

    def _decide(self, name: str) -> Decision:
        target = self.targets[name]
        forced = name in self.force and not target.pinned  # pinned: never a request, -B or not
        digests: dict[str, str] = {}
        upstream: dict[str, str] = {}  # input → the target that will rebuild it
        for rel in target.images + ((target.mask,) if target.mask else ()):
            digest, pending = self._input_digest(rel)
            if pending is not None:
                upstream[rel] = pending
            elif digest is None:
                if upstream:
                    break
                return Decision(name, State.NEW, Action.FAIL, [f"input {rel} is missing"],
                                promised=(None,) * len(target.outputs))
            else:
                digests[rel] = digest
        entry = self.lock.get(name)
        if upstream:
            return Decision(name, State.UPSTREAM, Action.WAIT, self._upstream_reasons(target, entry, digests, upstream),
                            estimate_usd=self.estimate(target), promised=(None,) * len(target.outputs))
        spec = self.spec_of(target, digests)
        remembered = self.known_digests.get(name)
        if remembered is not None and remembered[0] == tuple(i.sha256 for i in spec.inputs):
            spec.known_digest(remembered[1])
        on_disk = tuple(self.stats.digest(o) for o in target.outputs)

        if entry is not None and entry.get("spec") == spec.digest:
            return self._same_spec(target, spec, entry, on_disk, forced)

        reasons = changed_fields(entry, spec) if entry is not None else []
        state = State.CHANGED if entry is not None else State.NEW
        if target.pinned:
            return self._pinned(target, entry, reasons, on_disk)
        known = _locked_digests(entry)
        hand_made = [o for o, d in zip(target.outputs, on_disk)
                     if d is not None and d not in known and not self.cache.has(d)]
        if hand_made and not forced:
            what = "was edited by hand" if entry is not None else "exists and was not made by imgbuild"
            return Decision(name, State.MODIFIED, Action.SKIP,
                            [f"{hand_made[0]} {what}: `imgbuild accept {name}` adopts it, --force overwrites it"],
                            spec, promised=on_disk)
        run = None if forced else self.cache.get_run(spec.digest)
        remote = False
        if run is None and not forced and self.remote is not None:
            run = self.remote.run_for(spec.digest)
            remote = run is not None
        run, takes = choose(target, entry, spec.digest, run)
        if remote and run is not None and len(run.outputs) == len(target.outputs):
            return Decision(name, State.REMOTE, Action.RESTORE, [*reasons, "in the remote cache"], spec, run,
                            promised=tuple(o.sha256 for o in run.outputs), takes=takes)
        if run is not None and len(run.outputs) == len(target.outputs):
            promised = tuple(o.sha256 for o in run.outputs)
            if entry is None:
                return Decision(name, State.RESTORE, Action.RESTORE, ["built before: in the cache"], spec, run,
                                promised=promised, takes=takes)
            return Decision(name, state, Action.RESTORE, [*reasons, "in the cache"], spec, run, promised=promised,
                            takes=takes)
        if forced:
            reasons = [*reasons, "forced"] if reasons else ["forced"]
        return Decision(name, state, Action.REQUEST, reasons, spec, estimate_usd=self.estimate(target),
                        promised=(None,) * len(target.outputs))

    def _upstream_reasons(self, target: Target, entry: Mapping[str, Any] | None, digests: Mapping[str, str],
                          upstream: Mapping[str, str]) -> list[str]:
        """Every reason of a target that waits for others: what comes from them, and what else
        changed already (an input of its own, the prompt), as its build will find."""
        reasons = [f"input {rel} comes from {producer}, which will be rebuilt" for rel, producer in upstream.items()]
        if entry is None:
            return reasons
        # The inputs still to be built count as unchanged here: their reasons are the lines above.
        locked = {i.get("path"): i.get("sha256") for i in entry.get("inputs", [])}
        known = {**{rel: locked.get(rel) or "" for rel in upstream}, **digests}
        try:
            provisional = self.spec_of(target, known)
        except KeyError:  # an input is missing: the build decides again when it gets there
            return reasons
        others = changed_fields(entry, provisional)
        return reasons + [r for r in others if r != "spec"]

    def _same_spec(self, target: Target, spec: Spec, entry: Mapping[str, Any],
                   on_disk: tuple[str | None, ...], forced: bool) -> Decision:
        name = target.name
        locked = [o.get("sha256") for o in entry.get("outputs", [])]
        paths = [o.get("path") for o in entry.get("outputs", [])]
        if forced:
            return Decision(name, State.OK, Action.REQUEST, ["forced"], spec, estimate_usd=self.estimate(target),
                            promised=(None,) * len(target.outputs))
        if list(on_disk) == locked and paths == list(target.outputs):
            return Decision(name, State.OK, Action.NOTHING, [], spec, promised=on_disk)
        if len(locked) != len(target.outputs):
            return Decision(name, State.CHANGED, Action.REQUEST, ["outputs"], spec,
                            estimate_usd=self.estimate(target), promised=(None,) * len(target.outputs))
        problems = []
        for out, have, want in zip(target.outputs, on_disk, locked):
            if have is None:
                problems.append(f"{out} is missing")
            elif have != want:
                if not self.cache.has(have):
                    return Decision(
                        name, State.MODIFIED, Action.SKIP,
                        [f"{out} was edited by hand: `imgbuild accept {name}` adopts it, --force overwrites it"],
                        spec, promised=on_disk,
                    )
                problems.append(f"{out} differs from the lock")
        if not problems:  # same bytes, output paths renamed in the manifest: rewrite the lock only
            problems.append("output paths changed")
        run, sources = self._locked_run(entry)
        if run is not None:
            return Decision(name, State.RESTORE, Action.RESTORE, problems, spec, run, promised=tuple(locked),
                            sources=sources)
        run = self._remote_run(entry)
        if run is not None:
            return Decision(name, State.REMOTE, Action.RESTORE, [*problems, "in the remote cache"], spec, run,
                            promised=tuple(locked))
        if target.pinned:
            return Decision(name, State.PINNED, Action.SKIP, [*problems, "not in the cache; pinned: left alone"],
                            spec, promised=on_disk)
        return Decision(name, State.CHANGED, Action.REQUEST, [*problems, "and not in the cache"], spec,
                        estimate_usd=self.estimate(target), promised=(None,) * len(target.outputs))

    def _locked_run(self, entry: Mapping[str, Any], has: Callable[[str], bool] | None = None
                    ) -> tuple[RunRecord | None, dict[str, str]]:
        """The locked outputs as a run to restore, if their bytes can be had: from the cache (or
        where ``has`` says), or from a file in the project that still holds them (a path the lock
        names)."""
        has = has or self.cache.has
        outputs, sources = [], {}
        for o in entry.get("outputs", []):
            sha, path = o.get("sha256"), o.get("path")
            if not sha:
                return None, {}
            if not has(sha):
                inside = isinstance(path, str) and not os.path.isabs(path) and not os.path.normpath(path).startswith("..")
                if not (inside and self.stats.digest(path) == sha):
                    return None, {}
                sources[sha] = path
            outputs.append(OutputInfo(sha, o.get("bytes", 0), o.get("width", 0), o.get("height", 0), None,
                                      o.get("git_blob", "")))
        if not outputs:
            return None, {}
        return RunRecord(outputs, entry.get("provider", ""), entry.get("cost_usd"), entry.get("built_at", "")), sources

    def _remote_run(self, entry: Mapping[str, Any]) -> RunRecord | None:
        """The locked outputs as a run the remote cache can restore (the lock names their
        sha256, so no run entry is needed: a fresh clone restores by its lock)."""
        if self.remote is None:
            return None
        run, sources = self._locked_run(entry, self.remote.holds)
        return run if not sources else None  # a mix of project files and remote objects: not worth it

    def _pinned(self, target: Target, entry: Mapping[str, Any] | None, reasons: list[str],
                on_disk: tuple[str | None, ...]) -> Decision:
        """A pinned target whose spec changed: never a request. Missing outputs come back as they
        were locked (the lock entry itself stays as it is)."""
        name = target.name
        if entry is None:
            return Decision(name, State.PINNED, Action.SKIP, ["not built yet; pinned: left alone"],
                            promised=on_disk)
        locked = [o.get("sha256") for o in entry.get("outputs", [])]
        why = [*reasons, "pinned: left alone"]
        only_missing = len(locked) == len(on_disk) and all(d is None or d == w for d, w in zip(on_disk, locked))
        if only_missing and None in on_disk:
            run, sources = self._locked_run(entry)
            if run is not None:
                return Decision(name, State.PINNED, Action.RESTORE, [*reasons, "pinned: locked outputs restored"],
                                None, run, promised=tuple(locked), sources=sources)
        return Decision(name, State.PINNED, Action.SKIP, why, promised=_promise_existing(on_disk, entry))


def estimate_of(target: Target, prices: Mapping[str, Any]) -> float:
    """What one request for ``target`` should cost at ``prices`` (a derived target makes none)."""
    if target.derived:
        return 0.0
    p = target.params
    return estimate_usd(
        size=p["size"], quality=p["quality"], n=images_asked(p), prompt_chars=len(target.prompt),
        input_images=len(target.images), prices=prices,
    )


def _locked_digests(entry: Mapping[str, Any] | None) -> set[str]:
    return {o.get("sha256") for o in entry.get("outputs", [])} if entry else set()


def _promise_existing(on_disk: tuple[str | None, ...], entry: Mapping[str, Any] | None) -> tuple[str | None, ...]:
    """What a pinned target's dependents see: the bytes on disk, else the locked ones."""
    locked = [o.get("sha256") for o in entry.get("outputs", [])] if entry else []
    return tuple(d if d is not None else (locked[i] if i < len(locked) else None) for i, d in enumerate(on_disk))


def annotate(decision: Decision, target: Target, entry: Mapping[str, Any] | None) -> None:
    """Give a candidates target's decision its takes (when its spec is the locked one) and the
    line status shows: which take it holds, or that the old pick no longer applies."""
    if not count(target):
        return
    spec = decision.spec
    if decision.takes is None and spec is not None and entry is not None and entry.get("spec") == spec.digest \
            and decision.action is not Action.REQUEST:
        decision.takes = from_entry(entry)
    if decision.takes is not None:
        decision.reasons.append(decision.takes.line)
        return
    old_pick = entry.get("pick") if entry is not None else None
    # Not for a target still waiting on an input: that input may come back the same (then so is the spec).
    if type(old_pick) is int and decision.action is Action.REQUEST:
        decision.reasons.append(f"the pick of take {old_pick} no longer applies: pick again from the new takes")


def unpicked(decisions: list[Decision], targets: Mapping[str, Target]) -> list[Decision]:
    """The candidates targets whose current spec has no pick (``check --require-picks``)."""
    return [d for d in decisions if count(targets[d.name]) and (d.takes is None or d.takes.pick is None)]
