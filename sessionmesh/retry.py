"""The one retry policy: exponential backoff with jitter, as data (tenacity runs the loops).

Every retry in the mesh is one of these, so delays and the errors worth retrying are decided in
one place: `RetryPolicy.retrying()` for "try until it works or a deadline passes", and
`delay(attempt)` for loops that run for ever and only need the next pause (writers, watchers).
Only transport errors are retried; callers name them with `on=`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
)
from tenacity.stop import stop_base

# Jitter draws from its own generator: the global one belongs to the caller (a seeded test,
# a property-based test that checks nobody else draws from it while it generates input).
_JITTER = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """Delays `first`, doubling (`multiplier`) to at most `cap` seconds, each varied by
    ±`jitter` (a fraction), so many retrying clients do not arrive in step."""

    first: float = 0.2
    cap: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first failure)."""
        base = min(self.cap, self.first * self.multiplier ** max(0, attempt - 1))
        if not self.jitter:
            return base
        return base * (1 + _JITTER.uniform(-self.jitter, self.jitter))

    def _wait(self, state: RetryCallState) -> float:
        return self.delay(state.attempt_number)

    def retrying(
        self,
        *,
        on: tuple[type[BaseException], ...],
        deadline: float | None = None,
        attempts: int | None = None,
        before_sleep: Callable[[RetryCallState], Any] | None = None,
    ) -> AsyncRetrying:
        """`async for attempt in policy.retrying(on=(...,)): with attempt: ...`

        Retries only the errors in `on`; stops after `deadline` seconds or `attempts` tries
        (whichever comes first; neither: never) and then re-raises the last error."""
        stops: list[stop_base] = []
        if deadline is not None:
            stops.append(stop_after_delay(deadline))
        if attempts is not None:
            stops.append(stop_after_attempt(attempts))
        return AsyncRetrying(
            retry=retry_if_exception_type(on),
            wait=self._wait,
            stop=stop_any(*stops) if stops else stop_never,
            reraise=True,
            before_sleep=before_sleep,
        )


# The mesh's policies by purpose; tests may pass their own.
REDIS = RetryPolicy(first=0.2, cap=5.0)  # waiting for Redis to come back
LEASE = RetryPolicy(first=0.2, cap=0.5, jitter=0.0)  # polling a lease that is to lapse
STREAM = RetryPolicy(first=0.1, cap=3.0)  # re-opening a watch stream
HEALTH = RetryPolicy(first=0.2, cap=2.0)  # re-opening a node's health stream
MOVE = RetryPolicy(first=1.0, cap=30.0, jitter=0.0)  # a failover move that found no room
LAPSED = RetryPolicy(first=0.2, cap=1.0)  # re-taking a lease that lapsed in a Redis outage
