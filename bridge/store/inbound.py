"""Received faxes (`inbound`), what FaxMAX pushed (status events, faxes, and what could not be
understood: `quarantine`), and what the 秒速FAX Plus poller learnt from the log.

De-duplication is the database's: a fax is keyed by (provider, external id) and a status event
by its key, both inserted with `ON CONFLICT DO NOTHING`, so a repeated push or poll result is a
no-op, never a second email.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.store.outbox import enqueue
from bridge.store.rows import (
    INBOUND,
    QUARANTINED,
    Inbound,
    InboundState,
    NewInbound,
    OutgoingMail,
    Quarantined,
    StatusEvent,
)
from bridge.store.schema import sha256_hex
from bridge.store.sql import Reader, first, set_meta
from bridge.store.statuses import add_status_events
from bridge.store.writer import Writer

if TYPE_CHECKING:
    from bridge.dialling import StatusRules

LAST_PUSH = "faxmax.last_push"


def _add(db: sqlite3.Connection, faxes: Sequence[NewInbound], state: InboundState,
         now: float) -> list[int]:
    ids = []
    for fax in faxes:
        cur = db.execute(
            "INSERT INTO inbound (provider, external_id, state, receiving_number,"
            " sender_number, remote_station, pages, received_at, document_path, document,"
            " next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(provider, external_id) DO NOTHING",
            (fax.provider, fax.external_id, state, fax.receiving_number,
             fax.sender_number, fax.remote_station, fax.pages, fax.received_at,
             fax.document_path, fax.document, now, now, now),
        )
        if cur.rowcount == 1:
            assert cur.lastrowid is not None
            ids.append(cur.lastrowid)
    return ids


def _quarantine(db: sqlite3.Connection, source: str, reason: str, body: bytes,
                now: float) -> tuple[int, bool]:
    """Keep `body` once, keyed by its SHA-256: FaxMAX resending a body it got no 2xx for
    only counts a repeat. (its id, whether it is new)."""
    row = first(db, "INSERT INTO quarantine (source, reason, body, received_at, sha256)"
                " VALUES (?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET repeats = repeats + 1"
                " RETURNING id, repeats", (source, reason, body, now, sha256_hex(body)))
    assert row is not None
    return int(row[0]), row[1] == 0


class InboundStore:
    """Received faxes from `record_push` / `record_poll` to `finish`."""

    def __init__(self, writer: Writer, reader: Reader) -> None:
        self._writer = writer
        self._reader = reader

    async def record_push(
        self, *, source: str, events: Sequence[StatusEvent], faxes: Sequence[NewInbound],
        bad: Sequence[tuple[bytes, str]], now: float, rules: StatusRules, replay: bool = False,
    ) -> tuple[int, list[int], list[tuple[int, bool]]]:
        """Everything a push carried, in one group commit: status events (replays are no-ops),
        new received faxes, what goes to quarantine, and the time of the last push (unless this
        is an operator's replay of a kept one; written once per group). Returns (new events,
        new fax ids, (quarantine id, whether it is new) per bad item)."""
        def work(db: sqlite3.Connection) -> tuple[int, list[int], list[tuple[int, bool]]]:
            new_events = add_status_events(db, events, now, rules)
            fax_ids = _add(db, faxes, InboundState.RECEIVED, now)
            kept = [_quarantine(db, source, reason, body, now) for body, reason in bad]
            return new_events, fax_ids, kept

        if not replay:
            last = float(self._writer.group_meta(LAST_PUSH) or "0")
            self._writer.set_group_meta(LAST_PUSH, repr(max(now, last)))
        return await self._writer.grouped(work)

    async def record_poll(self, faxes: Sequence[NewInbound], state: InboundState,
                          meta: dict[str, str], now: float) -> list[int]:
        """A provider's log: unseen faxes and the poller's bookkeeping, in one commit."""
        def tx(db: sqlite3.Connection) -> list[int]:
            ids = _add(db, faxes, state, now)
            set_meta(db, meta)
            return ids

        return await self._writer.transaction(tx)

    async def due(self, state: InboundState, now: float) -> Inbound | None:
        """The fax in `state` due first, with its image. One worker takes each state, so
        reading the head is enough: no claim is needed."""
        rows = await self._reader.rows(
            f"SELECT {INBOUND.all_columns} FROM inbound WHERE state = ? AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT 1", (state, now))
        return INBOUND.load(rows[0], lazy=True) if rows else None

    async def next_due(self, state: InboundState) -> float | None:
        value = await self._reader.value(
            "SELECT MIN(next_attempt_at) FROM inbound WHERE state = ?", (state,))
        return float(value) if value is not None else None

    async def all(self) -> list[Inbound]:
        """Every received fax, without the images kept in the rows."""
        rows = await self._reader.rows(f"SELECT {INBOUND.columns} FROM inbound ORDER BY id")
        return [INBOUND.load(r) for r in rows]

    async def fetched(self, inbound_id: int, document_path: str, now: float,
                      meta: dict[str, str]) -> None:
        """The document is on disk; the poller's bookkeeping goes in the same commit."""
        def tx(db: sqlite3.Connection) -> None:
            set_meta(db, meta)
            db.execute(
                "UPDATE inbound SET state = ?, document_path = ?, attempts = attempts + 1,"
                " next_attempt_at = ?, detail = '', updated_at = ? WHERE id = ?",
                (InboundState.RECEIVED, document_path, now, now, inbound_id))

        await self._writer.transaction(tx)

    async def retry(self, inbound_id: int, *, at: float, detail: str, now: float,
                    no_pdf: bool = False) -> None:
        """Another failed attempt; `no_pdf`: the provider said it has no such PDF (counted
        apart, see `Inbound.no_pdf_answers`)."""
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE inbound SET attempts = attempts + 1, no_pdf_answers = no_pdf_answers + ?,"
            " next_attempt_at = ?, detail = ?, updated_at = ? WHERE id = ?",
            (int(no_pdf), at, detail, now, inbound_id)))

    async def finish(
        self, inbound_id: int, state: InboundState, *, mail: OutgoingMail | None, detail: str,
        now: float,
    ) -> None:
        """Mailed (its email enqueued in the same commit) or failed."""
        def tx(db: sqlite3.Connection) -> None:
            if mail is not None:
                enqueue(db, mail, now)
            db.execute("UPDATE inbound SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
                       (state, detail, now, inbound_id))

        await self._writer.transaction(tx)

    async def counts(self) -> dict[str, int]:
        return await self._reader.state_counts("inbound")

    async def quarantined(self, *, pending_only: bool = False) -> list[Quarantined]:
        """What was kept raw because it could not be understood (see `replay-quarantine`)."""
        where = " WHERE replayed_at IS NULL" if pending_only else ""
        rows = await self._reader.rows(
            f"SELECT {QUARANTINED.columns} FROM quarantine{where} ORDER BY id")
        return [QUARANTINED.load(r) for r in rows]

    async def replayed(self, quarantine_id: int, now: float) -> None:
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE quarantine SET replayed_at = ? WHERE id = ?", (now, quarantine_id)))
