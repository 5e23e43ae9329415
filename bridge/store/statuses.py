"""Status pushes for outgoing faxes (`status_events`) and the attempts they settle
(`fax_attempts`): the store's half of `bridge.dialling`, run inside the transaction that
records a push, the send's answer, or a job turned `unknown`.

A push is matched to its job by fax id, through the attempt that fax id belongs to, so a late
push for an earlier attempt (before a redial, or before an operator's `retry`) updates that
attempt and never the job's current one. A push for a fax id no attempt has is kept pending:
the send's answer may still be on its way (`jobs.submitted` applies it then), or the answer
never came, and the push is matched to an `unknown` job by number and time (`match_unknown`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bridge.store.rows import JOBS, Job, JobState, StatusEvent
from bridge.store.sql import Reader, first

if TYPE_CHECKING:
    from bridge.dialling import StatusRules

log = logging.getLogger(__name__)
CONTRADICTIONS = "faxmax.contradicting_statuses"  # meta key
BY_NUMBER_AND_TIME = "number and time"


def add_status_events(db: sqlite3.Connection, events: Sequence[StatusEvent], now: float,
                      rules: StatusRules) -> int:
    """Store status pushes (replays are no-ops) and apply those whose fax id is known; one
    whose fax id is not may settle an `unknown` job by number and time. Returns how many
    events were new."""
    new = 0
    for event in events:
        cur = db.execute(
            "INSERT INTO status_events (provider, fax_id, status, result_message, pages,"
            " event_key, raw, received_at, number, cli, requested_at, tried)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(event_key) DO NOTHING",
            (event.provider, event.fax_id, event.status, event.result_message,
             event.pages, event.event_key, event.raw, now, event.number,
             event.cli, rules.requested_at(event), event.tried),
        )
        new += cur.rowcount
    strangers = set()
    for fax_id, number in dict.fromkeys((e.fax_id, e.number) for e in events):
        if not apply_pending(db, fax_id, now, rules) and number:
            strangers.add(number)
    for number in sorted(strangers):
        match_unknown(db, number, now, rules)
    return new


def new_attempt(db: sqlite3.Connection, job: int, fax_id: str, at: float,
                matched: str = "") -> None:
    """FaxMAX took a fax for `job`: an attempt of the job's current round."""
    db.execute(
        "INSERT INTO fax_attempts (job, round, fax_id, submitted_at, matched)"
        " SELECT id, round, ?, ?, ? FROM jobs WHERE id = ? ON CONFLICT(fax_id) DO NOTHING",
        (fax_id, at, matched, job))


def apply_pending(db: sqlite3.Connection, fax_id: str, now: float, rules: StatusRules) -> bool:
    """Apply the pending pushes of a fax to its attempt, and to its job when it is the job's
    current attempt. Returns whether the fax id is one of ours."""
    row = first(db, "SELECT job, round, status FROM fax_attempts WHERE fax_id = ?", (fax_id,))
    if row is None:
        return False
    job_id, round_, settled_by = int(row[0]), int(row[1]), str(row[2])
    job_row = first(db, f"SELECT {JOBS.columns} FROM jobs WHERE id = ?", (job_id,))
    assert job_row is not None
    job = JOBS.load(job_row)
    current = job.fax_id == fax_id and job.round == round_
    settled = rules.verdict(settled_by) if settled_by else None
    pending = db.execute(
        "SELECT id, status, result_message, pages, tried FROM status_events"
        " WHERE fax_id = ? AND applied_at IS NULL ORDER BY id", (fax_id,)).fetchall()
    for event_id, status, message, pages, tried in pending:
        db.execute("UPDATE status_events SET applied_at = ? WHERE id = ?", (now, event_id))
        verdict = rules.verdict(status)
        if settled is not None:  # the attempt's first final status stands
            if verdict is not None and verdict != settled:
                _contradiction(db, job.id, fax_id, status, settled_by, settled)
            continue
        db.execute(
            "UPDATE fax_attempts SET status = ?, result_message = ?, pages = COALESCE(?, pages),"
            " tried = COALESCE(?, tried), finished_at = ? WHERE fax_id = ?",
            (status, message, pages, tried, now if verdict else None, fax_id))
        if verdict is not None:
            settled, settled_by = verdict, status
        if not current:
            continue  # news of an earlier attempt: the job has moved on
        if verdict is None:
            if job.state is JobState.SUBMITTED:
                db.execute("UPDATE jobs SET provider_status = ?, updated_at = ? WHERE id = ?",
                           (status, now, job.id))
        elif job.state in (JobState.SUBMITTED, JobState.UNKNOWN):
            _settle(db, job, fax_id, status, message, pages, tried, verdict, now, rules)
    return True


def _settle(db: sqlite3.Connection, job: Job, fax_id: str, status: str, message: str,
            pages: int | None, tried: int | None, verdict: JobState, now: float,
            rules: StatusRules) -> None:
    """A final push for the job's current attempt: the job ends, or is dialled again. Only a
    `submitted` job is: one already reported `unknown` may have been sent again by hand
    after its sender was told, so it ends with the push's words, for a person to decide."""
    dials = job.dials + max(1, tried or 1)
    delay = None
    if verdict is JobState.FAILED and job.state is JobState.SUBMITTED:
        delay = rules.redial_in(status, pages, dials)
    if delay is None:
        db.execute(
            "UPDATE jobs SET state = ?, provider_status = ?, detail = ?, dials = ?,"
            " pages_sent = COALESCE(?, pages_sent), updated_at = ?, finished_at = ?"
            " WHERE id = ?", (verdict, status, message, dials, pages, now, now, job.id))
        return
    at = now + delay
    # A new attempt, with the transient-failure budget of a new one (`attempts`, and
    # `redial_at` as its first time for `faxmax.retry_max_age`), and no fax id until FaxMAX
    # takes it: should its answer be lost, it is matched by number and time as any other.
    db.execute(
        "UPDATE jobs SET state = ?, next_attempt_at = ?, redial_at = ?, attempts = 0,"
        " fax_id = NULL,"
        " dials = ?, provider_status = ?, detail = ?, pages_sent = ?, updated_at = ?"
        " WHERE id = ?",
        (JobState.QUEUED, at, at, dials, status,
         f"{status.lower()} with no page sent; dialled again after {delay:.0f} seconds",
         pages, now, job.id))
    db.execute("UPDATE fax_attempts SET redial_at = ? WHERE fax_id = ?", (at, fax_id))
    log.info("job %s: fax %s ended %s with no page sent; dialling again in %.0fs (dial %d of "
             "at most %d)", job.id, fax_id, status, delay, dials + 1, len(rules.delays) + 1)


def match_unknown(db: sqlite3.Connection, number: str, now: float, rules: StatusRules) -> None:
    """Settle `unknown` jobs to `number` that never learnt their fax id with pushes whose fax
    id is no attempt's, where each is the other's only candidate (`bridge.dialling`)."""
    if rules.window <= 0:
        return
    jobs = db.execute(
        "SELECT id, called_at FROM jobs WHERE number = ? AND state = ? AND fax_id IS NULL"
        " AND called_at IS NOT NULL", (number, JobState.UNKNOWN)).fetchall()
    if not jobs:
        return
    faxes = db.execute(
        "SELECT fax_id, MIN(requested_at) FROM status_events e"
        " WHERE number = ? AND applied_at IS NULL AND requested_at IS NOT NULL"
        "   AND (? = '' OR cli = '' OR cli = ?)"
        "   AND NOT EXISTS (SELECT 1 FROM fax_attempts a WHERE a.fax_id = e.fax_id)"
        " GROUP BY fax_id", (number, rules.cli, rules.cli)).fetchall()

    def near(called: float, requested: float) -> bool:
        return abs(called - requested) <= rules.window

    for fax_id, requested in faxes:
        candidates = [job_id for job_id, called in jobs if near(called, requested)]
        if len(candidates) != 1:
            if candidates:
                log.warning("push for FaxMAX fax %s to %s: %d unknown jobs (%s) were called "
                            "then; none is settled (fax-bridge unmatched)", fax_id, number,
                            len(candidates), ", ".join(map(str, candidates)))
            continue
        job_id = candidates[0]
        called = next(c for j, c in jobs if j == job_id)
        rivals = [f for f, r in faxes if near(called, r)]
        if len(rivals) != 1:
            log.warning("job %s: %d FaxMAX faxes to %s (%s) were requested near its call; it "
                        "stays unknown (fax-bridge unmatched)", job_id, len(rivals), number,
                        ", ".join(rivals))
            continue
        db.execute("UPDATE jobs SET fax_id = ?, matched = ?, submitted_at = ?, updated_at = ?"
                   " WHERE id = ?", (fax_id, BY_NUMBER_AND_TIME, called, now, job_id))
        new_attempt(db, job_id, fax_id, called, BY_NUMBER_AND_TIME)
        log.warning("job %s: its outcome was unknown; FaxMAX fax %s to %s, requested %.0fs "
                    "from its call, is its fax (matched by number and time)", job_id, fax_id,
                    number, requested - called)
        apply_pending(db, fax_id, now, rules)
        jobs = [(j, c) for j, c in jobs if j != job_id]


def _contradiction(db: sqlite3.Connection, job_id: int, fax_id: str, status: str,
                   first_status: str, state: JobState) -> None:
    """The first final status stands (its report may be out already), but a later one that
    says otherwise is worth a person's look: logged, and counted in `meta` for `/metrics`."""
    log.warning("job %s (fax %s): final status %s ignored: it contradicts the first final "
                "status, %s (%s)", job_id, fax_id, status, first_status, state)
    db.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key)"
               " DO UPDATE SET value = CAST(value AS INTEGER) + 1", (CONTRADICTIONS,))



async def remote_station(reader: Reader, fax_id: str) -> str:
    """The remote station id (the receiving machine's CSI) that the latest push for `fax_id`
    gave, kept only in the push as it came (`raw`); "" when none did. A push that is not JSON
    (kept for the record all the same) is passed over."""
    rows = await reader.rows(
        "SELECT station FROM (SELECT id, CASE WHEN json_valid(raw) THEN"
        " json_extract(raw, '$.remote_station_id') END AS station FROM status_events"
        " WHERE fax_id = ?) WHERE station IS NOT NULL AND station != '' ORDER BY id DESC"
        " LIMIT 1", (fax_id,))
    return str(rows[0][0]) if rows else ""
