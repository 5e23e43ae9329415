"""Keeping the database healthy and readable: retention (`purge`), `backup`, the `meta`
bookkeeping (the poller's last call times, the last push), the snapshot that `/metrics` and
`fax-bridge status` read, and the write probe of `/healthz`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from bridge.files import atomic_path
from bridge.providers import Provider
from bridge.store.rows import (
    FINAL_JOB_STATES,
    InboundState,
    JobState,
    MailState,
    MessageState,
    Purged,
    Snapshot,
)
from bridge.store.sql import Reader, set_meta
from bridge.store.statuses import CONTRADICTIONS
from bridge.store.writer import Writer

# A push for a fax id not known yet is usually one that raced ahead of its send's answer,
# applied within a second; one still unknown after this long is a person's to look at.
UNMATCHED_AFTER = 300.0

# Each queue: what waits in it and since when; the age of the oldest item tells an operator
# which stage is stuck.
QUEUES = {
    "convert": "SELECT COUNT(*), MIN(received_at) FROM messages WHERE state = 'received'",
    "send": "SELECT COUNT(*), MIN(created_at) FROM jobs WHERE state IN ('queued', 'sending')",
    "status": "SELECT COUNT(*), MIN(submitted_at) FROM jobs WHERE state = 'submitted'",
    "report": "SELECT COUNT(*), MIN(COALESCE(finished_at, updated_at)) FROM jobs"
              " WHERE state IN ('delivered', 'failed', 'unknown', 'cancelled')"
              " AND reported != state",
    "inbound": "SELECT COUNT(*), MIN(created_at) FROM inbound"
               " WHERE state IN ('fetching', 'received')",
    "email": "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'",
}


def _purge_batch(cutoff: float, remove: Callable[[list[str]], None], batch: int,
                 db: sqlite3.Connection) -> tuple[int, int, int, int]:
    final = [str(state) for state in FINAL_JOB_STATES]
    # A received fax that failed was never mailed: its image is the only copy (see `purge`).
    done = [str(InboundState.MAILED), str(InboundState.SKIPPED)]
    db.execute("PRAGMA secure_delete = ON")
    try:
        messages = db.execute(
            "SELECT id, spool_path, document_path FROM messages m"
            " WHERE (document_path IS NOT NULL OR spool_path != '' OR raw IS NOT NULL)"
            " AND state != ?"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message = m.id AND"
            f"   (j.state NOT IN ({', '.join('?' * len(final))})"
            "    OR COALESCE(j.finished_at, ?) >= ?))"
            " LIMIT ?", (MessageState.RECEIVED, *final, cutoff, cutoff, batch)).fetchall()
        inbound = db.execute(
            "SELECT id, document_path FROM inbound"
            " WHERE (document_path IS NOT NULL OR document IS NOT NULL)"
            " AND state IN (?, ?) AND updated_at < ? LIMIT ?",
            (*done, cutoff, batch)).fetchall()
        paths = [p for _, spool, doc in messages for p in (spool, doc) if p]
        paths += [str(doc) for _, doc in inbound if doc]
        if paths:
            remove(paths)
        db.executemany(
            "UPDATE messages SET spool_path = '', raw = NULL, document_path = NULL,"
            " cover_html = NULL WHERE id = ?", [(r[0],) for r in messages])
        db.executemany(
            "UPDATE inbound SET document_path = NULL, document = NULL WHERE id = ?",
            [(r[0],) for r in inbound])
        emails = db.execute(
            "UPDATE outbox SET body = x'' WHERE id IN (SELECT id FROM outbox"
            " WHERE state = ? AND updated_at < ? AND length(body) > 0 LIMIT ?)",
            (MailState.SENT, cutoff, batch)).rowcount
        quarantined = db.execute(
            "UPDATE quarantine SET body = x'' WHERE id IN (SELECT id FROM quarantine"
            " WHERE replayed_at < ? AND length(body) > 0 LIMIT ?)",
            (cutoff, batch)).rowcount
    finally:
        db.execute("PRAGMA secure_delete = OFF")
    return len(messages), len(inbound), emails, quarantined


class Upkeep:
    def __init__(self, writer: Writer, reader: Reader) -> None:
        self._writer = writer
        self._reader = reader

    async def purge(
        self, cutoff: float, remove: Callable[[list[str]], None], batch: int = 200,
    ) -> Purged:
        """Forget the fax images of everything finished before `cutoff`, keeping the metadata
        (who, when, which number, pages, outcome).

        `remove(paths)` deletes the files and runs inside the transaction (on the writer's
        thread), before the rows are cleared: a crash in between leaves rows that still name
        deleted files, which the next purge clears (deleting a missing file is fine), never
        files no row knows of. `secure_delete` zeroes the freed database pages, so the images
        do not linger in the file either. Emails given up (`failed`), received faxes that could
        not be mailed (`failed`: no recipient, or given up) and quarantined pushes not yet
        replayed are kept: they are the only copy of something not yet delivered."""
        totals = [0, 0, 0, 0]
        while True:
            counts = await self._writer.transaction(
                lambda db: _purge_batch(cutoff, remove, batch, db))
            totals = [t + n for t, n in zip(totals, counts, strict=True)]
            if max(counts) < batch:
                return Purged(*totals)

    async def backup(self, target: Path) -> None:
        """A consistent copy of the live database, made on the writer's thread (writes wait for
        it; reads go on), written under a temporary name and renamed, so `target` is complete
        or absent."""
        with atomic_path(target) as unfinished:
            await self._writer.run(lambda db: db.execute("VACUUM INTO ?", (str(unfinished),)))

    async def meta(self, key: str) -> str | None:
        value = await self._reader.value("SELECT value FROM meta WHERE key = ?", (key,))
        return str(value) if value is not None else None

    async def set_meta(self, values: dict[str, str]) -> None:
        await self._writer.transaction(lambda db: set_meta(db, values))

    async def probe_write(self, now: float) -> None:
        """A real, committed write: what /healthz needs to know the store still takes data."""
        await self.set_meta({"health.probe": repr(now)})

    async def snapshot(self, now: float) -> Snapshot:
        jobs = {str(k): 0 for k in JobState} | await self._reader.state_counts("jobs")
        emails = {str(k): 0 for k in MailState} | await self._reader.state_counts("outbox")
        received: dict[tuple[str, str], int] = {
            (p, state): 0 for p in Provider for state in InboundState}
        for provider, state, n in await self._reader.rows(
                "SELECT provider, state, COUNT(*) FROM inbound GROUP BY provider, state"):
            received[(str(provider), str(state))] = int(n)
        queues = {}
        for queue, sql in QUEUES.items():
            (depth, oldest), = await self._reader.rows(sql)
            queues[queue] = (int(depth), max(0.0, now - oldest) if oldest is not None else 0.0)
        quarantined = await self._reader.value(
            "SELECT COUNT(*) FROM quarantine WHERE replayed_at IS NULL")
        meta = {str(k): str(v) for k, v in await self._reader.rows(
            "SELECT key, value FROM meta WHERE key IN"
            " ('byosoku.log_gaps', 'byosoku.last_poll_ok', 'faxmax.last_push', ?)",
            (CONTRADICTIONS,))}
        unmatched = await self._reader.value(
            "SELECT COUNT(DISTINCT fax_id) FROM status_events e WHERE applied_at IS NULL"
            " AND received_at <= ?"
            " AND NOT EXISTS (SELECT 1 FROM fax_attempts a WHERE a.fax_id = e.fax_id)",
            (now - UNMATCHED_AFTER,))
        return Snapshot(
            unmatched=int(unmatched),
            jobs=jobs, received=received, emails=emails, queues=queues,
            quarantined=int(quarantined), log_gaps=int(meta.get("byosoku.log_gaps", 0)),
            last_poll=float(meta.get("byosoku.last_poll_ok", 0)),
            last_push=float(meta.get("faxmax.last_push", 0)),
            contradictions=int(meta.get(CONTRADICTIONS, 0)))

    async def spool_names(self) -> set[str]:
        """The names of the spool files that mails refer to (see `ingress.data.orphans`)."""
        rows = await self._reader.rows("SELECT spool_path FROM messages WHERE spool_path != ''")
        return {Path(str(path)).name for path, in rows}
