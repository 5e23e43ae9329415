"""The database's shape, one numbered script per version (`PRAGMA user_version`).

A start migrates an older database forward in one transaction; a database written by a newer
fax-bridge is refused (there is no downgrade: restore the backup taken before the upgrade). A
script is never edited once released: a change is a new version at the end.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterator

from bridge.errors import StoreError
from bridge.store.sql import first

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
    # are checked on every RCPT: summed from the jobs themselves they would cost a scan of the
    # day's jobs, growing through the day; from here, a day of minutes at most. The triggers
    # keep it right whoever writes the jobs (the service, or `fax-bridge requeue`): a fax is
    # charged its pages once they are known, and nothing if FaxMAX never accepted it.
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
    # mail ever received stay: without it, each conversion would scan them all.
    """
    CREATE INDEX jobs_message ON jobs(message);
    """,
    # version 7: failures of an item that no rule classifies (a bug, a broken template
    # override), counted per queue and item, so that a worker gives such an item up after a
    # few tries and the queue moves on, instead of retrying its head forever
    """
    CREATE TABLE failures (
        queue TEXT NOT NULL,
        item INTEGER NOT NULL,
        count INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        PRIMARY KEY (queue, item)
    ) WITHOUT ROWID;
    """,
    # version 8: the round of attempts a job is in (1, and one more for each operator's
    # `retry`), which goes into its report's identity: a round that ends as the one before did
    # (failed, then failed again) is reported again instead of colliding with the first
    # report in the outbox. And a received fax's "no such PDF" answers, counted apart from its
    # other failed fetches: only those say the PDF may never come.
    """
    ALTER TABLE jobs ADD COLUMN round INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE inbound ADD COLUMN no_pdf_answers INTEGER NOT NULL DEFAULT 0;
    """,
    # version 9: a quarantined body is kept once, by its SHA-256, however often FaxMAX sends it
    # again (`repeats` counts the copies that were not kept: same bytes, so nothing is lost;
    # the earliest row stays, unreplayed if any copy was); and an email whose final `.` went
    # unanswered is counted (`unanswered`), so that it is resent at most once
    """
    ALTER TABLE quarantine ADD COLUMN sha256 TEXT;
    ALTER TABLE quarantine ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
    UPDATE quarantine SET sha256 = sha256_hex(body);
    UPDATE quarantine SET
        repeats = (SELECT COUNT(*) - 1 FROM quarantine q WHERE q.sha256 = quarantine.sha256),
        replayed_at = CASE WHEN EXISTS (SELECT 1 FROM quarantine q
                                        WHERE q.sha256 = quarantine.sha256
                                        AND q.replayed_at IS NULL) THEN NULL
                           ELSE replayed_at END
        WHERE id = (SELECT MIN(id) FROM quarantine q WHERE q.sha256 = quarantine.sha256);
    DELETE FROM quarantine
        WHERE id != (SELECT MIN(id) FROM quarantine q WHERE q.sha256 = quarantine.sha256);
    CREATE UNIQUE INDEX quarantine_sha256 ON quarantine(sha256);
    ALTER TABLE outbox ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0;
    """,
    # version 10: options per fax (issue 20). What the sender chose for each job (NULL: the
    # operator's setting), when a scheduled one is sent, and whether its cover page goes with
    # it, decided at conversion (NULL: before this version, sent when the mail has one); the
    # cover's pages, so that a fax sent without its cover is charged without them. A
    # `cancelled` job, like a `failed` one FaxMAX never took, costs no pages: the usage
    # triggers are made again with both rules.
    """
    ALTER TABLE jobs ADD COLUMN resolution TEXT;
    ALTER TABLE jobs ADD COLUMN paper_size TEXT;
    ALTER TABLE jobs ADD COLUMN cover TEXT;
    ALTER TABLE jobs ADD COLUMN cover_sent INTEGER;
    ALTER TABLE jobs ADD COLUMN send_at REAL;
    ALTER TABLE messages ADD COLUMN cover_pages INTEGER NOT NULL DEFAULT 0;
    DROP TRIGGER usage_job_created;
    DROP TRIGGER usage_job_charged;
    DROP TRIGGER usage_pages_known;
    CREATE TRIGGER usage_job_created AFTER INSERT ON jobs BEGIN
        INSERT INTO usage (sender, minute, jobs, pages)
            VALUES (NEW.sender, CAST(NEW.created_at / 60 AS INTEGER), 1,
                    CASE WHEN NEW.state IN ('failed', 'cancelled') AND NEW.fax_id IS NULL
                         THEN 0
                         ELSE COALESCE((SELECT pages - CASE WHEN NEW.cover_sent = 0
                                                            THEN cover_pages ELSE 0 END
                                        FROM messages WHERE id = NEW.message), 0)
                    END)
            ON CONFLICT (sender, minute) DO UPDATE
            SET jobs = jobs + 1, pages = pages + excluded.pages;
    END;
    CREATE TRIGGER usage_job_charged AFTER UPDATE OF state, fax_id ON jobs
    WHEN (OLD.state IN ('failed', 'cancelled') AND OLD.fax_id IS NULL)
         != (NEW.state IN ('failed', 'cancelled') AND NEW.fax_id IS NULL)
    BEGIN
        INSERT INTO usage (sender, minute, pages)
            VALUES (NEW.sender, CAST(NEW.created_at / 60 AS INTEGER),
                    CASE WHEN NEW.state IN ('failed', 'cancelled') AND NEW.fax_id IS NULL
                         THEN -1 ELSE 1 END
                    * COALESCE((SELECT pages - CASE WHEN NEW.cover_sent = 0
                                                    THEN cover_pages ELSE 0 END
                                FROM messages WHERE id = NEW.message), 0))
            ON CONFLICT (sender, minute) DO UPDATE SET pages = pages + excluded.pages;
    END;
    CREATE TRIGGER usage_pages_known AFTER UPDATE OF pages, cover_pages ON messages
    WHEN COALESCE(OLD.pages, 0) != COALESCE(NEW.pages, 0) OR OLD.cover_pages != NEW.cover_pages
    BEGIN
        INSERT INTO usage (sender, minute, pages)
            SELECT sender, CAST(created_at / 60 AS INTEGER),
                   COALESCE(NEW.pages - CASE WHEN cover_sent = 0 THEN NEW.cover_pages
                                             ELSE 0 END, 0)
                   - COALESCE(OLD.pages - CASE WHEN cover_sent = 0 THEN OLD.cover_pages
                                               ELSE 0 END, 0)
            FROM jobs WHERE message = NEW.id
            AND NOT (state IN ('failed', 'cancelled') AND fax_id IS NULL)
            ON CONFLICT (sender, minute) DO UPDATE SET pages = pages + excluded.pages;
    END;
    """,
    # version 11: whether a mail needs LibreOffice (an Office, HTML or text file, or its own
    # text to fax), known at its `250`: while LibreOffice is missing or will not start, such a
    # mail waits, and the others are converted meanwhile.
    """
    ALTER TABLE messages ADD COLUMN needs_office INTEGER NOT NULL DEFAULT 0;
    """,
    # version 12: busy lines and unknown outcomes (`bridge.dialling`). Each fax FaxMAX took for
    # a job is an attempt of its own, with what its pushes said: a job dialled again after a
    # busy line keeps every earlier attempt, and a late push for an earlier fax id finds its
    # job. `dials` counts the dials of the round (FaxMAX's own included), `called_at` is when
    # the latest send call began, `redial_at` when the latest redial was due, and `matched`
    # says a fax id was learnt from a push matched by number and time. Status pushes keep the
    # number, caller and time they name, to be matched with an `unknown` job that never
    # learnt its fax id; `jobs(number, state)` finds the faxes in flight to one number, which
    # one call at a time per number counts.
    """
    CREATE TABLE fax_attempts (
        job INTEGER NOT NULL REFERENCES jobs(id),
        round INTEGER NOT NULL,
        fax_id TEXT NOT NULL UNIQUE,
        submitted_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT '',
        pages INTEGER,
        tried INTEGER,
        result_message TEXT NOT NULL DEFAULT '',
        finished_at REAL,
        redial_at REAL,
        matched TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX fax_attempts_job ON fax_attempts(job, round);
    INSERT OR IGNORE INTO fax_attempts (job, round, fax_id, submitted_at, status, pages,
                                        result_message, finished_at)
        SELECT id, round, fax_id, COALESCE(submitted_at, updated_at), provider_status,
               pages_sent, detail, CASE WHEN state IN ('delivered', 'failed')
                                        THEN finished_at END
        FROM jobs WHERE fax_id IS NOT NULL;
    ALTER TABLE jobs ADD COLUMN dials INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN called_at REAL;
    ALTER TABLE jobs ADD COLUMN redial_at REAL;
    ALTER TABLE jobs ADD COLUMN matched TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_number ON jobs(number, state);
    ALTER TABLE status_events ADD COLUMN number TEXT NOT NULL DEFAULT '';
    ALTER TABLE status_events ADD COLUMN cli TEXT NOT NULL DEFAULT '';
    ALTER TABLE status_events ADD COLUMN requested_at REAL;
    ALTER TABLE status_events ADD COLUMN tried INTEGER;
    CREATE INDEX status_events_unmatched ON status_events(number) WHERE applied_at IS NULL;
    """,
)


def sha256_hex(data: bytes | None) -> str:
    """The key of a quarantined body; SQLite has no hash of its own, so the migration that
    adds the key calls this one."""
    return hashlib.sha256(data or b"").hexdigest()


def statements(script: str) -> Iterator[str]:
    """The statements of a schema script, one by one (executescript would commit the
    migration's transaction half-way); a trigger's body holds semicolons of its own."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def migrate(db: sqlite3.Connection) -> None:
    row = first(db, "PRAGMA user_version")
    version = int(row[0]) if row else 0
    if version > len(SCHEMA):
        raise StoreError(
            f"this database was written by a newer fax-bridge (schema {version}; this "
            f"version knows up to {len(SCHEMA)}): run the newer version, or restore a "
            "backup taken before the upgrade")
    db.create_function("sha256_hex", 1, sha256_hex, deterministic=True)
    for number, script in enumerate(SCHEMA[version:], start=version + 1):
        for statement in statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")


def installation(db: sqlite3.Connection) -> str:
    """Random, made once per database: in Message-IDs, so that the emails of a reinstalled
    bridge (job numbers start again at 1) or of a second one never repeat an earlier id,
    which mail stores that drop duplicates by Message-ID would hide."""
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('installation', ?)",
               (secrets.token_hex(6),))
    row = first(db, "SELECT value FROM meta WHERE key = 'installation'")
    return str(row[0]) if row else ""
