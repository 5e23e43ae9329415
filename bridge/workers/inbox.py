"""Mails each received fax, as a PDF, to the addresses routed to the number that received it.

The email shows page 1, and small pictures of the pages after it, in its HTML part
(`bridge.previews`), and attaches what `routing.formats` chose for the number; a "notice"
number's email carries neither, only that a fax arrived.

The email is enqueued in the same transaction that marks the fax mailed, and its Message-ID is
derived from the provider's fax id, so a fax is mailed once; after a crash between relay and
commit, the one possible repeat is recognisable. A fax image that cannot be converted is still
delivered, as the original file, and the admin is told: no email ever goes out without the fax.
With `documents.ocr`, the PDF is given a text layer first (`bridge.ocr`), within
`documents.ocr_timeout`, and mailed without one when OCR fails.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import documents, language, mime, previews, routing
from bridge.alert_texts import said
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import Settings
from bridge.config.settings import InboundFormat
from bridge.errors import DocumentError
from bridge.mail import Templates, address_of, as_bytes, compose, one_line
from bridge.numbers import to_international
from bridge.ocr import Ocr, Text
from bridge.providers import Provider, display_name
from bridge.sandbox import Sandbox
from bridge.store import Inbound, InboundState, OutgoingMail, Store
from bridge.workers.base import ItemFailed, Shunt, Worker

log = logging.getLogger(__name__)

RETRY_AFTER = 60.0


def to_pdf(data: bytes) -> tuple[bytes | None, int]:
    """Runs in a sandboxed process: a received TIFF becomes a PDF; a received PDF is checked
    (None: it is mailed as it is). Returns the PDF and its page count."""
    kind = documents.sniff(data[:documents.SNIFF_BYTES])
    if kind is documents.Kind.TIFF:
        return documents.tiff_to_pdf("the received fax", data)
    if kind is documents.Kind.PDF:
        return None, documents.pdf_page_count("the received fax", data)
    raise DocumentError("the received file is neither a TIFF nor a PDF")


@dataclass(frozen=True)
class Letter:
    """The fax's email but its attachment: what the sandbox needs to compose it."""

    templates_dir: str
    context: dict[str, Any]  # the template's variables, but pages, filename and note
    from_: str
    to: tuple[str, ...]
    message_id: str
    date: float
    pdf_name: str  # the attachment's name when the fax became a PDF
    original_name: str  # ... and when it is attached as it came
    original_type: str
    original_pages: int  # the provider's count, for an original attached as it came
    format: InboundFormat = "pdf"  # what the email carries (`routing.formats`)
    max_pages: int = 100  # of a received PDF turned into a TIFF
    language: str = "en"  # of the email (`bridge.language.for_number`)


@dataclass(frozen=True)
class FaxMail:
    body: bytes  # the email, on the wire
    pages: int
    filename: str
    problem: str  # why the fax could not become a PDF ("" when it did)
    preview_problem: str = ""  # why no pictures of its pages are shown ("" when they are)


UNCONVERTED_NOTE = "the fax could not be turned into a PDF; the original file is attached"


def fax_mail(original: bytes, letter: Letter, problem: str = "",
             searchable: Text | None = None) -> FaxMail:
    """Runs in a sandboxed process: the fax as a PDF, and the email that carries it. Encoding a
    large attachment into an email is pure CPU: in the service, even in a thread, it held the
    interpreter from the event loop in steps of up to 5 ms while pushes arrived. A fax that
    cannot become a PDF (or whose conversion the sandbox cut off: `problem`) is attached as it
    came, and the words why come back for the admin. `searchable`: the PDF made already, with
    its text layer (`Inbox.searchable`)."""
    if letter.format == "notice":
        return _notice(original, letter, count=not problem)
    pdf: bytes | None = None
    excerpt = ""
    if searchable is not None:
        pdf, pages, excerpt = searchable.pdf, searchable.pages, searchable.excerpt
    elif not problem:
        try:
            pdf, pages = to_pdf(original)
        except DocumentError as exc:
            problem = str(exc)
    pictures: tuple[previews.Picture, ...] = ()
    preview_problem = ""
    attachments: tuple[tuple[str, str, bytes], ...]
    if problem:
        attachments = ((letter.original_name, letter.original_type, original),)
        pages, note = letter.original_pages, UNCONVERTED_NOTE
    else:
        note = ""
        attachments = _attachments(original, original if pdf is None else pdf, letter)
        try:
            pictures = previews.fax_pictures(original)
        except Exception as exc:  # the pictures are a convenience: the fax still goes out
            preview_problem = f"{exc.__class__.__name__}: {exc}"
        else:
            preview_problem = "" if pictures else "page 1's picture is over its size budget"
    names = [name for name, _, _ in attachments]
    cids = [f"page-{p.page}.{letter.message_id.strip('<>')}" for p in pictures]
    shown = [{"cid": cid, "page": p.page, "width": p.width, "height": p.height}
             for cid, p in zip(cids, pictures, strict=True)]
    context = letter.context | {
        "pages": pages, "filename": names[0], "filenames": names, "note": note,
        "notice": False, "preview": shown[0] if shown else None, "thumbnails": shown[1:],
        "excerpt": excerpt}
    msg = compose(Templates.cached(letter.templates_dir), "fax", context, from_=letter.from_,
                  to=letter.to, message_id=letter.message_id, date=letter.date,
                  auto_submitted=False, attachments=attachments, language=letter.language,
                  inline=tuple((cid, "image/png", p.png)
                               for cid, p in zip(cids, pictures, strict=True)))
    return FaxMail(body=as_bytes(msg), pages=pages, filename=", ".join(names), problem=problem,
                   preview_problem=preview_problem)


def _attachments(original: bytes, pdf: bytes,
                 letter: Letter) -> tuple[tuple[str, str, bytes], ...]:
    """The fax as `routing.formats` chose: a PDF, a TIFF (the one received, else made from the
    received PDF), or both."""
    as_pdf = (letter.pdf_name, "application/pdf", pdf)
    if letter.format == "pdf":
        return (as_pdf,)
    if letter.original_type == "image/tiff":
        as_tiff = (letter.original_name, "image/tiff", original)
    else:
        as_tiff = (letter.pdf_name.removesuffix(".pdf") + ".tif", "image/tiff",
                   previews.pdf_to_tiff(pdf, letter.max_pages))
    return (as_tiff,) if letter.format == "tiff" else (as_pdf, as_tiff)


def _notice(original: bytes, letter: Letter, count: bool) -> FaxMail:
    """A "notice" number's email: the facts of the fax, no attachment and no picture. Pages
    the provider did not count are counted here, unless (`count` false) reading the fax is
    what the sandbox cut off."""
    pages = letter.original_pages
    if not pages and count:
        try:
            pages = to_pdf(original)[1]
        except DocumentError:
            pages = 0
    context = letter.context | {"pages": pages, "filename": "", "filenames": [], "note": "",
                                "notice": True, "preview": None, "thumbnails": [],
                                "excerpt": ""}
    msg = compose(Templates.cached(letter.templates_dir), "fax", context, from_=letter.from_,
                  to=letter.to, message_id=letter.message_id, date=letter.date,
                  auto_submitted=False, language=letter.language)
    return FaxMail(body=as_bytes(msg), pages=pages, filename="", problem="")


def attachment_name(fax: Inbound, tz: str, suffix: str) -> str:
    """`fax-2026-11-23-0309-from-0368680000.pdf`: sortable, and says who sent it."""
    moment = datetime.datetime.fromtimestamp(fax.received_at, zoneinfo.ZoneInfo(tz))
    sender = one_line(fax.sender_number) or "withheld"
    return mime.sanitize_filename(f"fax-{moment:%Y-%m-%d-%H%M}-from-{sender}{suffix}",
                                  f"fax{suffix}")


def fax_message_id(fax: Inbound, domain: str) -> str:
    digest = hashlib.sha256(f"{fax.provider}\0{fax.external_id}".encode()).hexdigest()[:32]
    return f"<fax-bridge.fax.{fax.provider}.{digest}@{domain}>"


class Inbox(Worker):
    name = "inbox"

    def __init__(
        self, store: Store, clock: Clock, settings: Settings, *,
        sandbox: Sandbox, alerter: Alerter, on_enqueued: Callable[[], None],
        ocr: Ocr | None = None,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.settings = settings
        self.sandbox = sandbox
        self.alerter = alerter
        self.on_enqueued = on_enqueued
        self.ocr = ocr  # None: `documents.ocr` is off, or OCR is not installed
        self.shunt = Shunt(store, clock, "inbound", "fax", alert=alerter.alert)

    def country(self, provider: str) -> str:
        if provider == Provider.BYOSOKU:
            return self.settings.byosoku.country_code
        return self.settings.numbers.default_country_code

    async def next_due(self) -> float | None:
        return await self.store.inbound.next_due(InboundState.RECEIVED)

    async def run_once(self) -> bool:
        fax = await self.store.inbound.due(InboundState.RECEIVED, self.clock.now())
        if fax is None:
            return False
        try:
            await self.shunt.attempt(fax.id, lambda: self.deliver(fax),
                                     give_up=lambda words: self.undeliverable(fax, words))
        except ItemFailed as failed:  # the faxes behind it go on meanwhile
            log.error("fax %s: could not be prepared for mailing (failure %d of %d); retrying "
                      "in %ss", fax.id, failed.count, failed.limit, RETRY_AFTER,
                      exc_info=failed.__cause__)
            now = self.clock.now()
            await self.store.inbound.retry(fax.id, at=now + RETRY_AFTER,
                                           detail="internal error", now=now)
        return True

    async def deliver(self, fax: Inbound) -> None:
        to = routing.recipients(self.settings, fax.receiving_number, self.country(fax.provider))
        now = self.clock.now()
        if not to:
            log.error("fax %s: nobody to deliver it to; set routing.default or routing.admin",
                      fax.id)
            await self.store.inbound.finish(fax.id, InboundState.FAILED, mail=None, now=now,
                                          detail="no recipient: routing.default and "
                                                 "routing.admin are empty")
            return
        original = await self.document(fax)
        letter = self.letter(fax, to)
        searchable = await self.searchable(fax, original)
        try:
            made = await self.sandbox.run(fax_mail, original, letter, "", searchable)
        except DocumentError as exc:  # the sandbox's limits cut the conversion off
            made = await self.sandbox.run(fax_mail, original, letter, str(exc))
        if made.problem:
            await self.alerter.alert(f"inbound-conversion-{fax.id}", said(
                "inbound-conversion", fax=fax.id, problem=made.problem, to=", ".join(to),
                filename=made.filename))
        if made.preview_problem:
            log.warning("fax %s: its email shows no pictures of its pages: %s", fax.id,
                        made.preview_problem)
        mail = OutgoingMail(message_id=letter.message_id,
                            mail_from=address_of(self.settings.mail.from_), recipients=to,
                            body=made.body)
        await self.store.inbound.finish(fax.id, InboundState.MAILED, mail=mail, detail="",
                                      now=self.clock.now())
        log.info("fax %s: %d page(s) from %s queued for %s%s", fax.id, made.pages,
                 fax.sender_number or "withheld", ", ".join(to),
                 "" if made.filename else " (a notice: no attachment)")
        self.on_enqueued()

    async def searchable(self, fax: Inbound, original: bytes) -> Text | None:
        """The fax as a PDF with a text layer, in its provider's languages; None without OCR,
        or when it fails (`fax_mail` then converts the fax, and says why it could not)."""
        if self.ocr is None:
            return None
        try:
            pdf, pages = await self.sandbox.run(to_pdf, original)
        except DocumentError:
            return None
        langs = (self.settings.byosoku.ocr_languages if fax.provider == Provider.BYOSOKU
                 else self.settings.faxmax.ocr_languages)
        return await self.ocr.read(original if pdf is None else pdf, pages, langs, fax.id)

    async def undeliverable(self, fax: Inbound, words: str) -> None:
        """Failed, with the fax image kept (retention never deletes it), so that a person can
        take it from the database (README, "A received fax failed"); the admin's alert names
        the fax."""
        await self.store.inbound.finish(fax.id, InboundState.FAILED, mail=None,
                                        detail=f"internal error: {words}", now=self.clock.now())

    @staticmethod
    async def document(fax: Inbound) -> bytes:
        """A pushed fax is kept in its row; a fetched one in a file."""
        if fax.document is not None:
            return fax.document
        assert fax.document_path is not None
        return await asyncio.to_thread(Path(fax.document_path).read_bytes)

    def letter(self, fax: Inbound, to: tuple[str, ...]) -> Letter:
        s = self.settings
        country = self.country(fax.provider)
        international = to_international(fax.receiving_number, country_code=country)
        lang = language.for_number(s, fax.receiving_number, country)
        caller = to_international(fax.sender_number, country_code=country)
        suffix = ".tif" if fax.document is not None else (
            Path(fax.document_path or "").suffix or ".bin")
        return Letter(
            templates_dir=s.mail.templates_dir,
            context={
                "sender": one_line(fax.sender_number) or "withheld",
                "station": one_line(fax.remote_station),
                "number": f"+{international}" if international else one_line(
                    fax.receiving_number),
                "received": language.format_time(fax.received_at, s.mail.timezone, lang),
                "provider": display_name(fax.provider),
                "fax_ref": fax.id,
                # As the reader writes them, national for the line's own country:
                "written_sender": language.written_number(caller, country, lang),
                "written_number": language.written_number(international, country, lang)
                if international else one_line(fax.receiving_number),
            },
            from_=s.mail.from_, to=to, message_id=fax_message_id(fax, s.mail_domain),
            date=self.clock.now(),
            pdf_name=attachment_name(fax, s.mail.timezone, ".pdf"),
            original_name=attachment_name(fax, s.mail.timezone, suffix),
            original_type="image/tiff" if suffix == ".tif" else "application/octet-stream",
            original_pages=fax.pages or 0, language=lang,
            format=routing.format_for(s, fax.receiving_number, country),
            max_pages=s.documents.max_pages)
