"""Outgoing faxes: the mails received for faxing (`messages`), one job per number (`jobs`),
the status pushes that settle them (`status_events`), and what each sender used (`usage`).

A job claimed for sending is `sending` on disk *before* the provider is called, so a crash in
the send window is visible afterwards and becomes `unknown`, never a silent resend.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bridge.limits import DAY, HOUR, Cap, FaxCaps, HourlyCapReached, frees_at
from bridge.options import Options
from bridge.store.outbox import enqueue
from bridge.store.rows import (
    ATTEMPTS,
    FINAL_JOB_STATES,
    JOBS,
    MESSAGES,
    WAITING_JOB_STATES,
    Attempt,
    Job,
    JobState,
    Message,
    MessageState,
    NewMessage,
    OutgoingMail,
    Unmatched,
    Usage,
)
from bridge.store.sql import Reader, first
from bridge.store.statuses import apply_pending, match_unknown, new_attempt
from bridge.store.writer import Writer

if TYPE_CHECKING:
    from bridge.dialling import StatusRules

log = logging.getLogger(__name__)

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
@dataclass(frozen=True)
class Lines:
    """How many faxes to one number may be in flight (`sending`, or `submitted` and not yet
    final), and how long a submitted one holds its line while its final status does not come
    (`faxmax.per_number_concurrency`, `faxmax.line_hold`): a push that was lost must not keep
    a number's other faxes waiting for `faxmax.status_timeout`, a day."""

    per_number: int = 1
    hold: float = 1800.0

    def taken(self, now: float) -> tuple[str, tuple[object, ...]]:
        """SQL for the numbers with no free line at `now`, and its parameters; `jobs_number`
        finds their faxes in flight."""
        return ("SELECT number FROM jobs WHERE state = ? OR (state = ? AND submitted_at > ?)"
                " GROUP BY number HAVING COUNT(*) >= ?",
                (JobState.SENDING, JobState.SUBMITTED, now - self.hold, self.per_number))


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

    async def recover(self, now: float, rules: StatusRules) -> list[int]:
        """Jobs caught in `sending` by a crash may or may not have reached the provider: they
        become `unknown`, never sent again on their own. A push already kept for their fax
        may settle them (`statuses.match_unknown`)."""
        def tx(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ?, detail = ?"
                " WHERE state = ? RETURNING id, number",
                (JobState.UNKNOWN, now, now, RECOVERED, JobState.SENDING)).fetchall()
            for number in sorted({str(r[1]) for r in rows}):
                match_unknown(db, number, now, rules)
            return [int(r[0]) for r in rows]

        return await self._writer.transaction(tx)

    async def claim(self, now: float, lines: Lines = Lines()) -> tuple[Job, Message] | None:
        """Take the next due job whose documents are ready (a scheduled one once its time has
        come) and whose number has a free line (`Lines`); it is `sending` once this returns.
        One transaction, so two claims cannot both take a number's last line."""
        taken, taken_params = lines.taken(now)

        def tx(db: sqlite3.Connection) -> tuple[Job, Message] | None:
            row = first(
                db,
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ?,"
                " called_at = ?"
                " WHERE id = (SELECT j.id FROM jobs j JOIN messages m ON m.id = j.message"
                f"   WHERE j.state IN ({WAITING}) AND j.next_attempt_at <= ? AND m.state = ?"
                f"   AND j.number NOT IN ({taken})"
                "   ORDER BY j.next_attempt_at, j.id LIMIT 1)"
                f" RETURNING {JOBS.columns}",
                (JobState.SENDING, now, now, *WAITING_JOB_STATES, now, MessageState.READY,
                 *taken_params),
            )
            if row is None:
                return None
            job = JOBS.load(row)
            message_row = first(db, f"SELECT {MESSAGES.columns} FROM messages WHERE id = ?",
                                (job.message,))
            assert message_row is not None
            return job, MESSAGES.load(message_row)

        return await self._writer.transaction(tx)

    async def next_due(self, status_timeout: float, now: float,
                       lines: Lines = Lines()) -> float | None:
        """When the sender has something to do next: a queued retry, a status deadline, or
        the end of a line's hold that a waiting job needs. A job whose number has no free line
        is not due: the push that frees it wakes the sender."""
        taken, taken_params = lines.taken(now)
        value = await self._reader.value(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(j.next_attempt_at) AS t FROM jobs j JOIN messages m ON m.id = j.message"
            f"  WHERE j.state IN ({WAITING}) AND m.state = ? AND j.number NOT IN ({taken})"
            " UNION ALL SELECT MIN(submitted_at) + ? FROM jobs WHERE state = ?"
            " UNION ALL SELECT MIN(s.submitted_at) + ? FROM jobs s WHERE s.state = ?"
            "  AND s.submitted_at > ? AND s.number IN"
            f"   (SELECT w.number FROM jobs w WHERE w.state IN ({WAITING})))",
            (*WAITING_JOB_STATES, MessageState.READY, *taken_params, status_timeout,
             JobState.SUBMITTED, lines.hold, JobState.SUBMITTED, now - lines.hold,
             *WAITING_JOB_STATES))
        return float(value) if value is not None else None

    async def submitted(self, job_id: int, fax_id: str, now: float,
                        rules: StatusRules) -> JobState:
        """FaxMAX took the fax: a new attempt of the job. Status pushes that raced ahead of
        this answer apply now; returns the job's state after them (`queued` again when they
        said the line was busy)."""
        def tx(db: sqlite3.Connection) -> JobState:
            db.execute(
                "UPDATE jobs SET state = ?, fax_id = ?, submitted_at = ?, updated_at = ?,"
                " detail = '', matched = '' WHERE id = ?",
                (JobState.SUBMITTED, fax_id, now, now, job_id),
            )
            new_attempt(db, job_id, fax_id, now)
            apply_pending(db, fax_id, now, rules)
            row = first(db, "SELECT state FROM jobs WHERE id = ?", (job_id,))
            assert row is not None
            return JobState(row[0])

        return await self._writer.transaction(tx)

    async def retry(self, job_id: int, *, at: float, detail: str, now: float) -> None:
        await self._writer.transaction(lambda db: db.execute(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, detail = ?, updated_at = ?"
            " WHERE id = ?", (JobState.QUEUED, at, detail, now, job_id)))

    async def finish(self, job_id: int, state: JobState, *, detail: str, now: float,
                     rules: StatusRules | None = None) -> None:
        """End a job. One made `unknown` because the send's answer never came may be settled
        at once, with `rules`, by a push for its fax already kept (`statuses.match_unknown`)."""
        def tx(db: sqlite3.Connection) -> None:
            row = first(db, "UPDATE jobs SET state = ?, detail = ?, updated_at = ?,"
                            " finished_at = ? WHERE id = ? RETURNING number, fax_id",
                        (state, detail, now, now, job_id))
            if rules is not None and state is JobState.UNKNOWN and row and row[1] is None:
                match_unknown(db, str(row[0]), now, rules)

        await self._writer.transaction(tx)

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
                " finished_at = NULL, reported = '', provider_status = '', dials = 0,"
                " redial_at = NULL, matched = '', pages_sent = NULL WHERE id = ?",
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

    async def attempts(self, job: Job) -> list[Attempt]:
        """The attempts of the job's current round, oldest first: each fax FaxMAX took."""
        rows = await self._reader.rows(
            f"SELECT {ATTEMPTS.columns} FROM fax_attempts WHERE job = ? AND round = ?"
            " ORDER BY submitted_at, rowid", (job.id, job.round))
        return [ATTEMPTS.load(r) for r in rows]

    async def unmatched(self, window: float) -> list[Unmatched]:
        """Status pushes whose fax id no attempt has, newest first, each with the `unknown`
        jobs without a fax id to its number called within `window` of it: none, or more than
        one, and nothing was settled (`statuses.match_unknown`)."""
        rows = await self._reader.rows(
            "WITH u AS (SELECT fax_id, number, MIN(requested_at) AS t, MAX(received_at) AS r,"
            "   GROUP_CONCAT(status, ' > ') AS s FROM status_events e WHERE applied_at IS NULL"
            "   AND NOT EXISTS (SELECT 1 FROM fax_attempts a WHERE a.fax_id = e.fax_id)"
            "   GROUP BY fax_id)"
            " SELECT fax_id, number, t, r, s, (SELECT GROUP_CONCAT(j.id) FROM jobs j"
            "   WHERE j.number = u.number AND j.state = ? AND j.fax_id IS NULL"
            "   AND ABS(j.called_at - u.t) <= ?) FROM u ORDER BY r DESC LIMIT 200",
            (JobState.UNKNOWN, window))
        return [Unmatched(fax_id=str(r[0]), number=str(r[1]),
                          requested_at=None if r[2] is None else float(r[2]),
                          received_at=float(r[3]), statuses=str(r[4]),
                          candidates=tuple(int(x) for x in str(r[5] or "").split(",") if x))
                for r in rows]

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
