"""What the store hands out: states as `str` enums, rows as frozen dataclasses.

Only the store converts between them and the database. A read names the columns it wants (the
fields of the row's dataclass, see `Mapper`), never `SELECT *`, so a column added by a later
schema version breaks no read; a state word this version does not know (a database written by a
newer fax-bridge, or edited by hand) fails with the table, the row and the word, not with a bare
`ValueError` from deep inside a worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Generic, TypeVar

from bridge.errors import StoreError

R = TypeVar("R")


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for its conversion, or for its (next) attempt
    SCHEDULED = "scheduled"  # waiting for the time its sender chose (`send_at`)
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"  # by an operator, before it was sent (`fax-bridge cancel`)


FINAL_JOB_STATES = (JobState.DELIVERED, JobState.FAILED, JobState.UNKNOWN, JobState.CANCELLED)
WAITING_JOB_STATES = (JobState.QUEUED, JobState.SCHEDULED)  # not sent yet: may be cancelled


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
    FAILED = "failed"  # refused for good, or out of attempts: a dead letter, the admin told
    UNKNOWN = "unknown"  # the relay did not answer its final `.`, twice: kept, not resent


class Mapper(Generic[R]):
    """Reads rows of one table into `row_type`, by the names of its fields.

    `convert` turns a column's stored value into the field's type (a state word into its enum,
    a JSON list into a tuple); `lazy` fields (a mail's raw bytes, a fax image) are left out of
    `columns` and read only where asked for (`all_columns`)."""

    def __init__(self, row_type: Callable[..., R], table: str, *,
                 convert: Mapping[str, Callable[[Any], Any]] | None = None,
                 lazy: tuple[str, ...] = ()) -> None:
        self.row_type = row_type
        self.table = table
        self.convert = dict(convert or {})
        self.names = tuple(f.name for f in fields(row_type))  # type: ignore[arg-type]
        self.eager = tuple(name for name in self.names if name not in lazy)
        self.columns = ", ".join(self.eager)
        self.all_columns = ", ".join(self.names)

    def prefixed(self, alias: str) -> str:
        """The columns for a join: `j.id, j.message, …`."""
        return ", ".join(f"{alias}.{name}" for name in self.eager)

    def load(self, row: Sequence[Any], start: int = 0, *, lazy: bool = False) -> R:
        """The row selected with `columns` (or `all_columns`, with `lazy=True`), from the
        column at `start` on: a joined row holds one table's columns after another's."""
        return self.row_type(**self._values(row, start, self.names if lazy else self.eager))

    def load_with(self, row: Sequence[Any], **lazy: Any) -> R:
        """The row selected with `columns`, its lazy fields given by name (read apart)."""
        return self.row_type(**self._values(row, 0, self.eager), **lazy)

    def _values(self, row: Sequence[Any], start: int, names: tuple[str, ...]) -> dict[str, Any]:
        values = dict(zip(names, tuple(row)[start:start + len(names)], strict=True))
        for name, convert in self.convert.items():
            value = values.get(name)
            if value is None:
                continue
            try:
                values[name] = convert(value)
            except ValueError as exc:
                raise StoreError(
                    f"{self.table} row {values.get('id', '?')}: {name} {value!r} is not known "
                    "to this version of fax-bridge (was the database written by a newer one?)"
                ) from exc
        return values


def _tuple_of_json(value: str) -> tuple[str, ...]:
    return tuple(json.loads(value))


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
    account: str = ""  # whom the limits charge (`bridge.limits.account`); "": `mail_from`
    send_at: float | None = None  # X-Fax-Send-At, when it is ahead of the time of acceptance
    needs_office: bool = False  # LibreOffice must convert some of it (`bridge.office`)


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
    cover_pages: int = 0  # of `pages`, the cover page's (0: the fax has none)
    needs_office: bool = False


MESSAGES = Mapper(Message, "messages", lazy=("raw",),
                  convert={"state": MessageState, "left_out": _tuple_of_json, "raw": bytes,
                           "needs_office": bool})


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
    round: int = 1  # of attempts: one more after each operator's `retry`
    # What the sender chose (`bridge.options`); None: the operator's `faxmax.*` setting.
    resolution: str | None = None
    paper_size: str | None = None
    cover: str | None = None  # "always", "never", "auto"
    cover_sent: bool | None = None  # decided at conversion; None: sent if the mail has one
    send_at: float | None = None  # when a scheduled job is sent
    dials: int = 0  # of this round, FaxMAX's own redials included (`bridge.dialling`)
    called_at: float | None = None  # when its latest send call began
    redial_at: float | None = None  # when its latest redial was due (None: never redialled)
    matched: str = ""  # "number and time": its fax id was learnt from a push, not the answer

    def pages(self, message: Message) -> int | None:
        """What this fax has: the mail's pages, without the cover's when it goes without."""
        if message.pages is None or self.cover_sent is not False:
            return message.pages
        return message.pages - message.cover_pages


JOBS = Mapper(Job, "jobs", convert={"state": JobState, "cover_sent": bool})


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
    # What may match it to an `unknown` job whose fax id was never learnt (`bridge.dialling`).
    number: str = ""  # `cld`: the number called
    cli: str = ""  # the caller number it was sent with
    requested_on: str = ""  # the provider's times, as written (no zone)
    queued_on: str = ""
    tried: int | None = None  # `tried_count`: dials FaxMAX made for it


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job: a fax FaxMAX took for it (one fax id), the first send or a
    redial, and what its pushes said."""

    job: int
    round: int
    fax_id: str
    submitted_at: float
    status: str  # the latest pushed status ("" none yet)
    pages: int | None  # pages transferred, as the final push says
    tried: int | None  # FaxMAX's dials for it (`tried_count`)
    result_message: str
    finished_at: float | None  # of its final push
    redial_at: float | None  # when the job was to be dialled again after it
    matched: str  # "number and time" when its fax id came from a push, not the answer


ATTEMPTS = Mapper(Attempt, "fax_attempts")


@dataclass(frozen=True)
class Unmatched:
    """Status pushes for a fax id no attempt has, with the `unknown` jobs it could be."""

    fax_id: str
    number: str
    requested_at: float | None
    received_at: float  # of its latest push
    statuses: str  # as pushed, oldest first: "QUEUED > BUSY"
    candidates: tuple[int, ...]  # unknown jobs to its number called near its time


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
    unanswered: int  # deliveries whose final `.` went unanswered: the relay may have it


QUEUED_MAILS = Mapper(QueuedMail, "outbox", convert={"recipients": _tuple_of_json},
                      lazy=("body",))  # read apart, in pieces (`sql.read_blob`)


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


MAIL_INFOS = Mapper(MailInfo, "outbox", convert={"recipients": _tuple_of_json,
                                                 "state": MailState})


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
    no_pdf_answers: int = 0  # "no such PDF" answers while fetching (attempts counts all)
    document: bytes | None = None  # loaded only for the fax being mailed


INBOUND = Mapper(Inbound, "inbound", lazy=("document",),
                 convert={"state": InboundState, "document": bytes})


@dataclass(frozen=True)
class Quarantined:
    id: int
    source: str
    reason: str
    body: bytes
    received_at: float
    replayed_at: float | None
    repeats: int  # copies of the same body received again, not kept a second time


QUARANTINED = Mapper(Quarantined, "quarantine", convert={"body": bytes})


@dataclass(frozen=True)
class Usage:
    """See `JobStore.usage`."""

    faxes_last_hour: int  # the sender's
    sender_pages: int  # the sender's, in the day
    total_pages: int  # the whole gateway's, in the day
    total_faxes_last_hour: int  # the whole gateway's


@dataclass(frozen=True)
class Purged:
    """What one retention pass cleared: fax images of outgoing mails and received faxes, and
    bodies of delivered emails and replayed quarantine entries."""

    messages: int
    inbound: int
    emails: int
    quarantined: int


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
    contradictions: int  # final statuses that contradicted a job's first one (ignored)
    unmatched: int = 0  # faxes pushed that no job knows, for `UNMATCHED_AFTER` or longer
