"""The one writer of the database: a `sqlite3` connection on a thread of its own.

Every write is a transaction, and every transaction is one trip to that thread and back,
whatever it holds: its statements run there one after another (`transaction(fn)`: `fn` is a
plain function of the connection), so a transaction never waits for the event loop between
two statements, and the loop never waits for the disk.

Transactions of callers that must be acknowledged (a mail's `250`, a push's `200`) are grouped
(`grouped`): whatever is waiting to be written when the writer becomes free is committed
together, and each caller is answered once the group's commit is durable. Twenty sessions
arriving together cost one fsync instead of twenty. A work that fails is rolled back with its
group, its caller hears the error, and the others are written again in a group of their own:
a failure costs its group a second try, never another caller's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import StoreError
from bridge.store.sql import rollback, set_meta

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


@dataclass
class GroupOutcome:
    values: list[Any]
    failed: int | None = None  # the index of the work that raised, after the others ran
    error: Exception | None = None


def run_group(works: list[Work], durable: bool, meta: dict[str, str],
              db: sqlite3.Connection) -> GroupOutcome:
    """The works of a group one after another in one transaction, without savepoints (a
    savepoint per work costs each its own bookkeeping, on every commit). When one fails, the
    transaction is rolled back and the outcome says which. Only work that can be done again
    after a power cut commits with `synchronous=NORMAL`. BEGIN IMMEDIATE takes the write lock
    up front, so a second process (the CLI) waits instead of failing half-way."""
    if not durable:
        db.execute("PRAGMA synchronous=NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            values = []
            for index, work in enumerate(works):
                try:
                    values.append(work(db))
                except Exception as exc:
                    rollback(db)
                    return GroupOutcome(values, index, exc)
            set_meta(db, meta)
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise
    finally:
        if not durable:
            db.execute("PRAGMA synchronous=FULL")
    return GroupOutcome(values)


def _alone(fn: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
    """`fn(db)` alone in a transaction: a group of one, its error raised."""
    outcome = run_group([fn], True, {}, db)
    if outcome.error is not None:
        raise outcome.error
    result: T = outcome.values[0]
    return result


class Writer:
    """The writer's thread, its connection and the group commit."""

    def __init__(self, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._executor = executor
        self._db = db
        self._waiting: list[tuple[Work, asyncio.Future[Any], bool]] = []
        # Bookkeeping that only its latest value matters for (the time of the last push),
        # written once by the next group commit instead of once by every work in the group.
        self._group_meta: dict[str, str] = {}
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, path: Path) -> Writer:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, db)

    async def close(self) -> None:
        """Groups already handed over are finished first."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.run(lambda db: db.close())
        self._executor.shutdown(wait=False)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open: never, between two calls."""
        return self._db.in_transaction

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` on the writer's thread, outside any transaction the writer opens, after
        whatever was handed there before it. A caller cancelled before it starts leaves it
        undone; once started, it runs to its end."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction: `fn(db)`, committed, in one trip to the writer."""
        return await self.run(partial(_alone, fn))

    def set_group_meta(self, key: str, value: str) -> None:
        """Write `meta[key] = value` with the next group commit (a later value wins)."""
        self._group_meta[key] = value

    def group_meta(self, key: str) -> str | None:
        return self._group_meta.get(key)

    async def grouped(self, work: Callable[[sqlite3.Connection], T], *,
                      durable: bool = True) -> T:
        """Run `work` in a transaction shared with whatever else is waiting to be written, and
        return once that transaction is committed (see the module's docstring).

        `durable=False` is for work that is simply done again if a power cut loses it: a group
        of only such work commits with `synchronous=NORMAL` (written to the WAL, synced by the
        next durable commit) instead of holding the writer through an fsync of its own."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, future, durable))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group commit")
        return await future

    async def _flush(self) -> None:
        """Commit groups until nothing waits. A task of its own, so that a caller cancelled
        while waiting (a dropped connection, a hurried shutdown) cannot cut a group short. A
        worker's own transaction, handed to the writer meanwhile, has its turn between two
        groups during a long burst of mails or pushes."""
        while self._waiting:
            group, self._waiting = self._waiting, []
            # A caller that stopped waiting before its work began is not written: nobody
            # would be told, and the sender would send it again.
            group = [item for item in group if not item[1].done()]
            if group:
                with contextlib.suppress(Exception):  # its callers have the error
                    await self._commit_group(group)

    async def _commit_group(self, group: list[tuple[Work, asyncio.Future[Any], bool]]) -> None:
        meta = dict(self._group_meta)
        try:
            outcome = await self.run(partial(
                run_group, [item[0] for item in group], any(item[2] for item in group), meta))
        except BaseException as exc:  # rolled back, or cut off by shutdown: none acknowledged
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else StoreError(
                        "storing was interrupted by shutdown; nothing was acknowledged"))
            raise
        if outcome.failed is not None:
            broken = group[outcome.failed][1]
            if not broken.done():
                assert outcome.error is not None
                broken.set_exception(outcome.error)
            # As in `_flush`: a caller that gave up waiting meanwhile is not written.
            rest = [item for item in group if item[1] is not broken and not item[1].done()]
            if rest:
                await self._commit_group(rest)
            return
        for key, value in meta.items():  # unless a newer value came meanwhile
            if self._group_meta.get(key) == value:
                del self._group_meta[key]
        for (_, future, _), value in zip(group, outcome.values, strict=True):
            if not future.done():  # else its caller gave up; the data is stored all the same
                future.set_result(value)
