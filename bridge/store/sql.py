"""Small pieces every table family's SQL uses, on a plain `sqlite3` connection."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

SQLITE_FULL = 13  # the primary result code (https://www.sqlite.org/rescode.html#full)


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL or ENOSPC/EDQUOT: the caller should say "try again later", not "error".

    Decided by the error codes, never by the message's words."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == SQLITE_FULL
    return False


BLOB_CHUNK = 1 << 20


def read_blob(db: sqlite3.Connection, table: str, column: str, rowid: int) -> bytes:
    """A large value, read in pieces. Read whole (a `SELECT`, or an `UPDATE ... RETURNING` of
    it), a 40 MB email held the interpreter, and so the event loop, for up to 0.18 s, although
    the read runs in the writer's thread; piece by piece, the loop runs between the pieces."""
    with db.blobopen(table, column, rowid, readonly=True) as blob:
        out = bytearray(len(blob))
        for start in range(0, len(out), BLOB_CHUNK):
            out[start:start + BLOB_CHUNK] = blob.read(BLOB_CHUNK)
    return bytes(out)


def first(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    """The first row a statement gives; the statement is finished before the transaction
    goes on (closing the cursor resets it)."""
    with contextlib.closing(db.execute(sql, params)) as cursor:
        row: sqlite3.Row | None = cursor.fetchone()
    return row


def set_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    for key, value in values.items():
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def rollback(db: sqlite3.Connection) -> None:
    # OperationalError: a failed COMMIT that SQLite already rolled back itself
    with contextlib.suppress(sqlite3.OperationalError):
        if db.in_transaction:
            db.execute("ROLLBACK")


class Reader:
    """The second connection, read-only: the checks at RCPT time and the workers' look-ups
    never wait behind a write transaction (WAL lets both run at once), and what they read is
    always committed. Rows are fetched in the same trip as the statement (`execute_fetchall`),
    never by a cursor's execute, fetch and close (three trips)."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection  # public for diagnostics (a progress handler in tests)

    @classmethod
    async def connect(cls, path: Path) -> Reader:
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            await connection.execute("PRAGMA query_only=ON")
            await connection.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self.connection.execute_fetchall(sql, params))

    async def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row, or None."""
        rows = await self.rows(sql, params)
        return rows[0][0] if rows else None

    async def state_counts(self, table: str) -> dict[str, int]:
        """How many rows of `table` (one of the store's own names) are in each state."""
        rows = await self.rows(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}

    async def close(self) -> None:
        await self.connection.close()
