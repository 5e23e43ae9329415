"""The only module that speaks SQL: one SQLite file in WAL mode holds every queue and every fact.

Rules this module enforces for the rest of the program:
- a caller is acknowledged (SMTP 250, webhook 2xx) only after the transaction that stored its data
  has committed with `synchronous=FULL`; only work that can be done again after a power cut (a
  conversion) commits without waiting for the disk, and whatever is built on it (the claim of
  its fax for sending) is again committed with `synchronous=FULL`, which makes it durable too;
- every side effect (a fax to send, an email to deliver) is a row with a state, an attempt count and
  a next-attempt time, so a restart resumes exactly where the last run stopped;
- de-duplication happens at the database (`UNIQUE` + `ON CONFLICT DO NOTHING`), never by
  SELECT-then-INSERT;
- a fax job claimed for sending is `sending` on disk *before* the provider is called, so a crash
  in the send window is visible afterwards and becomes `unknown`, never a silent resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bridge.errors import BridgeError

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL or ENOSPC: the caller should say "try again later", not "error"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


class JobState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"


FINAL_JOB_STATES = (JobState.DELIVERED, JobState.FAILED, JobState.UNKNOWN)


class MessageState(StrEnum):
    RECEIVED = "received"  # stored, documents not yet converted
    READY = "ready"  # converted into one PDF; its jobs may be sent
    FAILED = "failed"  # its documents could not be converted


class InboundState(StrEnum):
    FETCHING = "fetching"  # known from a provider's log; its document is still to be fetched
    RECEIVED = "received"  # its document is stored; to be converted and mailed
    MAILED = "mailed"  # its email is in the outbox
    FAILED = "failed"  # could not be fetched or mailed; a person was told
    SKIPPED = "skipped"  # already in the provider's log at the first start (initial_sync)


class MailState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


SCHEMA: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        header_from TEXT NOT NULL,
        subject TEXT NOT NULL,
        message_id TEXT NOT NULL,
        refs TEXT NOT NULL,
        spool_path TEXT NOT NULL,
        document_path TEXT,
        cover_html TEXT,
        pages INTEGER,
        left_out TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        received_at REAL NOT NULL
    );
    CREATE INDEX messages_state ON messages(state);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        message INTEGER NOT NULL REFERENCES messages(id),
        number TEXT NOT NULL,
        recipient TEXT NOT NULL,
        sender TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        fax_id TEXT UNIQUE,
        provider_status TEXT NOT NULL DEFAULT '',
        pages_sent INTEGER,
        detail TEXT NOT NULL DEFAULT '',
        submitted_at REAL,
        finished_at REAL,
        reported TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_due ON jobs(state, next_attempt_at);
    CREATE INDEX jobs_sender ON jobs(sender, created_at);
    CREATE TABLE status_events (
        id INTEGER PRIMARY KEY,
        provider TEXT NOT NULL,
        fax_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result_message TEXT NOT NULL,
        pages INTEGER,
        event_key TEXT NOT NULL UNIQUE,
        raw TEXT NOT NULL,
        received_at REAL NOT NULL,
        applied_at REAL
    );
    CREATE INDEX status_events_fax ON status_events(fax_id, applied_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        body BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        reason TEXT NOT NULL,
        body BLOB NOT NULL,
        received_at REAL NOT NULL,
        replayed_at REAL
    );
    """,
    # version 2: received faxes, provider bookkeeping, alert throttling
    """
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY,
        provider TEXT NOT NULL,
        external_id TEXT NOT NULL,
        state TEXT NOT NULL,
        receiving_number TEXT NOT NULL,
        sender_number TEXT NOT NULL,
        remote_station TEXT NOT NULL DEFAULT '',
        pages INTEGER,
        received_at REAL NOT NULL,
        document_path TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (provider, external_id)
    );
    CREATE INDEX inbound_due ON inbound(state, next_attempt_at);
    CREATE INDEX jobs_created ON jobs(created_at);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE alerts (
        cause TEXT PRIMARY KEY,
        last_sent_at REAL NOT NULL,
        suppressed INTEGER NOT NULL DEFAULT 0,
        sent INTEGER NOT NULL DEFAULT 0
    );
    """,
    # version 3: an email being delivered is leased, apart from its retry time, so that a
    # start (when nothing can be in flight) hands it out again at once
    """
    ALTER TABLE outbox ADD COLUMN leased_until REAL;
    """,
    # version 4: small mails and pushed fax images are kept in the row that records them, so
    # that they are durable with that row's commit instead of with two more fsyncs of their own
    """
    ALTER TABLE messages ADD COLUMN raw BLOB;
    ALTER TABLE inbound ADD COLUMN document BLOB;
    """,
    # version 5: what each sender was charged, per minute the faxes were created in (the
    # whole gateway's is the sum over senders). The hourly fax limit and the daily page caps
    # are checked on every RCPT: summed from the jobs themselves they cost a scan of the day's
    # jobs (9 ms with 5 000 of them); from here, a day of minutes at most. The triggers keep
    # it right whoever writes the jobs (the service, or `fax-bridge requeue`): a fax is charged
    # its pages once they are known, and nothing if FaxMAX never accepted it.
    """
    CREATE TABLE usage (
        sender TEXT NOT NULL,
        minute INTEGER NOT NULL,
        jobs INTEGER NOT NULL DEFAULT 0,
        pages INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (sender, minute)
    ) WITHOUT ROWID;
    CREATE TRIGGER usage_job_created AFTER INSERT ON jobs BEGIN
        INSERT INTO usage (sender, minute, jobs, pages)
            VALUES (NEW.sender, CAST(NEW.created_at / 60 AS INTEGER), 1,
                    CASE WHEN NEW.state = 'failed' AND NEW.fax_id IS NULL THEN 0
                         ELSE COALESCE((SELECT pages FROM messages WHERE id = NEW.message), 0)
                    END)
            ON CONFLICT (sender, minute) DO UPDATE
            SET jobs = jobs + 1, pages = pages + excluded.pages;
    END;
    CREATE TRIGGER usage_job_charged AFTER UPDATE OF state, fax_id ON jobs
    WHEN (OLD.state = 'failed' AND OLD.fax_id IS NULL) != (NEW.state = 'failed' AND
                                                          NEW.fax_id IS NULL)
    BEGIN
        INSERT INTO usage (sender, minute, pages)
            VALUES (NEW.sender, CAST(NEW.created_at / 60 AS INTEGER),
                    CASE WHEN NEW.state = 'failed' AND NEW.fax_id IS NULL THEN -1 ELSE 1 END
                    * COALESCE((SELECT pages FROM messages WHERE id = NEW.message), 0))
            ON CONFLICT (sender, minute) DO UPDATE SET pages = pages + excluded.pages;
    END;
    CREATE TRIGGER usage_pages_known AFTER UPDATE OF pages ON messages
    WHEN COALESCE(OLD.pages, 0) != COALESCE(NEW.pages, 0)
    BEGIN
        INSERT INTO usage (sender, minute, pages)
            SELECT sender, CAST(created_at / 60 AS INTEGER),
                   COALESCE(NEW.pages, 0) - COALESCE(OLD.pages, 0)
            FROM jobs WHERE message = NEW.id AND NOT (state = 'failed' AND fax_id IS NULL)
            ON CONFLICT (sender, minute) DO UPDATE SET pages = pages + excluded.pages;
    END;
    INSERT INTO usage (sender, minute, jobs, pages)
        SELECT j.sender, CAST(j.created_at / 60 AS INTEGER), COUNT(*),
               SUM(CASE WHEN j.state = 'failed' AND j.fax_id IS NULL THEN 0
                        ELSE COALESCE(m.pages, 0) END)
        FROM jobs j JOIN messages m ON m.id = j.message
        GROUP BY 1, 2;
    """,
    # version 6: a mail's jobs found by index. Every conversion looks them up (for the daily
    # page caps, and in `usage_pages_known` while it holds the write lock), and the jobs of every
    # mail ever received stay: scanned, each conversion cost 13 ms with 100 000 of them
    # against 1 ms with 1 000, and its page cache grew with the table.
    """
    CREATE INDEX jobs_message ON jobs(message);
    """,
)


def _statements(script: str) -> Iterator[str]:
    """The statements of a schema script, one by one (executescript would commit the
    migration's transaction half-way); a trigger's body holds semicolons of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


@dataclass(frozen=True)
class NewMessage:
    """What the SMTP ingress learnt about a mail before answering 250."""

    mail_from: str
    header_from: str
    subject: str
    message_id: str
    refs: str
    spool_path: str  # a large mail's file, or "" when `raw` holds the mail
    left_out: tuple[str, ...] = ()
    raw: bytes | None = None


@dataclass(frozen=True)
class Message:
    id: int
    state: MessageState
    mail_from: str
    header_from: str
    subject: str
    message_id: str
    refs: str
    spool_path: str
    document_path: str | None
    cover_html: str | None
    pages: int | None
    left_out: tuple[str, ...]
    error: str | None
    received_at: float
    raw: bytes | None = None  # loaded only for the mail being converted


@dataclass(frozen=True)
class Job:
    id: int
    message: int
    number: str
    recipient: str
    sender: str
    state: JobState
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    fax_id: str | None
    provider_status: str
    pages_sent: int | None
    detail: str
    submitted_at: float | None
    finished_at: float | None
    reported: str


@dataclass(frozen=True)
class StatusEvent:
    """One delivery-status push for an outgoing fax, as the provider reported it."""

    provider: str
    fax_id: str
    status: str
    result_message: str
    pages: int | None
    event_key: str
    raw: str


@dataclass(frozen=True)
class OutgoingMail:
    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class QueuedMail:
    id: int
    message_id: str
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Usage:
    """See `Store.usage`."""

    faxes_last_hour: int  # the sender's
    sender_pages: int  # the sender's, in the day
    total_pages: int  # the whole gateway's, in the day


@dataclass(frozen=True)
class Purged:
    """What one retention pass cleared: fax images of outgoing mails and received faxes, and
    bodies of delivered emails and replayed quarantine entries."""

    messages: int
    inbound: int
    emails: int
    quarantined: int


@dataclass(frozen=True)
class MailInfo:
    """An outbox row without its body, for listings."""

    id: int
    message_id: str
    recipients: tuple[str, ...]
    state: MailState
    attempts: int
    created_at: float
    updated_at: float
    last_error: str


@dataclass(frozen=True)
class Snapshot:
    """What the database says about the service at one moment: for `/metrics` and `status`."""

    jobs: dict[str, int]
    received: dict[tuple[str, str], int]  # (provider, state) -> count
    emails: dict[str, int]
    queues: dict[str, tuple[int, float]]  # queue -> (depth, age of the oldest item in seconds)
    quarantined: int
    log_gaps: int
    last_poll: float  # 0: never
    last_push: float  # 0: never


# Each queue: what waits in it and since when; the age of the oldest item tells an operator
# which stage is stuck.
QUEUES = {
    "convert": "SELECT COUNT(*), MIN(received_at) FROM messages WHERE state = 'received'",
    "send": "SELECT COUNT(*), MIN(created_at) FROM jobs WHERE state IN ('queued', 'sending')",
    "status": "SELECT COUNT(*), MIN(submitted_at) FROM jobs WHERE state = 'submitted'",
    "report": "SELECT COUNT(*), MIN(COALESCE(finished_at, updated_at)) FROM jobs"
              " WHERE state IN ('delivered', 'failed', 'unknown') AND reported != state",
    "inbound": "SELECT COUNT(*), MIN(created_at) FROM inbound"
               " WHERE state IN ('fetching', 'received')",
    "email": "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'",
}
PROVIDERS = ("faxmax", "byosoku")


@dataclass(frozen=True)
class NewInbound:
    """A received fax as a provider reported it."""

    provider: str
    external_id: str
    receiving_number: str
    sender_number: str
    received_at: float
    pages: int | None = None
    remote_station: str = ""
    document_path: str | None = None  # a fetched document, on disk
    document: bytes | None = None  # a pushed one, kept in the row


@dataclass(frozen=True)
class Inbound:
    id: int
    provider: str
    external_id: str
    state: InboundState
    receiving_number: str
    sender_number: str
    remote_station: str
    pages: int | None
    received_at: float
    document_path: str | None
    attempts: int
    next_attempt_at: float
    detail: str
    created_at: float
    updated_at: float
    document: bytes | None = None  # loaded only for the fax being mailed


@dataclass(frozen=True)
class Quarantined:
    id: int
    source: str
    reason: str
    body: bytes
    received_at: float
    replayed_at: float | None


MESSAGE_LISTED = ", ".join(f.name for f in fields(Message) if f.name != "raw")
INBOUND_LISTED = ", ".join(f.name for f in fields(Inbound) if f.name != "document")


def _inbound(row: sqlite3.Row) -> Inbound:
    values = dict(row)
    values["state"] = InboundState(values["state"])
    return Inbound(**values)


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["state"] = JobState(values["state"])
    return Job(**values)


def _message(row: sqlite3.Row) -> Message:
    values = dict(row)
    values["state"] = MessageState(values["state"])
    values["left_out"] = tuple(json.loads(values["left_out"]))
    return Message(**values)



def _first(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    """The first row a statement gives; the statement is finished before the transaction
    goes on (closing the cursor resets it)."""
    with contextlib.closing(db.execute(sql, params)) as cursor:
        row: sqlite3.Row | None = cursor.fetchone()
    return row


def _connect_writer(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def _rollback(db: sqlite3.Connection) -> None:
    # OperationalError: a failed COMMIT that SQLite already rolled back itself
    with contextlib.suppress(sqlite3.OperationalError):
        if db.in_transaction:
            db.execute("ROLLBACK")


def _set_meta(db: sqlite3.Connection, values: dict[str, str]) -> None:
    for key, value in values.items():
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                   " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def _migrate(db: sqlite3.Connection) -> None:
    row = _first(db, "PRAGMA user_version")
    version = int(row[0]) if row else 0
    if version > len(SCHEMA):
        raise BridgeError(
            f"this database was written by a newer fax-bridge (schema {version}; this "
            f"version knows up to {len(SCHEMA)}): run the newer version, or restore a "
            "backup taken before the upgrade")
    for number, script in enumerate(SCHEMA[version:], start=version + 1):
        for statement in _statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")


def _installation(db: sqlite3.Connection) -> str:
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('installation', ?)",
               (secrets.token_hex(6),))
    row = _first(db, "SELECT value FROM meta WHERE key = 'installation'")
    return str(row[0]) if row else ""


async def _close_writer(writer: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
    await asyncio.get_running_loop().run_in_executor(writer, db.close)
    writer.shutdown(wait=False)


def _add_status_events(db: sqlite3.Connection, events: Sequence[StatusEvent], now: float,
                       classify: Callable[[str], JobState | None]) -> int:
    """Store status pushes (replays are no-ops) and apply those whose fax id is known.

    Returns how many events were new. A push for a fax id we have not recorded yet (its
    send response is still on the way) stays pending and is applied by `record_submitted`.
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


def _apply_pending(db: sqlite3.Connection, fax_id: str, now: float,
                   classify: Callable[[str], JobState | None]) -> None:
    row = _first(db, "SELECT * FROM jobs WHERE fax_id = ?", (fax_id,))
    if row is None:
        return
    job = _job(row)
    pending = db.execute(
        "SELECT id, status, result_message, pages FROM status_events"
        " WHERE fax_id = ? AND applied_at IS NULL ORDER BY id", (fax_id,)).fetchall()
    state = job.state
    for event_id, status, message, pages in pending:
        verdict = classify(status)
        if state in (JobState.SUBMITTED, JobState.UNKNOWN):
            if verdict is not None:
                state = verdict
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


def _enqueue(db: sqlite3.Connection, mail: OutgoingMail, now: float) -> bool:
    """The Message-ID is the key: enqueueing the same email twice is a no-op."""
    cur = db.execute(
        "INSERT INTO outbox (message_id, mail_from, recipients, body, state, next_attempt_at,"
        " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)"
        " ON CONFLICT(message_id) DO NOTHING",
        (mail.message_id, mail.mail_from, json.dumps(list(mail.recipients)), mail.body,
         MailState.PENDING, now, now, now),
    )
    return cur.rowcount == 1


def _quarantine(db: sqlite3.Connection, source: str, reason: str, body: bytes,
                now: float) -> int:
    cur = db.execute("INSERT INTO quarantine (source, reason, body, received_at)"
                     " VALUES (?,?,?,?)", (source, reason, body, now))
    assert cur.lastrowid is not None
    return cur.lastrowid


def _add_inbound(db: sqlite3.Connection, faxes: Sequence[NewInbound], state: InboundState,
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


@dataclass
class _GroupOutcome:
    values: list[Any]
    failed: int | None = None  # the index of the work that raised, after the others ran
    error: Exception | None = None


def _group_transaction(works: list[Work], durable: bool, meta: dict[str, str],
                       db: sqlite3.Connection) -> _GroupOutcome:
    """The works of a group one after another in one transaction, without savepoints. When
    one fails, the transaction is rolled back and the outcome says which (see
    `Store._commit_group`). Only work that can be done again after a power cut commits
    with `synchronous=NORMAL`. BEGIN IMMEDIATE takes the write lock up front, so a second
    process (the CLI) waits instead of failing half-way."""
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
                    _rollback(db)
                    return _GroupOutcome(values, index, exc)
            _set_meta(db, meta)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
    finally:
        if not durable:
            db.execute("PRAGMA synchronous=FULL")
    return _GroupOutcome(values)


def _transaction(fn: Callable[[sqlite3.Connection], T], db: sqlite3.Connection) -> T:
    """`fn(db)` alone in a transaction: a group of one, its error raised."""
    outcome = _group_transaction([fn], True, {}, db)
    if outcome.error is not None:
        raise outcome.error
    result: T = outcome.values[0]
    return result


class Store:
    """An open database. Every write is one transaction at a time on one connection, on a
    thread of its own (the writer); reads go to a second connection.

    A transaction is one trip to the writer's thread and back, whatever it holds: its
    statements run there one after another (`_tx(fn)`: `fn` is a plain function of the
    connection). With a trip per statement (aiosqlite's way, which the reads still take), a
    push's transaction was four trips, each two thread switches and a wake-up of the event
    loop; under a burst of pushes every one of them also waited for the loop to finish
    parsing other pushes, and the writer stood idle in between: groups of 19 pushes alternated
    with groups of one, each taking 5-12 ms. Reads fetch their rows in the same trip
    (`execute_fetchall`), never by a cursor's execute, fetch and close (three)."""

    def __init__(self, writer: ThreadPoolExecutor, db: sqlite3.Connection,
                 reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._db = db
        # Reads go through a second connection, so that the checks at RCPT time and the
        # workers' look-ups never wait behind a write transaction (WAL lets both run at once);
        # what they read is always committed.
        self._reader = reader
        self._waiting: list[tuple[Work, asyncio.Future[Any], bool]] = []
        # Bookkeeping that only its latest value matters for (the time of the last push),
        # written once by the next group commit instead of once by every work in the group.
        self._group_meta: dict[str, str] = {}
        self._flusher: asyncio.Task[None] | None = None
        # Random, made once per database: in Message-IDs, so that the emails of a reinstalled
        # bridge (job numbers start again at 1) or of a second one never repeat an earlier id,
        # which mail stores that drop duplicates by Message-ID would hide.
        self.installation = ""

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        try:
            db = await asyncio.get_running_loop().run_in_executor(writer, _connect_writer, path)
        except BaseException:
            writer.shutdown(wait=False)
            raise
        try:
            reader = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            await _close_writer(writer, db)
            raise
        store = cls(writer, db, reader)
        try:
            await store._tx(_migrate)
            store.installation = await store._tx(_installation)
            reader.row_factory = sqlite3.Row
            await reader.execute("PRAGMA query_only=ON")
            await reader.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._flusher is not None:  # groups already handed over are finished first
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._reader.close()
        await _close_writer(self._writer, self._db)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` on the writer's thread, after whatever was handed there before it. A caller
        cancelled before it starts leaves it undone; once started, it runs to its end."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, self._db)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One write transaction: `fn(db)`, committed, in one trip to the writer."""
        return await self._run(partial(_transaction, fn))

    async def _grouped(self, work: Callable[[sqlite3.Connection], T], *,
                       durable: bool = True) -> T:
        """Run `work` in a transaction shared with whatever else is waiting to be written, and
        return once that transaction is committed: a group commit. Twenty SMTP sessions or
        pushes arriving together cost one fsync instead of twenty, and each is still answered
        only after its own data is durable. One that fails is rolled back alone and its error
        goes to its caller only (see `_commit_group`).

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
        worker's own transaction (`_tx`), handed to the writer meanwhile, has its turn between
        two groups during a long burst of mails or pushes."""
        while self._waiting:
            group, self._waiting = self._waiting, []
            # A caller that stopped waiting before its work began is not written: nobody
            # would be told, and the sender would send it again.
            group = [item for item in group if not item[1].done()]
            if group:
                with contextlib.suppress(Exception):  # its callers have the error
                    await self._commit_group(group)

    async def _commit_group(self, group: list[tuple[Work, asyncio.Future[Any], bool]]) -> None:
        """The works in one transaction (`_group_transaction`). When a work fails, its caller
        gets the error, and the others run again in a transaction of their own: a failure
        costs its group a second try, never another work's data."""
        meta = dict(self._group_meta)
        try:
            outcome = await self._run(partial(
                _group_transaction, [item[0] for item in group], any(item[2] for item in group),
                meta))
        except BaseException as exc:  # rolled back, or cut off by shutdown: none acknowledged
            for _, future, _ in group:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else BridgeError(
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

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    # --- outbound: messages and jobs -------------------------------------------------------

    async def accept_message(
        self, msg: NewMessage, recipients: Sequence[tuple[str, str]], now: float
    ) -> list[int]:
        """Store a mail and one job per (address, number); returns the job ids once they are
        committed (in a group commit)."""

        def work(db: sqlite3.Connection) -> list[int]:
            cur = db.execute(
                "INSERT INTO messages (state, mail_from, header_from, subject, message_id, refs,"
                " spool_path, raw, left_out, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (MessageState.RECEIVED, msg.mail_from, msg.header_from, msg.subject,
                 msg.message_id, msg.refs, msg.spool_path, msg.raw,
                 json.dumps(list(msg.left_out)), now),
            )
            message_id = cur.lastrowid
            ids = []
            for address, number in recipients:
                cur = db.execute(
                    "INSERT INTO jobs (message, number, recipient, sender, state,"
                    " next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                    (message_id, number, address, msg.mail_from.lower(), JobState.QUEUED,
                     now, now, now),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
            return ids

        return await self._grouped(work)

    async def jobs_of_message(self, message_id: int) -> list[Job]:
        rows = await self._all("SELECT * FROM jobs WHERE message = ? ORDER BY id", (message_id,))
        return [_job(r) for r in rows]

    async def messages_to_convert(self, limit: int = 100) -> list[Message]:
        rows = await self._all("SELECT * FROM messages WHERE state = ? ORDER BY id LIMIT ?",
                               (MessageState.RECEIVED, limit))
        return [_message(r) for r in rows]

    async def message(self, message_id: int) -> Message | None:
        rows = await self._all(f"SELECT {MESSAGE_LISTED} FROM messages WHERE id = ?",
                               (message_id,))
        return _message(rows[0]) if rows else None

    async def mark_message_ready(
        self, message_id: int, *, document_path: str, pages: int, cover_html: str | None,
        left_out: Iterable[str],
    ) -> None:
        """In the group commit: a conversion finishing while mail arrives shares its commit
        instead of holding the next `250` back by a commit of its own. Not durable on its own
        (see `_grouped`): a power cut may undo it, and the mail, still `received`, is simply
        converted again; its fax can only be claimed by a durable commit after this one."""

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE messages SET state = ?, document_path = ?, pages = ?, cover_html = ?,"
                " left_out = ? WHERE id = ? AND state = ?",
                (MessageState.READY, document_path, pages, cover_html,
                 json.dumps(list(left_out)), message_id, MessageState.RECEIVED),
            )

        await self._grouped(work, durable=False)

    async def fail_message(self, message_id: int, error: str, now: float) -> None:
        """The documents cannot be faxed: every job of the mail fails with the same words."""
        def tx(db: sqlite3.Connection) -> None:
            db.execute("UPDATE messages SET state = ?, error = ? WHERE id = ?",
                       (MessageState.FAILED, error, message_id))
            db.execute(
                "UPDATE jobs SET state = ?, detail = ?, updated_at = ?, finished_at = ?"
                " WHERE message = ? AND state = ?",
                (JobState.FAILED, error, now, now, message_id, JobState.QUEUED),
            )

        await self._tx(tx)

    async def recover_after_crash(self, now: float) -> list[int]:
        """Jobs caught in `sending` by a crash may or may not have reached the provider; an
        email caught mid-delivery is due again now (it may arrive twice, same Message-ID)."""
        def tx(db: sqlite3.Connection) -> list[int]:
            db.execute("UPDATE outbox SET leased_until = NULL WHERE leased_until IS NOT NULL")
            rows = db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ?, detail = ?"
                " WHERE state = ? RETURNING id",
                (JobState.UNKNOWN, now, now,
                 "fax-bridge stopped while this fax was being handed to FaxMAX, so it cannot "
                 "tell whether FaxMAX received it; it was not sent again",
                 JobState.SENDING),
            ).fetchall()
            return [int(r[0]) for r in rows]

        return await self._tx(tx)

    async def claim_job(self, now: float) -> tuple[Job, Message] | None:
        """Take the next due job whose documents are ready; it is `sending` once this returns."""
        def tx(db: sqlite3.Connection) -> tuple[Job, Message] | None:
            row = _first(
                db,
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id = (SELECT j.id FROM jobs j JOIN messages m ON m.id = j.message"
                "   WHERE j.state = ? AND j.next_attempt_at <= ? AND m.state = ?"
                "   ORDER BY j.next_attempt_at, j.id LIMIT 1)"
                " RETURNING *",
                (JobState.SENDING, now, JobState.QUEUED, now, MessageState.READY),
            )
            if row is None:
                return None
            job = _job(row)
            message_row = _first(db, f"SELECT {MESSAGE_LISTED} FROM messages WHERE id = ?",
                                 (job.message,))
            assert message_row is not None
            return job, _message(message_row)

        return await self._tx(tx)

    async def next_job_due(self, status_timeout: float) -> float | None:
        """When the sender has something to do next: a queued retry or a status deadline."""
        rows = await self._all(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(j.next_attempt_at) AS t FROM jobs j JOIN messages m ON m.id = j.message"
            "  WHERE j.state = ? AND m.state = ?"
            " UNION ALL SELECT MIN(submitted_at) + ? FROM jobs WHERE state = ?)",
            (JobState.QUEUED, MessageState.READY, status_timeout, JobState.SUBMITTED),
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def record_submitted(
        self, job_id: int, fax_id: str, now: float, classify: Callable[[str], JobState | None]
    ) -> JobState:
        """FaxMAX took the fax. Status pushes that raced ahead of this answer apply now;
        returns the job's state after them."""
        def tx(db: sqlite3.Connection) -> JobState:
            db.execute(
                "UPDATE jobs SET state = ?, fax_id = ?, submitted_at = ?, updated_at = ?,"
                " detail = '' WHERE id = ?",
                (JobState.SUBMITTED, fax_id, now, now, job_id),
            )
            _apply_pending(db, fax_id, now, classify)
            row = _first(db, "SELECT state FROM jobs WHERE id = ?", (job_id,))
            assert row is not None
            return JobState(row[0])

        return await self._tx(tx)

    async def reschedule_job(self, job_id: int, *, at: float, detail: str, now: float) -> None:
        await self._tx(lambda db: db.execute(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, detail = ?, updated_at = ?"
            " WHERE id = ?", (JobState.QUEUED, at, detail, now, job_id)))

    async def finish_job(self, job_id: int, state: JobState, *, detail: str, now: float) -> None:
        await self._tx(lambda db: db.execute(
            "UPDATE jobs SET state = ?, detail = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            (state, detail, now, now, job_id)))

    async def expire_submitted(self, cutoff: float, now: float) -> list[int]:
        """Jobs submitted before `cutoff` with no final status push: nobody knows their fate."""
        def tx(db: sqlite3.Connection) -> list[int]:
            rows = db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = ?, detail = ?"
                " WHERE state = ? AND submitted_at <= ? RETURNING id",
                (JobState.UNKNOWN, now, now,
                 "no delivery report: FaxMAX accepted the fax but never said whether it was "
                 "delivered", JobState.SUBMITTED, cutoff),
            ).fetchall()
            return [int(r[0]) for r in rows]

        return await self._tx(tx)

    async def requeue_job(self, job_id: int, now: float) -> str | None:
        """An operator's explicit resend of an `unknown` or `failed` job. Returns None when it
        is queued again, else why it cannot be."""
        def tx(db: sqlite3.Connection) -> str | None:
            row = _first(
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
                " attempts = 0, detail = 'resent by an operator', finished_at = NULL,"
                " reported = '', provider_status = '' WHERE id = ?",
                (JobState.QUEUED, now, now, job_id),
            )
            return None

        return await self._tx(tx)

    async def usage(self, sender: str, *, hour_since: float, day_since: float) -> Usage:
        """What `sender`, and the whole gateway, used since: faxes since `hour_since`, and pages
        since `day_since` of faxes that were or will be sent (one FaxMAX never accepted costs
        nothing). Counted per minute, so the oldest minute counts whole: a limit may hold a
        sender back up to a minute longer, never let one through early."""
        rows = await self._all(
            "SELECT COALESCE(SUM(CASE WHEN sender = ?1 AND minute >= ?2 THEN jobs END), 0),"
            " COALESCE(SUM(CASE WHEN sender = ?1 THEN pages END), 0), COALESCE(SUM(pages), 0)"
            " FROM usage WHERE minute >= ?3",
            (sender.lower(), int(hour_since // 60), int(day_since // 60)))
        faxes, pages, total = rows[0]
        return Usage(faxes_last_hour=int(faxes), sender_pages=int(pages),
                     total_pages=int(total))

    async def forget_usage(self, before: float) -> None:
        """Usage older than every window it is counted in is of no more use."""
        await self._tx(lambda db: db.execute("DELETE FROM usage WHERE minute < ?",
                                             (int(before // 60),)))

    async def job(self, job_id: int) -> Job | None:
        rows = await self._all("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def jobs(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        if state is None:
            rows = await self._all("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self._all("SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?",
                                   (state, limit))
        return [_job(r) for r in rows]

    async def status_events(self, fax_id: str) -> list[tuple[float, str, str]]:
        """Every status push for one fax, oldest first: (received at, status, message)."""
        rows = await self._all("SELECT received_at, status, result_message FROM status_events"
                               " WHERE fax_id = ? ORDER BY id", (fax_id,))
        return [(float(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def job_counts(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}

    # --- status pushes ---------------------------------------------------------------------

    # --- reports ---------------------------------------------------------------------------

    async def jobs_to_report(self, limit: int = 50) -> list[tuple[Job, Message]]:
        """Final jobs whose current state has not been reported yet (an `unknown` job that a
        late push settles is reported again)."""
        rows = await self._all(
            "SELECT j.id FROM jobs j WHERE j.state IN (?, ?, ?) AND j.reported != j.state"
            " ORDER BY j.id LIMIT ?", (*FINAL_JOB_STATES, limit),
        )
        out = []
        for (job_id,) in rows:
            job = await self.job(job_id)
            assert job is not None
            message = await self.message(job.message)
            assert message is not None
            out.append((job, message))
        return out

    async def mark_reported(
        self, job_id: int, state: JobState, mail: OutgoingMail | None, now: float
    ) -> None:
        """Record that `state` was reported, enqueueing the report in the same transaction."""
        def tx(db: sqlite3.Connection) -> None:
            if mail is not None:
                _enqueue(db, mail, now)
            db.execute("UPDATE jobs SET reported = ? WHERE id = ? AND state = ?",
                       (state, job_id, state))

        await self._tx(tx)

    # --- outgoing email --------------------------------------------------------------------

    async def claim_mail(self, now: float, lease: float) -> QueuedMail | None:
        """Take the next due email, leased for `lease` seconds: if the delivery neither
        succeeds nor fails by then (a hung worker), it is handed out again; a crash clears
        the lease at the next start. Either way an email may go twice; its Message-ID shows it."""
        row = await self._tx(lambda db: _first(
            db,
            "UPDATE outbox SET attempts = attempts + 1, leased_until = ?, updated_at = ?"
            " WHERE id = (SELECT id FROM outbox WHERE state = ? AND next_attempt_at <= ?"
            "   AND COALESCE(leased_until, 0) <= ? ORDER BY next_attempt_at, id LIMIT 1)"
            " RETURNING id, message_id, mail_from, recipients, body, attempts, created_at",
            (now + lease, now, MailState.PENDING, now, now),
        ))
        if row is None:
            return None
        return QueuedMail(id=row[0], message_id=row[1], mail_from=row[2],
                          recipients=tuple(json.loads(row[3])), body=bytes(row[4]),
                          attempts=row[5], created_at=row[6])

    async def mail_done(
        self, mail_id: int, state: MailState, *, now: float, error: str = "",
        retry_at: float | None = None,
    ) -> None:
        await self._tx(lambda db: db.execute(
            "UPDATE outbox SET state = ?, last_error = ?, updated_at = ?, leased_until = NULL,"
            " next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
            (state, error, now, retry_at, mail_id)))

    async def requeue_mail(self, mail_id: int, now: float) -> bool:
        """An operator's resend of an email that was given up, or one still waiting for its
        next attempt, after fixing the relay: due now, with a fresh allowance of attempts."""
        cur = await self._tx(lambda db: db.execute(
            "UPDATE outbox SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ?,"
            " created_at = ? WHERE id = ? AND state IN (?, ?) AND length(body) > 0"
            " AND COALESCE(leased_until, 0) <= ?",  # not while it is being delivered
            (MailState.PENDING, now, now, now, mail_id, MailState.FAILED, MailState.PENDING,
             now)))
        return bool(cur.rowcount == 1)

    async def mails(self, state: MailState | None = None, limit: int = 100) -> list[MailInfo]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = await self._all(
            "SELECT id, message_id, recipients, state, attempts, created_at, updated_at,"
            f" last_error FROM outbox {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [MailInfo(**{**dict(r), "state": MailState(r["state"]),
                            "recipients": tuple(json.loads(r["recipients"]))}) for r in rows]

    async def next_mail_due(self) -> float | None:
        rows = await self._all("SELECT MIN(MAX(next_attempt_at, COALESCE(leased_until, 0)))"
                               " FROM outbox WHERE state = ?", (MailState.PENDING,))
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def mail_counts(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}

    # --- quarantine ------------------------------------------------------------------------

    async def quarantined(self, *, pending_only: bool = False) -> list[Quarantined]:
        """What was kept raw because it could not be understood (see `replay-quarantine`)."""
        where = " WHERE replayed_at IS NULL" if pending_only else ""
        rows = await self._all(f"SELECT * FROM quarantine{where} ORDER BY id")
        return [Quarantined(**{**dict(r), "body": bytes(r["body"])}) for r in rows]

    async def mark_replayed(self, quarantine_id: int, now: float) -> None:
        await self._tx(lambda db: db.execute(
            "UPDATE quarantine SET replayed_at = ? WHERE id = ?", (now, quarantine_id)))

    # --- pushes: one transaction per push ---------------------------------------------------

    async def record_push(
        self, *, source: str, events: Sequence[StatusEvent], faxes: Sequence[NewInbound],
        bad: Sequence[tuple[bytes, str]], now: float,
        classify: Callable[[str], JobState | None], replay: bool = False,
    ) -> tuple[int, list[int], list[int]]:
        """Everything a push carried, in one commit: status events (replays are no-ops), new
        received faxes, what goes to quarantine, and the time of the last push (unless this is
        an operator's replay of a kept one; once per group, by `_commit_group`). Returns (new
        events, new fax ids, quarantine ids)."""
        def work(db: sqlite3.Connection) -> tuple[int, list[int], list[int]]:
            new_events = _add_status_events(db, events, now, classify)
            fax_ids = _add_inbound(db, faxes, InboundState.RECEIVED, now)
            kept = [_quarantine(db, source, reason, body, now) for body, reason in bad]
            return new_events, fax_ids, kept

        if not replay:
            last = float(self._group_meta.get("faxmax.last_push", "0"))
            self._group_meta["faxmax.last_push"] = repr(max(now, last))
        return await self._grouped(work)

    # --- received faxes ---------------------------------------------------------------------

    async def record_log_poll(
        self, faxes: Sequence[NewInbound], state: InboundState, meta: dict[str, str],
        now: float,
    ) -> list[int]:
        """A provider's log: unseen faxes and the poller's bookkeeping, in one commit."""
        def tx(db: sqlite3.Connection) -> list[int]:
            ids = _add_inbound(db, faxes, state, now)
            _set_meta(db, meta)
            return ids

        return await self._tx(tx)

    async def next_inbound(self, state: InboundState, now: float) -> Inbound | None:
        rows = await self._all(
            "SELECT * FROM inbound WHERE state = ? AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at, id LIMIT 1", (state, now))
        return _inbound(rows[0]) if rows else None

    async def next_inbound_due(self, state: InboundState) -> float | None:
        rows = await self._all("SELECT MIN(next_attempt_at) FROM inbound WHERE state = ?",
                               (state,))
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def inbound_all(self) -> list[Inbound]:
        """Every received fax, without the images kept in the rows."""
        rows = await self._all(f"SELECT {INBOUND_LISTED} FROM inbound ORDER BY id")
        return [_inbound(r) for r in rows]

    async def inbound_fetched(self, inbound_id: int, document_path: str, now: float,
                              meta: dict[str, str]) -> None:
        """The document is on disk; the poller's bookkeeping goes in the same commit."""
        def tx(db: sqlite3.Connection) -> None:
            _set_meta(db, meta)
            db.execute(
                "UPDATE inbound SET state = ?, document_path = ?, attempts = attempts + 1,"
                " next_attempt_at = ?, detail = '', updated_at = ? WHERE id = ?",
                (InboundState.RECEIVED, document_path, now, now, inbound_id))

        await self._tx(tx)

    async def inbound_retry(self, inbound_id: int, *, at: float, detail: str,
                            now: float) -> None:
        await self._tx(lambda db: db.execute(
            "UPDATE inbound SET attempts = attempts + 1, next_attempt_at = ?, detail = ?,"
            " updated_at = ? WHERE id = ?", (at, detail, now, inbound_id)))

    async def inbound_done(
        self, inbound_id: int, state: InboundState, *, mail: OutgoingMail | None, detail: str,
        now: float,
    ) -> None:
        """Mailed (its email enqueued in the same commit) or failed."""
        def tx(db: sqlite3.Connection) -> None:
            if mail is not None:
                _enqueue(db, mail, now)
            db.execute("UPDATE inbound SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
                       (state, detail, now, inbound_id))

        await self._tx(tx)

    async def inbound_counts(self) -> dict[str, int]:
        rows = await self._all("SELECT state, COUNT(*) FROM inbound GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}

    # --- retention and backup ---------------------------------------------------------------

    async def purge(
        self, cutoff: float, remove: Callable[[list[str]], None], batch: int = 200,
    ) -> Purged:
        """Forget the fax images of everything finished before `cutoff`, keeping the metadata
        (who, when, which number, pages, outcome).

        `remove(paths)` deletes the files and runs inside the transaction (on the writer's
        thread), before the rows are cleared: a crash in between leaves rows that still name
        deleted files, which the next purge clears (deleting a missing file is fine), never
        files no row knows of. `secure_delete` zeroes the freed database pages, so the images
        do not linger in the file either. Emails given up (`failed`) and quarantined pushes not
        yet replayed are kept: they are the only copy of something not yet delivered.
        """
        final = [str(state) for state in FINAL_JOB_STATES]
        done = [str(InboundState.MAILED), str(InboundState.FAILED), str(InboundState.SKIPPED)]

        def tx(db: sqlite3.Connection) -> tuple[int, int, int, int]:
            db.execute("PRAGMA secure_delete = ON")
            try:
                messages = db.execute(
                    "SELECT id, spool_path, document_path FROM messages m"
                    " WHERE (document_path IS NOT NULL OR spool_path != '' OR raw IS NOT NULL)"
                    " AND state != ?"
                    " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message = m.id AND"
                    "   (j.state NOT IN (?, ?, ?) OR COALESCE(j.finished_at, ?) >= ?))"
                    " LIMIT ?", (MessageState.RECEIVED, *final, cutoff, cutoff, batch)).fetchall()
                inbound = db.execute(
                    "SELECT id, document_path FROM inbound"
                    " WHERE (document_path IS NOT NULL OR document IS NOT NULL)"
                    " AND state IN (?, ?, ?) AND updated_at < ? LIMIT ?",
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

        totals = [0, 0, 0, 0]
        while True:
            counts = await self._tx(tx)
            totals = [t + n for t, n in zip(totals, counts, strict=True)]
            if max(counts) < batch:
                return Purged(*totals)

    async def backup(self, target: Path) -> None:
        """A consistent copy of the live database, made on the writer's thread (writes wait for
        it; reads go on), written under a temporary name and renamed, so `target` is complete
        or absent."""
        unfinished = target.with_name(f".{target.name}.partial")
        unfinished.unlink(missing_ok=True)
        await self._run(lambda db: db.execute("VACUUM INTO ?", (str(unfinished),)))
        fd = os.open(unfinished, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(unfinished, target)

    # --- bookkeeping ------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        rows = await self._all("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def snapshot(self, now: float) -> Snapshot:
        jobs = dict.fromkeys(JobState, 0) | await self.job_counts()
        received: dict[tuple[str, str], int] = {
            (p, state): 0 for p in PROVIDERS for state in InboundState}
        for provider, state, n in await self._all(
                "SELECT provider, state, COUNT(*) FROM inbound GROUP BY provider, state"):
            received[(str(provider), str(state))] = int(n)
        emails = dict.fromkeys(MailState, 0) | await self.mail_counts()
        queues = {}
        for queue, sql in QUEUES.items():
            (depth, oldest), = await self._all(sql)
            queues[queue] = (int(depth), max(0.0, now - oldest) if oldest is not None else 0.0)
        (quarantined,), = await self._all(
            "SELECT COUNT(*) FROM quarantine WHERE replayed_at IS NULL")
        meta = {str(k): str(v) for k, v in await self._all(
            "SELECT key, value FROM meta WHERE key IN"
            " ('byosoku.log_gaps', 'byosoku.last_poll_ok', 'faxmax.last_push')")}
        return Snapshot(
            jobs={str(k): v for k, v in jobs.items()}, received=received,
            emails={str(k): v for k, v in emails.items()}, queues=queues,
            quarantined=int(quarantined), log_gaps=int(meta.get("byosoku.log_gaps", 0)),
            last_poll=float(meta.get("byosoku.last_poll_ok", 0)),
            last_push=float(meta.get("faxmax.last_push", 0)))

    async def probe_write(self, now: float) -> None:
        """A real, committed write: what /healthz needs to know the store still takes data."""
        await self.set_meta({"health.probe": repr(now)})

    async def set_meta(self, values: dict[str, str]) -> None:
        await self._tx(partial(_set_meta, values=values))

    async def throttle_alert(
        self, cause: str, now: float, window: float,
        render: Callable[[int, int], OutgoingMail | None],
    ) -> bool:
        """Send at most one alert per cause per `window`; the next one says how many were
        held back. `render(sent_before, suppressed)` makes the email. True if one was queued."""
        def tx(db: sqlite3.Connection) -> bool:
            row = _first(db, "SELECT last_sent_at, suppressed, sent FROM alerts WHERE cause = ?",
                         (cause,))
            if row is not None and now - row[0] < window:
                db.execute("UPDATE alerts SET suppressed = suppressed + 1 WHERE cause = ?",
                           (cause,))
                return False
            sent, suppressed = (row[2], row[1]) if row is not None else (0, 0)
            mail = render(sent, suppressed)
            if mail is not None:
                _enqueue(db, mail, now)
            db.execute(
                "INSERT INTO alerts (cause, last_sent_at, suppressed, sent) VALUES (?, ?, 0, ?)"
                " ON CONFLICT(cause) DO UPDATE SET last_sent_at = excluded.last_sent_at,"
                " suppressed = 0, sent = excluded.sent", (cause, now, sent + 1))
            return mail is not None

        return await self._tx(tx)
