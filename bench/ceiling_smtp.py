"""The ceiling for SMTP intake: the least a durable mail gateway in Python has to do per mail.

A bare aiosmtpd server on the application's own event loop (not aiosmtpd's threaded
Controller) that accepts any sender and any recipient and, for every mail, in `handle_DATA`:

- parses it with `email.message_from_bytes(raw, policy=email.policy.default)`,
- decodes every attachment (`get_payload(decode=True)`, i.e. the base64 is really undone),
- inserts the raw message into one SQLite table (aiosqlite, `journal_mode=WAL`,
  `synchronous=FULL`), one commit per mail,

and answers `250` only after that commit. Nothing else: no spool file, no sandbox, no policy
checks, no queue of jobs. `bench/intake.py` runs it beside `fax-bridge serve`, in the same run
and on the same machine, so that the bridge's intake speed is read as a fraction of what the
same building blocks (aiosmtpd, the stdlib `email` parser, aiosqlite with a durable commit)
allow, rather than as an absolute number that depends on the machine. It takes the same
largest mail as the bridge (`smtp.max_message_bytes`, 25 MiB).

    .venv/bin/python bench/ceiling_smtp.py --port 2525 --db /tmp/ceiling.sqlite3

It prints `ceiling-smtp listening on HOST:PORT` once it accepts connections (with `--port 0`
the port is the one the system chose) and stops on SIGTERM or SIGINT, printing how many mails
it stored.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import signal
import time
from email import policy
from email.message import EmailMessage

import aiosqlite
from aiosmtpd.smtp import SMTP, Envelope, Session

DATA_SIZE_LIMIT = 26_214_400
"""The bridge's `smtp.max_message_bytes` default (bridge/config.py): 25 MiB."""

SCHEMA = """CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    subject TEXT NOT NULL,
    message_id TEXT NOT NULL,
    attachments INTEGER NOT NULL,
    attachment_bytes INTEGER NOT NULL,
    raw BLOB NOT NULL,
    received_at REAL NOT NULL
)"""


class CeilingHandler:
    """Parse, decode, commit, then `250`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.stored = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        attachments = decoded = 0
        for part in msg.walk():
            if part.is_attachment():
                payload = part.get_payload(decode=True)
                attachments += 1
                decoded += len(payload) if isinstance(payload, bytes) else 0
        # isolation_level=None: the single INSERT is its own transaction, i.e. one commit.
        await self.db.execute(
            "INSERT INTO messages (mail_from, rcpt_tos, subject, message_id, attachments,"
            " attachment_bytes, raw, received_at) VALUES (?,?,?,?,?,?,?,?)",
            (envelope.mail_from or "", ",".join(envelope.rcpt_tos), str(msg["Subject"] or ""),
             str(msg["Message-ID"] or ""), attachments, decoded, raw, time.time()))
        self.stored += 1
        return "250 2.0.0 OK stored"


async def open_db(path: str) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute(SCHEMA)
    return db


async def serve(host: str, port: int, db_path: str) -> None:
    loop = asyncio.get_running_loop()
    db = await open_db(db_path)
    handler = CeilingHandler(db)
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=DATA_SIZE_LIMIT, enable_SMTPUTF8=False,
                     decode_data=False, ident="ceiling-smtp", loop=loop),
        host=host, port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"ceiling-smtp listening on {bound[0]}:{bound[1]}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await db.close()
    print(f"ceiling-smtp stored {handler.stored} mails", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--db", required=True, help="SQLite file (created if missing)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.db))


if __name__ == "__main__":
    main()
