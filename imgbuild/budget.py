"""``--max-cost``: refuse a build whose estimate passes it, and start no request that could take
spending past it while others are in flight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import BudgetExceeded
from .plan import Action
from .pricing import ceiling_usd
from .takes import images_asked

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from .plan import Decision, Planner
    from .summary import Summary
    from .target import Target


class Budget:
    """What the requests of one build may spend: what they cost so far (``summary.cost_usd``)
    plus what the requests in flight hold, each the most it can cost by the prices
    (pricing.ceiling_usd) times the worst overrun a server has shown in this build."""

    def __init__(self, limit_usd: float | None, planner: Planner, targets: Mapping[str, Target],
                 summary: Summary) -> None:
        self.limit_usd = limit_usd
        self._planner = planner
        self._targets = targets
        self._summary = summary
        self._in_flight_usd = 0.0
        self._held: dict[asyncio.Task[bool], float] = {}  # requests in flight → what they hold
        self._ceilings: dict[str, float] = {}  # target → the most its request can cost by the prices
        self._overrun = 1.0  # the worst actual/ceiling ratio seen: later requests hold that much more

    def reserve(self, decision: Decision) -> float:
        """What a request for ``decision`` would hold while in flight."""
        if self._planner.free:
            return 0.0
        target = self._targets[decision.name]
        p = target.params
        ceiling = ceiling_usd(size=p["size"], quality=p["quality"], n=images_asked(p), prompt=target.prompt,
                              input_images=len(target.images), prices=self._planner.prices)
        self._ceilings[decision.name] = ceiling
        return ceiling * self._overrun

    def allows(self, reserve: float) -> bool:
        limit = self.limit_usd
        return limit is None or self._summary.cost_usd + self._in_flight_usd + reserve <= limit

    @property
    def in_flight(self) -> bool:
        """Whether requests in flight hold part of it (what they really cost may leave room)."""
        return bool(self._held)

    def hold(self, task: asyncio.Task[bool], reserve: float) -> None:
        self._in_flight_usd += reserve
        self._held[task] = reserve

    def release(self, task: asyncio.Task[bool]) -> None:
        self._in_flight_usd -= self._held.pop(task, 0.0)

    def spent(self, name: str, usd: float) -> None:
        self._summary.cost_usd += usd
        ceiling = self._ceilings.get(name, 0.0)
        if ceiling > 0 and usd > ceiling:
            # The server charges more than the prices say: hold what starts next to its price.
            self._overrun = max(self._overrun, usd / ceiling)


def check_budget(decisions: list[Decision], max_cost_usd: float | None) -> float:
    total = sum(d.estimate_usd for d in decisions if d.action in (Action.REQUEST, Action.WAIT))
    if max_cost_usd is not None and total > max_cost_usd:
        estimate, limit = _distinct_usd(total, max_cost_usd)
        raise BudgetExceeded(
            f"the estimate is {estimate}, over --max-cost {limit}: build fewer targets, or raise the limit"
        )
    return total


def _distinct_usd(amount: float, limit: float) -> tuple[str, str]:
    """Both in dollars, with as many decimals as it takes to see that they differ
    (``$0.0213`` over ``$0.02``, not ``$0.02`` over ``$0.02``)."""
    digits = 2
    while digits < 8 and f"{amount:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    if digits > 2:
        digits += 1  # one more than the first that differs: $0.0213, not $0.021
    return f"${amount:.{digits}f}", f"${usd_text(limit, digits)}"


def usd_text(usd: float, digits: int) -> str:
    """As written: ``0.02``, ``0.025``, at least two decimals and no trailing zeros beyond."""
    text = f"{usd:.{digits}f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{whole}.{cents.ljust(2, '0')}"
