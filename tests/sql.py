"""Reading the database as an operator does with `sqlite3` at 3 a.m.: what tests check beyond
the store's own interface (a column's raw value, a row the service never reads back)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.store.schema import SCHEMA, sha256_hex, statements


def read(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement, on a read-only connection of its own (WAL allows it while
    the service runs)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]


async def query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """`read`, off the event loop the service under test runs on."""
    return await asyncio.to_thread(read, path, sql, params)


def migrate_to(db: sqlite3.Connection, version: int) -> None:
    """A store as `version` of the schema left it, for a test of the upgrade after it (from
    version 9 on, a script calls the function `bridge.store.schema.migrate` provides)."""
    db.create_function("sha256_hex", 1, sha256_hex, deterministic=True)
    for number, script in enumerate(SCHEMA[:version], start=1):
        for statement in statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
