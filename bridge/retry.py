"""Retry schedule as data: exponential backoff with jitter, bounded by attempts and by age.

Pure: the caller passes the clock reading and the random draw, so tests can assert the exact
schedule and operators can read it off the configuration (`retry_base`, `retry_cap`,
`max_attempts`, `retry_max_age`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base: float
    cap: float
    max_attempts: int
    max_age: float

    def delay(self, attempts: int, jitter: float) -> float:
        """Seconds before attempt `attempts + 1`; `jitter` in [0, 1) spreads it over
        [d/2, d) so that many jobs failing together do not retry together."""
        nominal = min(self.cap, self.base * 2.0 ** max(attempts - 1, 0))
        return nominal * (0.5 + jitter / 2)

    def next_attempt(
        self, *, attempts: int, first_at: float, now: float, jitter: float
    ) -> float | None:
        """When to try again, or None when the attempts or the age are used up."""
        if attempts >= self.max_attempts:
            return None
        at = now + self.delay(attempts, jitter)
        if at - first_at > self.max_age:
            return None
        return at
