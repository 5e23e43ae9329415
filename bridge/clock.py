"""Time as an injected object, so retry, backoff and provider spacing are testable without sleep."""

from __future__ import annotations

import asyncio
import datetime
import time
import zoneinfo
from typing import Protocol


class Clock(Protocol):
    """`now()`: wall-clock seconds since the epoch, what every stored timestamp is measured in.
    `monotonic()`: seconds from an arbitrary start, never stepped (by NTP or an operator), for
    spacing measured within the process (rule 7)."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


def parse_provider_time(text: str, tz: str) -> float | None:
    """A provider's `YYYY-MM-DD HH:MM:SS`, which names no zone, read in `tz` (the zone the
    provider is known to write); None when it is not such a time."""
    try:
        moment = datetime.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to: tests set it, workers read it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._monotonic = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self._now += seconds
        self._monotonic += seconds

    def step(self, seconds: float) -> None:
        """The wall clock is set (an NTP step, back when negative); no time passes."""
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
