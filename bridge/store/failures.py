"""Failures no rule classifies (a bug, a broken template override, a row the code cannot
handle), counted per queue and item, so that a worker gives such an item up after a few tries
instead of retrying the head of its queue forever (see `bridge.workers.base.Shunt`)."""

from __future__ import annotations

import sqlite3

from bridge.store.sql import first
from bridge.store.writer import Writer


class Failures:
    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    async def count(self, queue: str, item: int, error: str, now: float) -> int:
        """One more failure of `item` in `queue`; returns how many it has had."""
        def tx(db: sqlite3.Connection) -> int:
            row = first(
                db,
                "INSERT INTO failures (queue, item, count, last_error, first_at, last_at)"
                " VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT (queue, item) DO UPDATE"
                " SET count = count + 1, last_error = excluded.last_error,"
                " last_at = excluded.last_at RETURNING count",
                (queue, item, error, now, now))
            assert row is not None
            return int(row[0])

        return await self._writer.transaction(tx)

    async def forget(self, queue: str, item: int) -> None:
        """The item succeeded or was given up: its count starts afresh if it comes back (an
        operator's resend)."""
        await self._writer.transaction(lambda db: db.execute(
            "DELETE FROM failures WHERE queue = ? AND item = ?", (queue, item)))
