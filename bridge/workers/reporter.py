"""Tells senders how their faxes went: one email per fax job, round of attempts and final
state.

Reports are derived from job state (a job whose state differs from what was last reported), so
every path that ends a job (a push, a failure, a timeout, recovery after a crash) is reported
the same way, and the report is enqueued in the same transaction that records it as reported.

A report is rendered and encoded in a thread: it is pure CPU (Jinja, folding the mail's
Subject and References into headers) and, for a mail to 20 numbers, done 20 times in a row.

A report is also proof of what went out: the SHA-256 of the document sent, and, once page 1 went
through, a picture of it as the recipient's machine printed it (`mail.report_copy`), rendered
in the sandbox (the document was made from a sender's mail), never in the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bridge import details, language, previews
from bridge.alerts import Alert
from bridge.clock import Clock
from bridge.config import FaxmaxSettings, Settings
from bridge.language import format_time
from bridge.mail import Templates, as_bytes, compose
from bridge.sandbox import Sandbox
from bridge.store import Attempt, Job, JobState, Message, OutgoingMail, Store
from bridge.store.statuses import remote_station
from bridge.workers.base import Shunt, Worker

log = logging.getLogger(__name__)


def report_message_id(job: Job, installation: str, domain: str) -> str:
    """Stable per job, round of attempts and state: a report re-sent after a crash carries the
    same id, and the report of a round an operator started with `retry` has its own (the
    outbox keeps one email per id). The first round's ids are those of the versions before
    rounds were counted."""
    round_ = f".round-{job.round}" if job.round > 1 else ""
    return f"<fax-bridge.{installation}.job-{job.id}{round_}.{job.state}@{domain}>"


def cover_pages(job: Job, message: Message) -> int | None:
    """The pages of the cover that went with this fax (0: none); None when that is not known
    (not converted, or converted by a version that did not decide it per job) or nothing went
    (cancelled, or failed before FaxMAX took it)."""
    never_sent = job.state in (JobState.CANCELLED, JobState.FAILED) and job.fax_id is None
    if message.pages is None or job.cover_sent is None or never_sent:
        return None
    return message.cover_pages if job.cover_sent else 0


def attempt_context(attempt: Attempt, tz: str, lang: str = "en") -> dict[str, Any]:
    """One attempt, as the report lists it."""
    return {
        "at": format_time(attempt.submitted_at, tz, lang),
        "status": details.status_word(attempt.status, lang),
        "pages": attempt.pages,  # transferred, as its final push said; None: not said
        "tried": attempt.tried,  # FaxMAX's own dials; None: not said
        "message": attempt.result_message,
        "redial_at": format_time(attempt.redial_at, tz, lang),
        "matched": attempt.matched,
    }


@dataclass(frozen=True)
class Copy:
    """What a report shows of the document sent: its SHA-256 ("" when it was never made or is
    gone), whether retention deleted it, the picture of page 1 as printed, and the PDF."""

    sha256: str = ""
    gone: bool = False
    printed: previews.Picture | None = None
    pdf: bytes | None = None
    station: str = ""  # the remote station id FaxMAX gave


def report_context(job: Job, message: Message, tz: str, faxmax: FaxmaxSettings,
                   attempts: Sequence[Attempt] = (), copy: Copy = Copy(),
                   cid: str = "", lang: str = "en",
                   home_country: str = "90") -> dict[str, Any]:
    """What the report templates get. The options are the fax's own (`bridge.options`), or
    the operator's where its sender chose none; the words around them are the templates'.
    `attempts` are the faxes FaxMAX took in this round (a redial after a busy line is one
    more), oldest first; `copy` what is shown of the document, its picture as `cid`. Times,
    the number as written (`written_number`) and the bridge's own words in `detail` are in
    the reader's language `lang` (`bridge.language`, `bridge.details`), as are FaxMAX's status
    words and what was not faxed; `home_country` is the reader's country code."""
    printed = copy.printed
    detail = details.translate(job.detail, lang)
    return {
        "document_sha256": copy.sha256,
        "document_gone": copy.gone,
        "remote_station": copy.station,
        "printed": None if printed is None else {
            "cid": cid, "width": printed.width, "height": printed.height},
        "pdf_attached": copy.pdf is not None,
        "written_number": language.written_number(job.number, home_country, lang),
        "tries": [attempt_context(a, tz, lang) for a in attempts],
        "pages_confirmed": job.pages_sent,
        "pages_total": job.pages(message),
        "matched": job.matched,
        "dials": job.dials,
        "job_id": job.id,
        "state": str(job.state),
        "number": "+" + job.number,
        "recipient": job.recipient,
        "subject": message.subject,
        "detail": detail,
        # FaxMAX's own words (an attempt's `result_message`), which no one translates
        "detail_by_faxmax": detail == job.detail != "" and any(
            a.result_message == job.detail for a in attempts),
        "provider_status": details.status_word(job.provider_status, lang),
        "fax_id": job.fax_id or "",
        "pages": job.pages_sent if job.pages_sent is not None else job.pages(message),
        "attempts": job.attempts,
        "finished": format_time(job.finished_at or job.updated_at, tz, lang),
        "received": format_time(message.received_at, tz, lang),
        "left_out": [details.left_out(item, lang) for item in message.left_out],
        "resolution": job.resolution or faxmax.resolution,
        "paper_size": job.paper_size or faxmax.paper_size,
        "cover_pages": cover_pages(job, message),
        "scheduled": format_time(job.send_at, tz, lang),
    }


class Reporter(Worker):
    name = "reporter"

    def __init__(
        self, store: Store, clock: Clock, settings: Settings, templates: Templates, *,
        on_enqueued: Callable[[], None], alert: Alert | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.settings = settings
        self.templates = templates
        self.on_enqueued = on_enqueued
        self.sandbox = sandbox  # renders page 1 as printed; None: no pictures
        self.shunt = Shunt(store, clock, "report", "job", alert=alert)

    async def next_due(self) -> float | None:
        return None

    def recipients(self, job: Job, message: Message) -> tuple[str, ...]:
        policy = self.settings.mail.report_to_sender
        admin = self.settings.routing.admin
        if policy == "always" or (policy == "failures" and job.state is not JobState.DELIVERED):
            return (message.mail_from,)
        if policy == "never" and job.state is not JobState.DELIVERED and admin:
            return (admin,)
        return ()

    async def run_once(self) -> bool:
        items = await self.store.jobs.to_report()
        try:
            for job, message in items:
                await self.shunt.attempt(job.id, partial(self.report, job, message),
                                         give_up=partial(self.unreported, job))
        finally:
            if items:
                self.on_enqueued()
        return bool(items)

    async def report(self, job: Job, message: Message) -> None:
        to = self.recipients(job, message)
        mail = None
        if to:
            attempts = await self.store.jobs.attempts(job)
            copy = await self.copy(job, message)
            mail = await asyncio.to_thread(self.render, job, message, to, attempts, copy)
            log.info("job %s: %s report queued for %s", job.id, job.state, ", ".join(to))
        elif job.state is not JobState.DELIVERED:
            log.warning("job %s: %s, and no one to tell (set routing.admin)", job.id,
                        job.state)
        await self.store.jobs.reported(job.id, job.state, mail, self.clock.now())

    async def copy(self, job: Job, message: Message) -> Copy:
        """The document's hash, and what `mail.report_copy` shows of it: once page 1 went
        through (delivered, or confirmed before the call broke off). A picture that cannot be
        made leaves the report without it, and a log line says why."""
        station = await remote_station(self.store.reader, job.fax_id) if job.fax_id else ""
        path = message.document_path
        if path is None:
            return Copy(gone=message.pages is not None, station=station)
        try:
            data = await asyncio.to_thread(Path(path).read_bytes)
        except FileNotFoundError:
            return Copy(gone=True, station=station)
        sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        wanted = self.settings.mail.report_copy
        printed_page_1 = job.state is JobState.DELIVERED or (job.pages_sent or 0) > 0
        if wanted == "none" or not printed_page_1:
            return Copy(sha256=sha256, station=station)
        printed = None
        if self.sandbox is not None:
            resolution = job.resolution or self.settings.faxmax.resolution
            try:
                printed = await self.sandbox.run(previews.printed_page, data, resolution)
            except Exception as exc:  # the report goes out all the same, without the picture
                log.warning("job %s: no picture of page 1 in its report: %s: %s", job.id,
                            exc.__class__.__name__, exc)
        return Copy(sha256=sha256, printed=printed, station=station,
                    pdf=data if wanted == "pdf" else None)

    async def unreported(self, job: Job, words: str) -> None:
        """The report cannot be made: recorded as reported without an email, so the reports
        behind it go out; the admin's alert names the job."""
        log.error("job %s: its %s report could not be made and was not sent: %s", job.id,
                  job.state, words)
        await self.store.jobs.reported(job.id, job.state, None, self.clock.now())

    def render(self, job: Job, message: Message, to: tuple[str, ...],
               attempts: Sequence[Attempt], copy: Copy = Copy()) -> OutgoingMail:
        s = self.settings
        message_id = report_message_id(job, self.store.installation, s.mail_domain)
        lang = language.for_sender(s, message.mail_from)
        cid = f"printed-page-1.{message_id.strip('<>')}"
        msg = compose(
            self.templates, "report", report_context(job, message, s.mail.timezone, s.faxmax,
                                                     attempts, copy, cid, lang,
                                                     s.numbers.default_country_code),
            from_=s.mail.from_, to=to, message_id=message_id, date=self.clock.now(),
            in_reply_to=message.message_id, references=message.refs, language=lang,
            inline=() if copy.printed is None else ((cid, "image/png", copy.printed.png),),
            attachments=() if copy.pdf is None else (
                (f"fax-job-{job.id}.pdf", "application/pdf", copy.pdf),),
        )
        # Reports go out from the null sender, so a bounce of a report cannot loop back.
        return OutgoingMail(message_id=message_id, mail_from="", recipients=to,
                            body=as_bytes(msg))
