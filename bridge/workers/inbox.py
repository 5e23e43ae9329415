"""Mails each received fax, as a PDF, to the addresses routed to the number that received it.

The email is enqueued in the same transaction that marks the fax mailed, and its Message-ID is
derived from the provider's fax id, so a fax is mailed once; after a crash between relay and
commit, the one possible repeat is recognisable. A fax image that cannot be converted is still
delivered, as the original file, and the admin is told: no email ever goes out without the fax.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import zoneinfo
from collections.abc import Callable
from pathlib import Path

from bridge import documents, mime, routing
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import Settings
from bridge.errors import DocumentError
from bridge.mail import Templates, address_of, as_bytes, compose, one_line
from bridge.numbers import to_international
from bridge.sandbox import Sandbox
from bridge.store import Inbound, InboundState, OutgoingMail, Store
from bridge.workers.base import Worker

log = logging.getLogger(__name__)

PROVIDER_NAMES = {"faxmax": "FaxMAX", "byosoku": "秒速FAX Plus"}
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
        self, store: Store, clock: Clock, settings: Settings, templates: Templates, *,
        sandbox: Sandbox, alerter: Alerter, on_enqueued: Callable[[], None],
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.settings = settings
        self.templates = templates
        self.sandbox = sandbox
        self.alerter = alerter
        self.on_enqueued = on_enqueued

    def country(self, provider: str) -> str:
        if provider == "byosoku":
            return self.settings.byosoku.country_code
        return self.settings.numbers.default_country_code

    async def next_due(self) -> float | None:
        return await self.store.next_inbound_due(InboundState.RECEIVED)

    async def run_once(self) -> bool:
        fax = await self.store.next_inbound(InboundState.RECEIVED, self.clock.now())
        if fax is None:
            return False
        try:
            await self.deliver(fax)
        except Exception:
            log.exception("fax %s: could not be prepared for mailing; retrying in %ss", fax.id,
                          RETRY_AFTER)
            now = self.clock.now()
            await self.store.inbound_retry(fax.id, at=now + RETRY_AFTER,
                                           detail="internal error", now=now)
        return True

    async def deliver(self, fax: Inbound) -> None:
        to = routing.recipients(self.settings, fax.receiving_number, self.country(fax.provider))
        now = self.clock.now()
        if not to:
            log.error("fax %s: nobody to deliver it to; set routing.default or routing.admin",
                      fax.id)
            await self.store.inbound_done(fax.id, InboundState.FAILED, mail=None, now=now,
                                          detail="no recipient: routing.default and "
                                                 "routing.admin are empty")
            return
        original = await self.document(fax)
        note = ""
        try:
            pdf, pages = await self.sandbox.run(to_pdf, original)
            filename = attachment_name(fax, self.settings.mail.timezone, ".pdf")
            mimetype, data = "application/pdf", original if pdf is None else pdf
        except DocumentError as exc:
            suffix = ".tif" if fax.document is not None else (
                Path(fax.document_path or "").suffix or ".bin")
            filename = attachment_name(fax, self.settings.mail.timezone, suffix)
            mimetype = "image/tiff" if suffix == ".tif" else "application/octet-stream"
            data, pages = original, fax.pages or 0
            note = "the fax could not be turned into a PDF; the original file is attached"
            await self.alerter.alert(
                f"inbound-conversion-{fax.id}",
                f"received fax {fax.id} could not be converted to PDF",
                f"{exc}\nIt was delivered to {', '.join(to)} as the original file "
                f"{filename}.")
        # Composing and encoding a large attachment takes long enough to stall intake.
        mail = await asyncio.to_thread(self.render, fax, to, pages, filename, mimetype, data,
                                       note)
        await self.store.inbound_done(fax.id, InboundState.MAILED, mail=mail, detail="",
                                      now=self.clock.now())
        log.info("fax %s: %d page(s) from %s queued for %s", fax.id, pages,
                 fax.sender_number or "withheld", ", ".join(to))
        self.on_enqueued()

    @staticmethod
    async def document(fax: Inbound) -> bytes:
        """A pushed fax is kept in its row; a fetched one in a file."""
        if fax.document is not None:
            return fax.document
        assert fax.document_path is not None
        return await asyncio.to_thread(Path(fax.document_path).read_bytes)

    def render(self, fax: Inbound, to: tuple[str, ...], pages: int, filename: str,
               mimetype: str, data: bytes, note: str) -> OutgoingMail:
        s = self.settings
        international = to_international(fax.receiving_number,
                                         country_code=self.country(fax.provider))
        moment = datetime.datetime.fromtimestamp(fax.received_at, zoneinfo.ZoneInfo(
            s.mail.timezone))
        context = {
            "sender": one_line(fax.sender_number) or "withheld",
            "station": one_line(fax.remote_station),
            "number": f"+{international}" if international else one_line(fax.receiving_number),
            "pages": pages,
            "received": moment.strftime("%Y-%m-%d %H:%M %Z"),
            "provider": PROVIDER_NAMES.get(fax.provider, fax.provider),
            "filename": filename,
            "note": note,
        }
        message_id = fax_message_id(fax, s.mail_domain)
        msg = compose(self.templates, "fax", context, from_=s.mail.from_, to=to,
                      message_id=message_id, date=self.clock.now(), auto_submitted=False,
                      attachments=((filename, mimetype, data),))
        return OutgoingMail(message_id=message_id, mail_from=address_of(s.mail.from_),
                            recipients=to, body=as_bytes(msg))
