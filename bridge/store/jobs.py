"""Outgoing faxes: the mails received for faxing (`messages`), one job per number (`jobs`),
the status pushes that settle them (`status_events`), and what each sender used (`usage`).

A job claimed for sending is `sending` on disk *before* the provider is called, so a crash in
the send window is visible afterwards and becomes `unknown`, never a silent resend.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from bridge.limits import DAY, HOUR, Cap, FaxCaps, HourlyCapReached, frees_at
from bridge.options import Options
from bridge.store.outbox import enqueue
from bridge.store.rows import (
    FINAL_JOB_STATES,
    JOBS,
    MESSAGES,
    WAITING_JOB_STATES,
    Job,
    JobState,
    Message,
    MessageState,
    NewMessage,
    OutgoingMail,
    StatusEvent,
    Usage,
)
from bridge.store.sql import Reader, first
from bridge.store.writer import Writer

Classify = Callable[[str], JobState | None]
log = logging.getLogger(__name__)
CONTRADICTIONS = "faxmax.contradicting_statuses"  # meta key

RECOVERED = ("fax-bridge stopped while this fax was being handed to FaxMAX, so it cannot "
             "tell whether FaxMAX received it; it was not sent again")
NO_REPORT = ("no delivery report: FaxMAX accepted the fax but never said whether it was "
             "delivered")
CANCELLED = "an operator cancelled it (fax-bridge cancel)"
# Why a job that is not waiting cannot be cancelled, by its state.
NOT_CANCELLABLE = {
    JobState.SENDING: "it is being handed to FaxMAX at this moment, so it may have it already",
    JobState.SUBMITTED: ("FaxMAX has the fax already, and a fax FaxMAX has cannot be called "
                         "back"),
}
WAITING = ", ".join("?" * len(WAITING_JOB_STATES))  # placeholders for WAITING_JOB_STATES
FINAL = ", ".join("?" * len(FINAL_JOB_STATES))


def add_status_events(db: sqlite3.Connection, events: Sequence[StatusEvent], now: float,
                      classify: Classify) -> int:
    """Store status pushes (replays are no-ops) and apply those whose fax id is known.

    Returns how many events were new. A push for a fax id we have not recorded yet (its
    send response is still on the way) stays pending and is applied by `JobStore.submitted`.
    """
    new = 0
    for event in events:
        cur = db.execute(
            "INSERT INTO status_events (provider, fax_id, status, result_message, pages,"
            " event_key, raw, received_at) VALUES (?,?,?,?,?,?,?,?)"
            " ON CONFLICT(event_key) DO NOTHING",
            (event.provider, event.fax_id, event.status, event.result_message,
             event.pages, event.event_key, event.raw, now),
        )
        new += cur.rowcount
    for fax_id in dict.fromkeys(e.fax_id for e in events):
        _apply_pending(db, fax_id, now, classify)
    return new


def _over_hourly(db: sqlite3.Connection, account: str, faxes: int, caps: FaxCaps,
                 now: float) -> HourlyCapReached | None:
    """Whether `faxes` more for `account` would pass an hourly cap, counted as `usage`
    counts, inside the accepting transaction."""
    since = int((now - HOUR) // 60)
    row = first(db, "SELECT COALESCE(SUM(CASE WHEN sender = ? THEN jobs END), 0),"
                    " COALESCE(SUM(jobs), 0) FROM usage WHERE minute >= ?", (account, since))
    assert row is not None  # an aggregate has a row
    mine, total = int(row[0]), int(row[1])
    checks: tuple[tuple[Cap, int, int, str | None], ...] = (
        ("per_sender", mine, caps.per_sender, account), ("total", total, caps.total, None))
    for cap, used, limit, whose in checks:
        if used + faxes > limit:
            minutes = db.execute(MINUTES.format(counted="jobs"), (since, whose)).fetchall()
            at = frees_at([(int(m), int(n)) for m, n in minutes], used + faxes - limit, HOUR)
            return HourlyCapReached(cap, now + 60 if at is None else at)
    return None


# What one sender (?2; NULL: the whole gateway) was charged per minute since minute ?1, oldest
# first: faxes (`jobs`) or pages, for `limits.frees_at`.
MINUTES = ("SELECT minute, SUM({counted}) FROM usage WHERE minute >= ?1"
           " AND (?2 IS NULL OR sender = ?2) GROUP BY minute ORDER BY minute")


def _apply_pending(db: sqlite3.Connection, fax_id: str, now: float, classify: Classify) -> None:
    row = first(db, f"SELECT {JOBS.columns} FROM jobs WHERE fax_id = ?", (fax_id,))
    if row is None:
        return
    job = JOBS.load(row)
    pending = db.execute(
        "SELECT id, status, result_message, pages FROM status_events"
        " WHERE fax_id = ? AND applied_at IS NULL ORDER BY id", (fax_id,)).fetchall()
    state, first_status = job.state, job.provider_status
    for event_id, status, message, pages in pending:
        verdict = classify(status)
        if verdict is not None and state not in (JobState.SUBMITTED, JobState.UNKNOWN) \
                and verdict != state:
            _contradiction(db, job.id, fax_id, status, first_status, state)
        if state in (JobState.SUBMITTED, JobState.UNKNOWN):
            if verdict is not None:
                state, first_status = verdict, status
                db.execute(
                    "UPDATE jobs SET state = ?, provider_status = ?, detail = ?,"
                    " pages_sent = COALESCE(?, pages_sent), updated_at = ?, finished_at = ?"
                    " WHERE id = ?",
                    (verdict, status, message, pages, now, now, job.id),
                )
            elif state is JobState.SUBMITTED:
                db.execute("UPDATE jobs SET provider_status = ?, updated_at = ? WHERE id = ?",
                           (status, now, job.id))
        db.execute("UPDATE status_events SET applied_at = ? WHERE id = ?", (now, event_id))


def _contradiction(db: sqlite3.Connection, job_id: int, fax_id: str, status: str,
                   first: str, state: JobState) -> None:
    """The first final status stands (its report may be out already), but a later one that
    says otherwise is worth a person's look: logged, and counted in `meta` for `/metrics`."""
    log.warning("job %s (fax %s): final status %s ignored: it contradicts the first final "
                "status, %s (%s)", job_id, fax_id, status, first, state)
    db.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key)"
               " DO UPDATE SET value = CAST(value AS INTEGER) + 1", (CONTRADICTIONS,))


class JobStore:
    """Mails to fax and their jobs, from `accept` to `reported`."""

    def __init__(self, writer: Writer, reader: Reader) -> None:
        self._writer = writer
        self._reader = reader

    # --- intake and conversion -------------------------------------------------------------

    async def accept(self, msg: NewMessage, recipients: Sequence[tuple[str, str]],
                     now: float, *, hourly: FaxCaps | None = None,
                     options: Sequence[Options] = ()) -> list[int]:
        """Store a mail and one job per (address, number), charged to `msg.account` (or its
        envelope sender), with the `options` its sender chose for each (in the order of
        `recipients`; none: the operator's), `scheduled` for `msg.send_at` when it has one;
        returns the job ids once they are committed (in a group commit).

        With `hourly`, the hourly fax caps are checked again inside the transaction, against
        every job committed before it: a mail that would pass one raises `HourlyCapReached`
        and stores nothing (the check at RCPT saw the store as it was before the other
        sessions' commits)."""
        account = (msg.account or msg.mail_from).lower()

        def work(db: sqlite3.Connection) -> list[int] | HourlyCapReached:
            if hourly is not None:
                over = _over_hourly(db, account, len(recipients), hourly, now)
                if over is not None:  # nothing written: the rest of the group is unharmed
                    return over
            cur = db.execute(
                "INSERT INTO messages (state, mail_from, header_from, subject, message_id, refs,"
                " spool_path, raw, left_out, received_at, needs_office)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (MessageState.RECEIVED, msg.mail_from, msg.header_from, msg.subject,
                 msg.message_id, msg.refs, msg.spool_path, msg.raw,
                 json.dumps(list(msg.left_out)), now, msg.needs_office),
            )
            message_id = cur.lastrowid
            ids = []
            state = JobState.QUEUED if msg.send_at is None else JobState.SCHEDULED
            chosen = options or [Options()] * len(recipients)
            for (address, number), option in zip(recipients, chosen, strict=True):
                cur = db.execute(
                    "INSERT INTO jobs (message, number, recipient, sender, state,"
                    " next_attempt_at, created_at, updated_at, resolution, paper_size, cover,"
                    " send_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (message_id, number, address, account, state,
                     now if msg.send_at is None else msg.send_at, now, now, option.resolution,
                     option.paper_size, option.cover, msg.send_at),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
            return ids

        result = await self._writer.grouped(work)
        if isinstance(result, HourlyCapReached):
            raise result
        return result

    async def to_convert(self, limit: int = 100, *, office: bool = True) -> list[Message]:
        """Mails not yet converted, oldest first, with their raw bytes; without `office`,
        only those that need no LibreOffice."""
        rows = await self._reader.rows(
            f"SELECT {MESSAGES.all_columns} FROM messages WHERE state = ?"
            f"{'' if office else ' AND needs_office = 0'} ORDER BY id LIMIT ?",
            (MessageState.RECEIVED, limit))
        return [MESSAGES.load(r, lazy=True) for r in rows]

    async def waiting_for_office(self) -> int:
        """Mails not yet converted that need LibreOffice."""
        rows = await self._reader.rows(
            "SELECT COUNT(*) FROM messages WHERE state = ? AND needs_office = 1",
            (MessageState.RECEIVED,))
        return int(rows[0][0])

    async def message(self, message_id: int) -> Message | None:
        rows = await self._reader.rows(f"SELECT {MESSAGES.columns} FROM messages WHERE id = ?",
                                       (message_id,))
        return MESSAGES.load(rows[0]) if rows else None

    async def converted(
        self, message_id: int, *, document_path: str, pages: int, cover_html: str | None,
        left_out: Iterable[str], cover_pages: int = 0,
        cover_sent: Mapping[int, bool] | None = None,
    ) -> None:
        """In the group commit: a conversion finishing while mail arrives shares its commit
        instead of holding the next `250` back by a commit of its own. Not durable on its own
        (see `Writer.grouped`): a power cut may undo it, and the mail, still `received`, is
        simply converted again; its fax can only be claimed by a durable commit after this.

        `pages` counts the cover, `cover_pages` of them; `cover_sent` says, by job, whether
        the cover goes with its fax (written first: the usage triggers read it when `pages`
        is set)."""

        def work(db: sqlite3.Connection) -> None:
            state = first(db, "SELECT state FROM messages WHERE id = ?", (message_id,))
            if state is None or state[0] != MessageState.RECEIVED:
                return  # converted already (a second run after a lost commit's power cut)
            db.executemany("UPDATE jobs SET cover_sent = ? WHERE id = ? AND message = ?",
                           [(sent, job_id, message_id)
                            for job_id, sent in (cover_sent or {}).items()])
            db.execute(
                "UPDATE messages SET state = ?, document_path = ?, pages = ?, cover_html = ?,"
                " left_out = ?, cover_pages = ? WHERE id = ? AND state = ?",
                (MessageState.READY, document_path, pages, cover_html,
                 json.dumps(list(left_out)), cover_pages, message_id, MessageState.RECEIVED),
            )

        await self._writer.grouped(work, durable=False)

    async def not_convertible(self, message_id: int, error: str, now: float) -> None:
        """The documents cannot be faxed: every job of the mail fails with the same words."""
        def tx(db: sqlite3.Connection) -> None:
            db.execute("UPDATE messages SET state = ?, error = ? WHERE id = ?",
                       (MessageState.FAILED, error, message_id))
            db.execute(
                "UPDATE jobs SET state = ?, detail = ?, updated_at = ?, finished_at = ?"
                f" WHERE message = ? AND state IN ({WAITING})",
                (JobState.FAILED, error, now, now, message_id, *WAITING_JOB_STATES),
            )

        await self._writer.transaction(tx)

    # --- sending ---------------------------------------------------------------------------

    async def recover(self, now: float) -> list[int]:
        """Jobs caught in `sending` by a crash may or may not have reached the provider: they
        become `unknown`, never sent again on their own."""
        def tx(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ?, detail = ?"
                " WHERE state = ? RETURNING id",
                (JobState.UNKNOWN, now, now, RECOVERED, JobState.SENDING)).fetchall()
            return [int(r[0]) for r in rows]

        return await self._writer.transaction(tx)

    async def claim(self, now: float) -> tuple[Job, Message] | None:
        """Take the next due job whose documents are ready (a scheduled one once its time has
        come); it is `sending` once this returns."""
        def tx(db: sqlite3.Connection) -> tuple[Job, Message] | None:
            row = first(
                db,
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id = (SELECT j.id FROM jobs j JOIN messages m ON m.id = j.message"
                f"   WHERE j.state IN ({WAITING}) AND j.next_attempt_at <= ? AND m.state = ?"
                "   ORDER BY j.next_attempt_at, j.id LIMIT 1)"
                f" RETURNING {JOBS.columns}",
                (JobState.SENDING, now, *WAITING_JOB_STATES, now, MessageState.READY),
            )
            if row is None:
                return None
            job = JOBS.load(row)
            message_row = first(db, f"SELECT {MESSAGES.columns} FROM messages WHERE id = ?",
                                (job.message,))
            assert message_row is not None
            return job, MESSAGES.load(message_row)

        return await self._writer.transaction(tx)

    async def next_due(self, status_timeout: float) -> float | None:
        """When the sender has something to do next: a queued retry or a status deadline."""
        value = await self._reader.value(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(j.next_attempt_at) AS t FROM jobs j JOIN messages m ON m.id = j.message"
            f"  WHERE j.state IN ({WAITING}) AND m.state = ?"
            " UNION ALL SELECT MIN(submitted_at) + ? FROM jobs WHERE state = ?)",
            (*WAITING_JOB_STATES, MessageState.READY, status_timeout, JobState.SUBMITTED))
        return float(value) if value is not None else None

    async def submitted(self, job_id: int, fax_id: str, now: float,
                        classify: Classify) -> JobState:
        """FaxMAX took the fax. Status pushes that raced ahead of this answer apply now;
        returns the job's state after them."""
        def tx(db: sqlite3.Connection) -> JobState:
            db.execute(
                "UPDATE jobs SET state = ?, fax_id = ?, submitted_at = ?, updated_at = ?,"
                " detail = '' WHERE id = ?",
                (JobState.SUBMITTED, fax_id, now, now, job_id),
            )
            _apply_pending(db, fax_id, now, classify)
            row = first(db, "SELECT state FROM jobs WHERE id = ?", (job_id,))
            assert row is not None
            return JobState(row[0])

        return await self._writer.transaction(tx)

    async def retry(self, job_id: int, *, at: float, detail: str, now: float) -> None:
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, detail = ?, updated_at = ?"
            " WHERE id = ?", (JobState.QUEUED, at, detail, now, job_id)))

    async def finish(self, job_id: int, state: JobState, *, detail: str, now: float) -> None:
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE jobs SET state = ?, detail = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            (state, detail, now, now, job_id)))

    async def expire(self, cutoff: float, now: float) -> list[int]:
        """Jobs submitted before `cutoff` with no final status push: nobody knows their fate."""
        def tx(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ?, detail = ?"
                " WHERE state = ? AND submitted_at <= ? RETURNING id",
                (JobState.UNKNOWN, now, now, NO_REPORT, JobState.SUBMITTED, cutoff)).fetchall()
            return [int(r[0]) for r in rows]

        return await self._writer.transaction(tx)

    async def requeue(self, job_id: int, now: float) -> str | None:
        """An operator's explicit resend of an `unknown` or `failed` job: a new round of
        attempts, reported on its own. Returns None when it is queued again, else why it cannot
        be."""
        def tx(db: sqlite3.Connection) -> str | None:
            row = first(
                db, "SELECT j.state, m.state, m.document_path FROM jobs j"
                " JOIN messages m ON m.id = j.message WHERE j.id = ?", (job_id,))
            if row is None:
                return f"there is no job {job_id}"
            job_state, message_state, document = row
            if job_state not in (JobState.UNKNOWN, JobState.FAILED):
                return f"job {job_id} is {job_state}; only unknown or failed jobs are resent"
            if message_state != MessageState.READY:
                return (f"job {job_id} cannot be resent: its attachments could not be turned "
                        "into a fax; the sender has to send a new mail")
            if document is None:
                return (f"job {job_id} cannot be resent: its document was deleted after "
                        "documents.retention_days")
            db.execute(
                "UPDATE jobs SET state = ?, next_attempt_at = ?, updated_at = ?, fax_id = NULL,"
                " attempts = 0, round = round + 1, detail = 'resent by an operator',"
                " finished_at = NULL, reported = '', provider_status = '' WHERE id = ?",
                (JobState.QUEUED, now, now, job_id),
            )
            return None

        return await self._writer.transaction(tx)

    async def cancel(self, job_id: int, now: float) -> str | None:
        """An operator's cancel of a job that is not sent yet (queued or scheduled): it
        becomes `cancelled`, to be reported. Returns None when it is, else why it cannot be.
        The check and the change are one transaction, as the sender's claim is, so that a
        claim at the same moment either comes first (the job is `sending`: refused) or finds
        it cancelled."""
        def tx(db: sqlite3.Connection) -> str | None:
            row = first(db, "SELECT state FROM jobs WHERE id = ?", (job_id,))
            if row is None:
                return f"there is no fax job {job_id}"
            state = JobState(row[0])
            if state not in WAITING_JOB_STATES:
                why = NOT_CANCELLABLE.get(state, "it is finished; only a queued or scheduled "
                                                 "job can be cancelled")
                return f"job {job_id} is {state}: {why}"
            db.execute("UPDATE jobs SET state = ?, detail = ?, updated_at = ?, finished_at = ?"
                       " WHERE id = ?", (JobState.CANCELLED, CANCELLED, now, now, job_id))
            return None

        return await self._writer.transaction(tx)

    # --- reports ---------------------------------------------------------------------------

    async def to_report(self, limit: int = 50) -> list[tuple[Job, Message]]:
        """Final jobs whose current state has not been reported yet (an `unknown` job that a
        late push settles is reported again)."""
        rows = await self._reader.rows(
            f"SELECT {JOBS.prefixed('j')}, {MESSAGES.prefixed('m')} FROM jobs j"
            " JOIN messages m ON m.id = j.message"
            f" WHERE j.state IN ({FINAL}) AND j.reported != j.state ORDER BY j.id LIMIT ?",
            (*FINAL_JOB_STATES, limit))
        return [(JOBS.load(r), MESSAGES.load(r, len(JOBS.eager))) for r in rows]

    async def reported(self, job_id: int, state: JobState, mail: OutgoingMail | None,
                       now: float) -> None:
        """Record that `state` was reported, enqueueing the report in the same transaction."""
        def tx(db: sqlite3.Connection) -> None:
            if mail is not None:
                enqueue(db, mail, now)
            db.execute("UPDATE jobs SET reported = ? WHERE id = ? AND state = ?",
                       (state, job_id, state))

        await self._writer.transaction(tx)

    # --- reading ---------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        rows = await self._reader.rows(f"SELECT {JOBS.columns} FROM jobs WHERE id = ?",
                                       (job_id,))
        return JOBS.load(rows[0]) if rows else None

    async def of_message(self, message_id: int) -> list[Job]:
        rows = await self._reader.rows(
            f"SELECT {JOBS.columns} FROM jobs WHERE message = ? ORDER BY id", (message_id,))
        return [JOBS.load(r) for r in rows]

    async def latest(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = await self._reader.rows(
            f"SELECT {JOBS.columns} FROM jobs {where} ORDER BY id DESC LIMIT ?",
            (*params, limit))
        return [JOBS.load(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        return await self._reader.state_counts("jobs")

    async def status_events(self, fax_id: str) -> list[tuple[float, str, str]]:
        """Every status push for one fax, oldest first: (received at, status, message)."""
        rows = await self._reader.rows(
            "SELECT received_at, status, result_message FROM status_events"
            " WHERE fax_id = ? ORDER BY id", (fax_id,))
        return [(float(r[0]), str(r[1]), str(r[2])) for r in rows]

    # --- usage -----------------------------------------------------------------------------

    async def usage(self, sender: str, *, hour_since: float, day_since: float) -> Usage:
        """What `sender` (an account, `bridge.limits.account`), and the whole gateway, used
        since: faxes since `hour_since`, and pages since `day_since` of faxes that were or will
        be sent (one FaxMAX never accepted costs nothing). Counted per minute, so the oldest
        minute counts whole: a limit may hold a sender back up to a minute longer, never let
        one through early."""
        rows = await self._reader.rows(
            "SELECT COALESCE(SUM(CASE WHEN sender = ?1 AND minute >= ?2 THEN jobs END), 0),"
            " COALESCE(SUM(CASE WHEN sender = ?1 THEN pages END), 0), COALESCE(SUM(pages), 0),"
            " COALESCE(SUM(CASE WHEN minute >= ?2 THEN jobs END), 0)"
            " FROM usage WHERE minute >= ?3",
            (sender.lower(), int(hour_since // 60), int(day_since // 60)))
        faxes, pages, total, all_faxes = rows[0]
        return Usage(faxes_last_hour=int(faxes), sender_pages=int(pages),
                     total_pages=int(total), total_faxes_last_hour=int(all_faxes))

    async def frees_at(self, sender: str | None, counted: Literal["jobs", "pages"], *,
                       now: float, excess: int) -> float | None:
        """When `excess` of `sender`'s (None: the whole gateway's) faxes (`jobs`, counted in
        any hour) or `pages` (in any 24 hours) will have left the window, so that a limit
        they reached lets the next one through (`limits.frees_at`); None when what is stored
        cannot free that much."""
        window = HOUR if counted == "jobs" else DAY
        rows = await self._reader.rows(MINUTES.format(counted=counted),
                                       (int((now - window) // 60), sender))
        return frees_at([(int(m), int(n)) for m, n in rows], excess, window)

    async def forget_usage(self, before: float) -> None:
        """Usage older than every window it is counted in is of no more use."""
        await self._writer.transaction(lambda db: db.execute(
            "DELETE FROM usage WHERE minute < ?", (int(before // 60),)))
