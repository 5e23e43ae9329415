"""Outgoing email (`outbox`) and the throttle of operational alerts (`alerts`).

The Message-ID is an email's key: enqueueing the same email twice is a no-op, so a report or a
fax's email enqueued again after a crash is still one email. An email being delivered is
leased, apart from its retry time, so that a start (when nothing can be in flight) hands it out
again at once; it may then arrive twice, recognisable by its Message-ID.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from bridge.store.rows import (
    MAIL_INFOS,
    QUEUED_MAILS,
    MailInfo,
    MailState,
    OutgoingMail,
    QueuedMail,
)
from bridge.store.sql import Reader, first, read_blob
from bridge.store.writer import Writer


def enqueue(db: sqlite3.Connection, mail: OutgoingMail, now: float) -> bool:
    """In the caller's transaction: the email goes out with whatever records why it exists."""
    cur = db.execute(
        "INSERT INTO outbox (message_id, mail_from, recipients, body, state, next_attempt_at,"
        " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)"
        " ON CONFLICT(message_id) DO NOTHING",
        (mail.message_id, mail.mail_from, json.dumps(list(mail.recipients)), mail.body,
         MailState.PENDING, now, now, now),
    )
    return cur.rowcount == 1


class Outbox:
    """Emails from `enqueue` to `finish`."""

    def __init__(self, writer: Writer, reader: Reader) -> None:
        self._writer = writer
        self._reader = reader

    async def enqueue(self, mail: OutgoingMail, now: float) -> bool:
        """An email on its own; False if one with its Message-ID is already queued."""
        return await self._writer.transaction(lambda db: enqueue(db, mail, now))

    async def recover(self) -> None:
        """At start nothing is being delivered: every lease is void."""
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE outbox SET leased_until = NULL WHERE leased_until IS NOT NULL"))

    async def claim(self, now: float, lease: float) -> QueuedMail | None:
        """Take the next due email, leased for `lease` seconds: if the delivery neither
        succeeds nor fails by then (a hung worker), it is handed out again; a crash clears
        the lease at the next start. Either way an email may go twice; its Message-ID shows it."""
        def tx(db: sqlite3.Connection) -> QueuedMail | None:
            row = first(
                db,
                "UPDATE outbox SET attempts = attempts + 1, leased_until = ?, updated_at = ?"
                " WHERE id = (SELECT id FROM outbox WHERE state = ? AND next_attempt_at <= ?"
                "   AND COALESCE(leased_until, 0) <= ? ORDER BY next_attempt_at, id LIMIT 1)"
                f" RETURNING {QUEUED_MAILS.columns}",
                (now + lease, now, MailState.PENDING, now, now),
            )
            if row is None:
                return None
            return QUEUED_MAILS.load_with(row, body=read_blob(db, "outbox", "body", row["id"]))

        return await self._writer.transaction(tx)

    async def finish(
        self, mail_id: int, state: MailState, *, now: float, error: str = "",
        retry_at: float | None = None, unanswered: bool = False,
    ) -> None:
        """Delivered, given up, or (`PENDING` with `retry_at`) to be tried again then;
        `unanswered`: this delivery's final `.` got no answer (the relay may have it)."""
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE outbox SET state = ?, last_error = ?, updated_at = ?, leased_until = NULL,"
            " next_attempt_at = COALESCE(?, next_attempt_at), unanswered = unanswered + ?"
            " WHERE id = ?", (state, error, now, retry_at, int(unanswered), mail_id)))

    async def requeue(self, mail_id: int, now: float) -> bool:
        """An operator's resend of an email that was given up or is of unknown delivery, or
        one still waiting for its next attempt, after fixing the relay: due now, with a fresh
        allowance of attempts. Unanswered deliveries stay counted: the operator's resend is
        the one resend, so a relay that again does not answer gets no further copy."""
        cur = await self._writer.transaction(lambda db: db.execute(
            "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ?,"
            " created_at = ? WHERE id = ? AND state IN (?, ?, ?) AND length(body) > 0"
            " AND COALESCE(leased_until, 0) <= ?",  # not while it is being delivered
            (MailState.PENDING, now, now, now, mail_id, MailState.FAILED, MailState.UNKNOWN,
             MailState.PENDING, now)))
        return bool(cur.rowcount == 1)

    async def latest(self, state: MailState | None = None, limit: int = 100) -> list[MailInfo]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = await self._reader.rows(
            f"SELECT {MAIL_INFOS.columns} FROM outbox {where} ORDER BY id DESC LIMIT ?",
            (*params, limit))
        return [MAIL_INFOS.load(r) for r in rows]

    async def next_due(self) -> float | None:
        value = await self._reader.value(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(leased_until, 0)))"
            " FROM outbox WHERE state = ?", (MailState.PENDING,))
        return float(value) if value is not None else None

    async def counts(self) -> dict[str, int]:
        return await self._reader.state_counts("outbox")

    async def throttle_alert(
        self, cause: str, now: float, window: float,
        render: Callable[[int, int], OutgoingMail | None],
    ) -> bool:
        """Send at most one alert per cause per `window`; the next one says how many were
        held back. `render(sent_before, suppressed)` makes the email. True if one was queued."""
        def tx(db: sqlite3.Connection) -> bool:
            row = first(db, "SELECT last_sent_at, suppressed, sent FROM alerts WHERE cause = ?",
                        (cause,))
            if row is not None and now - row[0] < window:
                db.execute("UPDATE alerts SET suppressed = suppressed + 1 WHERE cause = ?",
                           (cause,))
                return False
            sent, suppressed = (row[2], row[1]) if row is not None else (0, 0)
            mail = render(sent, suppressed)
            if mail is not None:
                enqueue(db, mail, now)
            db.execute(
                "INSERT INTO alerts (cause, last_sent_at, suppressed, sent) VALUES (?, ?, 0, ?)"
                " ON CONFLICT(cause) DO UPDATE SET last_sent_at = excluded.last_sent_at,"
                " suppressed = 0, sent = excluded.sent", (cause, now, sent + 1))
            return mail is not None

        return await self._writer.transaction(tx)
