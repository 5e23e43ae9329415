"""Turns each accepted mail into one PDF (and a cover page), after `250`, off the event loop.

Conversion runs in a sandboxed process (`bridge.sandbox`): Pillow and pypdf are CPU-bound and
parse hostile input, so they must neither block the event loop nor take the service down. The
cover page is made there too, once per mail, and kept as a file next to the PDF
(`cover.cover_file`): finding the sender's words in a body of any size and escaping them (a body
of `&` grows fivefold) took the loop 0.04–0.08 s per MB; held in the store, every job in flight
and its JSON request held a copy of its own (over 1 GB for one 25 MB mail to 4 numbers). The
cover's pages count like the attachments' (`cover.fit`). The file holds the page as the JSON
string that `Fax.send_fax` carries it in, so each call streams it from disk
(`bridge.providers.faxmax`).

Office documents, HTML and text files take a second step: the child writes them out
(`Planned`), LibreOffice makes each a PDF (`bridge.office.converter`: far too large for the
sandbox's children, it is a sandbox of its own), and a child joins every part in mail order
(`assemble`). Mails without them, nearly all, stay one trip to one child.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bridge import body, cover, documents, mime, replies
from bridge.alert_texts import said
from bridge.alerts import Alert
from bridge.clock import Clock
from bridge.config import CoverPage
from bridge.details import INTERNAL_ERROR
from bridge.errors import BridgeError
from bridge.files import write_atomic
from bridge.limits import DAY, PageCaps, broken_cap, try_again, who
from bridge.mail import Templates
from bridge.office.converter import OfficeConverter, OfficeDown
from bridge.office.inputs import Input, write_input
from bridge.sandbox import Sandbox
from bridge.store import WAITING_JOB_STATES, Job, Message, Store, is_disk_full
from bridge.workers.base import ItemFailed, Shunt, Worker

log = logging.getLogger(__name__)

DISK_FULL_PAUSE = 10.0  # seconds between conversion attempts while the disk is full
TRANSIENT_PAUSE = 10.0  # seconds after the sandbox's first transient failure; doubles after each
# A failure of the machine, not of the mail: a child that cannot be started (fork refused for
# lack of processes or memory), or one that died while idle, found when its job is handed over
# (the pipe is closed).
TRANSIENT_ERRNOS = (errno.EAGAIN, errno.ENOMEM, errno.EPIPE, errno.ECONNRESET)


def transient(exc: BaseException | None) -> bool:
    """Whether a conversion failed for the machine's sake (`TRANSIENT_ERRNOS`): the mail stays
    queued and is tried again, counted by the shunt, which still fails it if this never ends."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


@dataclass(frozen=True)
class CoverRequest:
    """What the sandboxed child needs to make a mail's cover page."""

    mode: Literal["auto", "always"]  # `auto`: only when the sender wrote something of their own
    templates_dir: str
    subject: str
    sender: str
    language: str = "en"  # the sender's (`bridge.language.for_sender`)


@dataclass(frozen=True)
class Prepared:
    pdf_path: str
    pages: int  # of the attachments; the cover's are `cover_pages` (0: no cover page)
    left_out: tuple[str, ...]  # what the sender's report lists as not faxed
    cover_pages: int = 0  # a cover page was written (`cover.cover_file(pdf_path)`)
    cover_words: bool = False  # it holds words of the sender's own (else: `always`, empty)


@dataclass(frozen=True)
class Planned:
    """A mail with documents for LibreOffice: every part written to a file in mail order
    (`parts`: name and path; a converted one's path is its PDF's), and what `Prepared` takes
    once they are converted and joined (`assemble`)."""

    inputs: tuple[Input, ...]
    parts: tuple[tuple[str, str], ...]
    pdf_path: str
    left_out: tuple[str, ...]
    cover_pages: int
    cover_words: bool


def make_cover(body: str, request: CoverRequest, out: Path) -> cover.Fitted | None:
    """Runs in a sandboxed process: the cover page around the sender's own words, cut to
    `cover.MAX_COVER_PAGES` pages (`cover.fit`), written to `out` as a JSON string; None (and
    no file) when `auto` finds no words of their own."""
    text = cover.cover_text(body)
    if not text and request.mode == "auto":
        return None
    fitted = cover.fit(text, request.sender, request.subject)
    page = Templates.cached(request.templates_dir).render(
        "cover.html.j2", {"text": fitted.text, "subject": request.subject,
                          "sender": request.sender, "shortened": fitted.left,
                          "max_pages": cover.MAX_COVER_PAGES}, request.language)
    write_atomic(out, json.dumps(page, ensure_ascii=False).encode())  # as the PDF is
    return fitted


def prepare(stored: str | bytes, workdir: str, max_pages: int,
            cover_request: CoverRequest | None = None, office: bool = False,
            fax_body: bool = False) -> Prepared | Planned:
    """Runs in a sandboxed process: decode the attachments, build the fax PDF and its cover
    page. `stored` is the mail, or the path of the file a large one was spooled to. A mail
    with documents for LibreOffice (`office`) gets them written out instead, with the rest,
    for `assemble` once LibreOffice has made them PDFs: `Planned`. So does the text of a mail
    with nothing attached (`fax_body`, `bridge.body`), which is then the fax: no cover page."""
    work = Path(workdir)
    raw = stored if isinstance(stored, bytes) else Path(stored).read_bytes()
    extraction = mime.extract(raw, office, fax_body)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "fax.pdf"
    if extraction.own_text is not None:
        item, not_shown = body.write_input(extraction.own_text, work, 0)
        return Planned(inputs=(item,), parts=((item.name, item.target),), pdf_path=str(out),
                       left_out=(*extraction.left_out, *not_shown), cover_pages=0,
                       cover_words=False)
    fitted = (None if cover_request is None
              else make_cover(extraction.body_text, cover_request, cover.cover_file(out)))
    cut = (fitted.cut,) if fitted and fitted.cut else ()
    left_out = (*extraction.left_out, *cut)
    cover_pages = fitted.pages if fitted else 0
    cover_words = bool(fitted and fitted.text)
    if not any(kind in documents.CONVERTED for kind in extraction.kinds):
        pages = documents.build_pdf(extraction.parts, out, documents.Limits(max_pages=max_pages))
        return Prepared(pdf_path=str(out), pages=pages, left_out=left_out,
                        cover_pages=cover_pages, cover_words=cover_words)
    inputs: list[Input] = []
    parts: list[tuple[str, str]] = []
    for index, ((name, data), kind) in enumerate(zip(extraction.parts, extraction.kinds,
                                                     strict=True)):
        if kind in documents.CONVERTED:
            inputs.append(write_input(name, data, kind, work, index))
            parts.append((name, inputs[-1].target))
        else:
            path = work / f"part-{index}.{kind.value}"
            write_atomic(path, data)
            parts.append((name, str(path)))
    return Planned(inputs=tuple(inputs), parts=tuple(parts), pdf_path=str(out),
                   left_out=left_out, cover_pages=cover_pages, cover_words=cover_words)


def assemble(planned: Planned, max_pages: int) -> Prepared:
    """Runs in a sandboxed process: the fax PDF from the parts of a `Planned` mail, whose
    documents LibreOffice has made PDFs, in mail order; the part files are removed."""
    paths = [Path(path) for _, path in planned.parts]
    parts = [(name, path.read_bytes()) for (name, _), path in zip(planned.parts, paths,
                                                                   strict=True)]
    pages = documents.build_pdf(parts, Path(planned.pdf_path),
                                documents.Limits(max_pages=max_pages))
    for path in paths:
        path.unlink(missing_ok=True)
    for item in planned.inputs:
        Path(item.source).unlink(missing_ok=True)
    return Prepared(pdf_path=planned.pdf_path, pages=pages, left_out=planned.left_out,
                    cover_pages=planned.cover_pages, cover_words=planned.cover_words)


class Converter(Worker):
    name = "converter"

    def __init__(
        self, store: Store, clock: Clock, *, sandbox: Sandbox, documents_dir: Path,
        templates: Templates, cover_page: CoverPage, max_pages: int, page_caps: PageCaps,
        on_ready: Callable[[], None], on_failed: Callable[[], None], alert: Alert | None = None,
        office: OfficeConverter | None = None, fax_body: bool = False,
        office_missing: str = "not available", timezone: str = "UTC",
        sender_language: Callable[[str], str] = lambda _: "en",
    ) -> None:
        self.sender_language = sender_language  # of the cover page, by the sender's address
        self.timezone = timezone  # of the time a refusal over a daily cap says to send again
        self.office = office
        self.fax_body = fax_body  # a mail with nothing attached is faxed as its text
        self.page_caps = page_caps
        super().__init__(clock)
        self.store = store
        self.sandbox = sandbox
        self.max_pages = max_pages
        self.documents_dir = documents_dir
        self.templates = templates
        self.cover_page = cover_page
        self.on_ready = on_ready
        self.on_failed = on_failed
        self._paused_until: float | None = None
        self._backing_off = False  # the pause is a transient failure's, not a full disk's
        self.office_missing = office_missing  # why there is no LibreOffice, if there is none
        self._office_down_until: float | None = None  # it would not start: retried then
        self._office_failures = 0
        # Mails needing LibreOffice are looked for once per start: without one, none is
        # accepted (`inspect` refuses what only it converts), so only earlier ones can wait.
        self._office_told = False
        self.alert = alert
        self.shunt = Shunt(store, clock, "convert", "message", alert=alert,
                           classified=lambda exc: is_disk_full(exc) or isinstance(exc, OfficeDown))

    def wake(self) -> None:
        """A mail was just stored, so there is space again: no need to wait out a disk-full
        pause. A transient failure's back-off is waited out: more mail does not mend it."""
        if not self._backing_off:
            self._paused_until = None
        super().wake()

    async def next_due(self) -> float | None:
        due = [t for t in (self._paused_until, self._office_down_until) if t is not None]
        return min(due) if due else None

    def _office_usable(self) -> bool:
        now = self.clock.now()
        if self._office_down_until is not None and now >= self._office_down_until:
            self._office_down_until = None
        return self.office is not None and self._office_down_until is None

    async def run_once(self) -> bool:
        if self._paused_until is not None and self.clock.now() < self._paused_until:
            return False
        self._paused_until = None
        self._backing_off = False
        usable = self._office_usable()
        pending = await self.store.jobs.to_convert(limit=1, office=usable)
        if self.office is None and not self._office_told:
            await self._tell_office_missing()
        if not pending:
            return False
        message = pending[0]
        try:
            await self.shunt.attempt(message.id, lambda: self.convert(message),
                                     give_up=lambda words: self._fail(message, INTERNAL_ERROR))
        except ItemFailed as failed:
            if not transient(failed.__cause__):
                raise
            pause = TRANSIENT_PAUSE * 2 ** (failed.count - 1)
            self._paused_until = self.clock.now() + pause
            self._backing_off = True
            log.warning("message %s: the conversion sandbox failed (%s), not the mail; it stays "
                        "queued, trying again in %.0fs (failure %d of %d)", message.id,
                        failed.__cause__, pause, failed.count, failed.limit)
            return False
        except OfficeDown as down:  # the mail waits; the others are converted meanwhile
            self._office_failures += 1
            pause = TRANSIENT_PAUSE * 2 ** min(self._office_failures - 1, 6)
            self._office_down_until = self.clock.now() + pause
            await asyncio.to_thread(shutil.rmtree, self.workdir(message), True)
            log.warning("message %s: %s; it waits, with the other mails that need LibreOffice, "
                        "and is tried again in %.0fs", message.id, down.strerror, pause)
            if self.alert is not None:
                await self.alert("office-down", said("office-down", error=str(down)))
            return True
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            # Not the mail's fault: it stays queued and is converted when space returns.
            self._paused_until = self.clock.now() + DISK_FULL_PAUSE
            log.error("message %s: out of storage while converting; trying again in %.0fs: %s",
                      pending[0].id, DISK_FULL_PAUSE, exc)
            await asyncio.to_thread(shutil.rmtree, self.workdir(pending[0]), True)
            return False
        return True

    async def _tell_office_missing(self) -> None:
        """Mails that need LibreOffice were accepted (with an earlier start's, say) and there
        is none now: they wait, and the admin hears why; looked for once per start, not at
        every conversion."""
        self._office_told = True
        waiting = await self.store.jobs.waiting_for_office()
        if not waiting:
            return
        log.error("office: %d mail(s) wait for LibreOffice, which is %s", waiting,
                  self.office_missing)
        if self.alert is not None:
            await self.alert("office-missing", said("office-missing", waiting=waiting,
                                                    missing=self.office_missing))

    def workdir(self, message: Message) -> Path:
        return self.documents_dir / f"message-{message.id}"

    async def convert(self, message: Message) -> None:
        workdir = self.workdir(message)
        jobs = [j for j in await self.store.jobs.of_message(message.id)
                if j.state in WAITING_JOB_STATES]
        try:
            stored = message.spool_path if message.raw is None else message.raw
            prepared = await self.sandbox.run(prepare, stored, str(workdir), self.max_pages,
                                              self.cover_request(message, jobs),
                                              bool(self.office), self.fax_body)
            if isinstance(prepared, Planned):
                prepared = await self.converted(message, prepared)
        except BridgeError as exc:
            log.warning("message %s: documents refused: %s", message.id, exc)
            await self._fail(message, str(exc))
            return
        except Exception as exc:
            if is_disk_full(exc) or transient(exc):
                raise
            log.exception("message %s: conversion failed unexpectedly", message.id)
            await self._fail(message, INTERNAL_ERROR)
            return
        sent = {job.id: self.sends_cover(job, prepared) for job in jobs}
        cover_pages = prepared.cover_pages if any(sent.values()) else 0
        pages = prepared.pages + cover_pages  # what the fax costs: the caps count it
        cost = sum(prepared.pages + (cover_pages if cover else 0) for cover in sent.values())
        refusal = (self.over_max_pages(pages, cover_pages)
                   or await self.over_page_caps(message, pages, cost, len(jobs)))
        if refusal:
            log.warning("message %s: refused: %s", message.id, refusal)
            await self._fail(message, refusal)
            return
        left_out = dict.fromkeys((*message.left_out, *prepared.left_out))
        # The cover page is in its file, not in the row (see the module's docstring).
        await self.store.jobs.converted(message.id, document_path=prepared.pdf_path,
                                        pages=pages, cover_html=None, left_out=left_out,
                                        cover_pages=cover_pages, cover_sent=sent)
        without = [str(job_id) for job_id, cover in sent.items() if not cover]
        log.info("message %s: %d page(s) ready to fax%s%s", message.id, pages,
                 f", {cover_pages} of them the cover" if cover_pages else "",
                 f" (not sent with jobs {', '.join(without)})" if cover_pages and without
                 else "")
        self.on_ready()

    async def converted(self, message: Message, planned: Planned) -> Prepared:
        """LibreOffice makes the PDFs of a `Planned` mail, one document at a time, then the
        sandbox joins them with the rest."""
        assert self.office is not None  # `prepare` plans only when there is one
        for item in planned.inputs:
            await self.office.convert(Path(item.source), Path(item.target), item.how, item.name)
            log.info("message %s: %s converted by LibreOffice", message.id, item.name)
        self._office_failures = 0
        return await self.sandbox.run(assemble, planned, self.max_pages)

    async def _fail(self, message: Message, reason: str) -> None:
        """Every job of the mail fails with `reason`; what was extracted is not kept."""
        await asyncio.to_thread(shutil.rmtree, self.workdir(message), True)
        await self.store.jobs.not_convertible(message.id, reason, self.clock.now())
        self.on_failed()

    def over_max_pages(self, pages: int, cover_pages: int) -> str | None:
        """`documents.max_pages` counts the cover too; the attachments alone were held to it
        while the PDF was built."""
        if pages <= self.max_pages:
            return None
        return replies.COVER_OVER_MAX_PAGES.say(cover=cover_pages, pages=pages,
                                                max_pages=self.max_pages)

    async def over_page_caps(self, message: Message, pages: int, cost: int,
                             numbers: int) -> str | None:
        """Pages are known only now, after conversion: the daily caps are checked here,
        against the account the mail's jobs are charged to (`limits.account`). `cost` is
        the pages of the `numbers` faxes together, each with its cover or without."""
        jobs = await self.store.jobs.of_message(message.id)
        now = self.clock.now()
        charged = jobs[0].sender if jobs else message.mail_from
        used = await self.store.jobs.usage(charged, hour_since=now - 3600,
                                      day_since=now - DAY)
        broken = broken_cap(used, self.page_caps, cost)
        if broken is None:
            return None
        key, limit, spent, scope = (
            (charged, self.page_caps.per_sender, used.sender_pages, f"for {who(charged)}")
            if broken == "per_sender" else
            (None, self.page_caps.total, used.total_pages, "for the whole fax gateway"))
        at = (None if cost > limit else
              await self.store.jobs.frees_at(key, "pages", now=now, excess=spent + cost - limit))
        if at is None:  # no wait lets it through
            return replies.PAGES_OVER_DAILY_CAP.say(pages=pages, numbers=numbers, cost=cost,
                                                    limit=limit, scope=scope)
        when = try_again(at, now, self.timezone)
        if broken == "per_sender":
            return replies.OVER_SENDER_PAGES.say(pages=pages, numbers=numbers,
                                                 sender=who(charged), limit=limit,
                                                 used=used.sender_pages, **when)
        return replies.OVER_GATEWAY_PAGES.say(**when)

    def cover_request(self, message: Message, jobs: list[Job]) -> CoverRequest | None:
        """What the child needs for the mail's cover page (`make_cover`): made once for the
        mail when any of its jobs may send it (`always`, or `auto` with the sender's own
        words), each job with its sender's choice (`bridge.options`) or the operator's."""
        modes = {job.cover or self.cover_page for job in jobs}
        mode: Literal["auto", "always"] = "always" if "always" in modes else "auto"
        if mode not in modes:
            return None
        return CoverRequest(mode=mode, templates_dir=self.templates.override_dir,
                            subject=message.subject,
                            sender=message.header_from or message.mail_from,
                            language=self.sender_language(message.mail_from))

    def sends_cover(self, job: Job, prepared: Prepared) -> bool:
        """Whether the mail's cover page goes with this job's fax."""
        mode = job.cover or self.cover_page
        return prepared.cover_pages > 0 and (
            mode == "always" or (mode == "auto" and prepared.cover_words))
