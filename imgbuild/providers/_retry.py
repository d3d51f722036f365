"""How long to wait before a retry, and how many requests to keep in flight while 429s come.

The engine already bounds targets in flight by ``concurrency``; the limiter here bounds *HTTP
requests* (aimlapi turns one target into n of them) and shrinks that bound when the API says it is
overloaded: additive increase, multiplicative decrease, as TCP does. One limiter is shared by all
the requests of one provider instance, i.e. of one build.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque

from ..errors import ProviderError, TransientError

log = logging.getLogger("imgbuild.providers")

# Real defaults are for a real API; tests lower BACKOFF_BASE_S so that a retry costs milliseconds.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
# Honour Retry-After, but never sleep longer than this on one server's word.
MAX_RETRY_AFTER_S = 300.0
_RNG = random.Random()


def backoff_s(retry: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``retry`` (1, 2, …): doubling each time, with "equal jitter"
    (half fixed, half random) so that requests that failed together do not come back together."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (retry - 1))
    return ceiling / 2 + (rng or _RNG).uniform(0, ceiling / 2)


def retry_delay_s(error: ProviderError, retry: int) -> float:
    """Never sooner than the server asked; while its asks are short, back off exponentially."""
    delay = backoff_s(retry)
    if isinstance(error, TransientError) and error.retry_after_s is not None:
        delay = max(delay, min(error.retry_after_s, MAX_RETRY_AFTER_S))
    return delay


class AdaptiveLimiter:
    """A semaphore whose size halves on a 429 and grows back by one after ``limit`` successes.

    ``acquire`` returns the epoch the request started in: a 429 only halves the limit when the
    request that got it started under the current limit, so a burst of 429s from requests sent
    together counts as one signal, not as one halving each.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = max(1, maximum)
        self.limit = self.maximum
        self.in_flight = 0
        self._epoch = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        while self.in_flight >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._wake()  # a waiter woken and then cancelled must hand its turn on
                raise
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self.in_flight += 1
        return self._epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def rate_limited(self, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self._epoch += 1
        self._successes = 0
        if self.limit > 1:
            self.limit = max(1, self.limit // 2)
            log.info("rate limited: at most %d requests in flight for now", self.limit)

    def succeeded(self) -> None:
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        for waiter in list(self._waiters):
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
