"""Time as an injected object, so retry, backoff and provider spacing are testable without sleep."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch; what every stored timestamp is measured in."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to: tests set it, workers read it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


async def wait_for_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True when it was set. Clears it."""
    try:
        if timeout is None:
            await event.wait()
        else:
            await asyncio.wait_for(event.wait(), max(timeout, 0.0))
    except TimeoutError:
        return False
    event.clear()
    return True
