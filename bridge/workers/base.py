"""The loop every worker shares: do work while there is some, then sleep until woken or due.

Workers expose `run_once()` so tests drive them step by step with a fake clock; the service
runs `run()`, which never busy-waits: it sleeps on an `asyncio.Event` that producers set, or
until the next stored due time.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from bridge.clock import Clock, wait_for_event

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # re-read the store at least this often, in case the wall clock jumped
ERROR_PAUSE = 5.0  # after an unexpected error, so a persistent fault cannot spin the CPU


class Worker(ABC):
    name = "worker"

    def __init__(self, clock: Clock, *, concurrency: int = 1) -> None:
        self.clock = clock
        self.concurrency = concurrency
        self._events = [asyncio.Event() for _ in range(concurrency)]
        self._stopping = False

    def wake(self) -> None:
        for event in self._events:
            event.set()

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    @abstractmethod
    async def run_once(self) -> bool:
        """Do one unit of work; True if there was some (so the caller should call again)."""

    @abstractmethod
    async def next_due(self) -> float | None:
        """The clock time at which work will be due, or None if only a wake-up can bring it."""

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(event) for event in self._events))

    async def _loop(self, event: asyncio.Event) -> None:
        while not self._stopping:
            try:
                if await self.run_once():
                    continue
                due = await self.next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: unexpected error; pausing %ss", self.name, ERROR_PAUSE)
                await wait_for_event(event, ERROR_PAUSE)
                continue
            timeout = MAX_SLEEP if due is None else min(MAX_SLEEP, due - self.clock.now())
            await wait_for_event(event, timeout)
