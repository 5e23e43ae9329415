"""The loop every worker shares: do work while there is some, then sleep until woken or due.

Workers expose `run_once()` so tests drive them step by step with a fake clock; the service
runs `run()`, which never busy-waits: it sleeps on an `asyncio.Event` that producers set, or
until the next stored due time.

A failure that no rule classifies (a bug, a broken template override, a row the code cannot
handle) is counted against its item by a `Shunt`: after `MAX_FAILURES` the item goes to its
failed state, a person is told, and the queue moves on, instead of the same head item being
retried forever while everything behind it waits.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from bridge.alert_texts import said
from bridge.alerts import Alert
from bridge.clock import Clock, wait_for_event
from bridge.store import Store

log = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # re-read the store at least this often, in case the wall clock jumped
ERROR_PAUSE = 5.0  # after an unexpected error, so a persistent fault cannot spin the CPU
MAX_FAILURES = 5  # unclassified failures of one item before it is given up


class ItemFailed(Exception):
    """An item failed for a reason no rule classifies, `count` times of `limit`: it stays
    queued and is tried again."""

    def __init__(self, noun: str, item: int, count: int, limit: int) -> None:
        super().__init__(f"{noun} {item}: unexpected error (failure {count} of {limit})")
        self.noun = noun
        self.item = item
        self.count = count
        self.limit = limit


class Shunt:
    """Counts each item's unclassified failures in the store (they survive a restart) and
    gives an item up at the `limit`-th, as Mailman's runners move a message that keeps
    failing to the shunt queue. `queue` names the queue in the store and in words, `noun` its
    items as the logs name them (`job 17`, `mail 3`, `fax 2`, `message 4`)."""

    def __init__(self, store: Store, clock: Clock, queue: str, noun: str, *, alert: Alert | None,
                 limit: int = MAX_FAILURES,
                 classified: Callable[[Exception], bool] = lambda exc: False) -> None:
        self.store = store
        self.classified = classified  # errors the worker has a rule for: passed on, not counted
        self.clock = clock
        self.queue = queue
        self.noun = noun
        self.alert = alert
        self.limit = limit
        self._failing: set[int] = set()  # items with a count, as far as this process knows

    async def attempt(self, item: int, work: Callable[[], Awaitable[None]], *,
                      give_up: Callable[[str], Awaitable[None]]) -> None:
        """Run `work()` for `item`. On an unexpected error: below the limit, `ItemFailed`
        (chained to the error) tells the caller to try later; at the limit, `give_up(words)`
        puts the item in its failed state and the admin is alerted."""
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.classified(exc):
                raise
            words = f"{type(exc).__name__}: {exc}"
            count = await self.store.failures.count(self.queue, item, words, self.clock.now())
            if count < self.limit:
                self._failing.add(item)
                raise ItemFailed(self.noun, item, count, self.limit) from exc
            log.error("%s %s: given up after %d unexpected errors in the %s queue: %s",
                      self.noun, item, count, self.queue, words, exc_info=exc)
            await give_up(words)
            await self._forget(item)
            if self.alert is not None:
                await self.alert(f"shunt-{self.queue}", said(
                    "shunt", noun=self.noun, item=item, count=count, queue=self.queue,
                    error=words))
        else:
            if item in self._failing:
                await self._forget(item)

    async def _forget(self, item: int) -> None:
        self._failing.discard(item)
        await self.store.failures.forget(self.queue, item)


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
            except ItemFailed as failed:
                log.error("%s; trying again in %ss", failed, ERROR_PAUSE,
                          exc_info=failed.__cause__)
                await wait_for_event(event, ERROR_PAUSE)
                continue
            except Exception:
                log.exception("%s: unexpected error; pausing %ss", self.name, ERROR_PAUSE)
                await wait_for_event(event, ERROR_PAUSE)
                continue
            timeout = MAX_SLEEP if due is None else min(MAX_SLEEP, due - self.clock.now())
            await wait_for_event(event, timeout)
