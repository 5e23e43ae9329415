"""The only package that speaks SQL: one SQLite file in WAL mode holds every queue and every
fact. The rest of the service uses `Store` and the rows of `bridge.store.rows`.

The rules it enforces (docs/RULES.md): a caller is acknowledged (SMTP 250, webhook 2xx) only
after the transaction that stored its data has committed with `synchronous=FULL`; only work that
can be done again after a power cut (a conversion) commits without waiting for the disk, and
whatever is built on it (the claim of its fax) is again committed durably; every side effect is
a row with a state, an attempt count and a next-attempt time; de-duplication happens at the
database (`UNIQUE` + `ON CONFLICT DO NOTHING`), never by SELECT-then-INSERT; a fax job is
`sending` on disk before the provider is called.

The layout shows the seams: `schema` (migrations), `rows` (states, rows and their mappers),
`writer` (the one writer thread and the group commit), `sql` (the read connection and small
helpers), and one module per table family, each a class with the same verbs (`claim`, `retry`,
`finish`, `get`, `latest`, `counts`, `next_due`): `jobs` (mails to fax and their jobs), `outbox`
(emails, alerts), `inbound` (received faxes, pushes, quarantine), `upkeep` (retention, backup,
meta, snapshot) and `failures`. A second backend implements the same families.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.store.failures import Failures
from bridge.store.inbound import InboundStore
from bridge.store.jobs import JobStore
from bridge.store.outbox import Outbox
from bridge.store.rows import (
    FINAL_JOB_STATES,
    WAITING_JOB_STATES,
    Attempt,
    Inbound,
    InboundState,
    Job,
    JobState,
    MailInfo,
    MailState,
    Message,
    MessageState,
    NewInbound,
    NewMessage,
    OutgoingMail,
    Purged,
    Quarantined,
    QueuedMail,
    Snapshot,
    StatusEvent,
    Unmatched,
    Usage,
)
from bridge.store.schema import installation, migrate
from bridge.store.sql import Reader, is_disk_full
from bridge.store.upkeep import Upkeep
from bridge.store.writer import Writer

__all__ = [
    "FINAL_JOB_STATES", "WAITING_JOB_STATES", "Attempt", "Inbound", "InboundState", "Job",
    "JobState", "MailInfo", "MailState", "Message", "MessageState", "NewInbound", "NewMessage",
    "OutgoingMail", "Purged", "Quarantined", "QueuedMail", "Snapshot", "StatusEvent", "Store",
    "Unmatched", "Usage", "is_disk_full",
]


class Store:
    """An open database: its table families, and `installation`, random and made once per
    database, which goes into Message-IDs so that no two installations' emails share one.

    Open it with `async with Store.open(path) as store:`, or `store = await Store.open(path)`
    and `await store.close()`."""

    def __init__(self, path: Path, writer: Writer, reader: Reader, installation: str) -> None:
        self.path = path
        self.writer = writer
        self.reader = reader
        self.installation = installation
        self.jobs = JobStore(writer, reader)
        self.outbox = Outbox(writer, reader)
        self.inbound = InboundStore(writer, reader)
        self.upkeep = Upkeep(writer, reader)
        self.failures = Failures(writer)

    @staticmethod
    def open(path: Path) -> _Opening:
        return _Opening(path)

    async def close(self) -> None:
        await self.writer.close()
        await self.reader.close()


async def _open(path: Path) -> Store:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = await Writer.connect(path)
    try:
        await writer.transaction(migrate)
        made = await writer.transaction(installation)
        reader = await Reader.connect(path)
    except BaseException:
        await writer.close()
        raise
    return Store(path, writer, reader, made)


class _Opening:
    """What `Store.open` returns: awaited, the open store; used with `async with`, the store,
    closed at the end of the block."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._store: Store | None = None

    def __await__(self) -> Generator[Any, None, Store]:
        return _open(self._path).__await__()

    async def __aenter__(self) -> Store:
        self._store = await _open(self._path)
        return self._store

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._store is not None
        await self._store.close()
