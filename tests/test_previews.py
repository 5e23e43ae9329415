"""Pictures in emails, through the real service: a received fax at a glance (page 1 inline,
thumbnails of the next pages, the attachment `routing.formats` chose, or only a notice), and
the delivery report's copy of what went out (`mail.report_copy`). Emails are read as a mail
reader reads them, at an SMTP relay sink; pictures are opened with Pillow.

The test plan: docs/RELIABILITY.md R2.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import img2pdf
import pytest
from PIL import Image, ImageDraw

from bridge import config, previews
from bridge.errors import ConfigError
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf, make_tiff
from tests.mail_parts import attachments, html_of, images, text_of
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.rigs import ADMIN, ROUTED
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state

NUMBER = "902122222525"
RECEIVING = "902121110000"  # routed to istanbul@example.com (tests.rigs.ROUTED)


def routing(**formats: str) -> dict[str, Any]:
    return {"numbers": ROUTED, "admin": ADMIN, "formats": formats}


def drawn_pdf() -> bytes:
    """One A4-ish page: black type-like bars, and a grey box that a fax prints as dots."""
    page = Image.new("L", (1654, 2339), 255)
    draw = ImageDraw.Draw(page)
    for y in range(150, 1200, 40):
        draw.rectangle((150, y, 1500, y + 12), fill=0)
    draw.rectangle((150, 1400, 900, 1900), fill=128)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG", dpi=(200, 200))
    pdf: bytes = img2pdf.convert(buffer.getvalue())
    return pdf


# --- received faxes -----------------------------------------------------------------------


async def test_a_received_fax_shows_page_1_and_thumbnails_inline_by_cid(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    await make_bridge(routing=routing())
    await faxmax.push_incoming(tiff=make_tiff(7), cld=RECEIVING, cli="903125550000")
    [mail] = await relay.wait_for(1)
    msg = mail.message
    html = html_of(msg)
    pictures = images(msg)
    referenced = re.findall(r'src="cid:([^"]+)"', html)
    assert sorted(referenced) == sorted(pictures)  # each picture shown, none remote
    assert "http" not in html.lower().replace("<!doctype html>", "")
    page_1, *thumbnails = (pictures[cid] for cid in referenced)
    assert page_1.width == previews.PREVIEW_WIDTH and page_1.height > page_1.width
    assert [t.width for t in thumbnails] == [previews.THUMBNAIL_WIDTH] * 4  # pages 2-5 of 7
    html_part = msg.get_body(("html",))
    assert html_part is not None
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1 and html_part in related[0].get_payload()
    [(name, ctype, _)] = attachments(msg)  # the pictures are not attachments
    assert ctype == "application/pdf" and name.endswith(".pdf")
    text = text_of(msg)
    assert "Pages:     7" in text and "shows pages 1 to 5" in text
    part = next(p for p in msg.walk() if p["Content-ID"])
    assert len(part.get_payload(decode=True)) <= previews.PREVIEW_BUDGET


async def test_a_notice_number_gets_neither_attachment_nor_picture(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=routing(**{RECEIVING: "notice"}))
    await faxmax.push_incoming(tiff=make_tiff(2), cld=RECEIVING, cli="903125550000")
    [mail] = await relay.wait_for(1)
    msg = mail.message
    assert attachments(msg) == [] and images(msg) == {}
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    assert "cid:" not in html_of(msg)
    assert "faxes are not sent by email" in text_of(msg)
    # Only that a fax arrived: not who sent it, nor how long it is.
    assert msg["Subject"] == "Fax received on (0212) 111 00 00"
    for shown in (text_of(msg), html_of(msg)):
        assert "3125550000" not in shown and "555 00 00" not in shown and "Pages" not in shown
    assert await bridge.store.inbound.counts() == {"mailed": 1}


@pytest.mark.parametrize(("chosen", "types"), [
    ("tiff", ["image/tiff"]), ("both", ["application/pdf", "image/tiff"])])
async def test_routing_formats_chooses_the_attachment(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, chosen: str,
    types: list[str],
) -> None:
    tiff = make_tiff(2)
    await make_bridge(routing=routing(**{"+" + RECEIVING: chosen}))
    await faxmax.push_incoming(tiff=tiff, cld=RECEIVING)
    [mail] = await relay.wait_for(1)
    found = attachments(mail.message)
    assert [ctype for _, ctype, _ in found] == types
    assert next(data for _, ctype, data in found if ctype == "image/tiff") == tiff  # as it came
    assert len(images(mail.message)) == 2  # the pictures whatever the attachment


def test_a_received_pdf_becomes_a_fine_g4_tiff_with_its_pages() -> None:
    tiff = previews.pdf_to_tiff(make_pdf(3), max_pages=100)
    with Image.open(io.BytesIO(tiff)) as image:
        assert image.n_frames == 3  # type: ignore[attr-defined]
        assert image.mode == "1" and image.width == previews.FAX_WIDTH
        assert image.info["compression"] == "group4"
        assert tuple(round(d) for d in image.info["dpi"]) == (204, 196)


# --- delivery reports ---------------------------------------------------------------------


async def report_of(make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
                    report_copy: str, document: bytes) -> tuple[EmailMessage, bytes]:
    """The delivered report, and the document the service sent (read where it keeps it)."""
    faxmax.statuses[NUMBER] = ["SUCCESS"]
    bridge = await make_bridge(mail={"report_copy": report_copy},
                               faxmax={"resolution": "normal"})
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", document)))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await relay.wait_for(1)
    [(path,)] = await query(bridge.store.path, "SELECT document_path FROM messages")
    return report.message, await asyncio.to_thread(Path(path).read_bytes)


async def test_the_thumbnail_report_shows_page_1_as_printed_and_the_documents_hash(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    msg, sent = await report_of(make_bridge, faxmax, relay, "thumbnail", drawn_pdf())
    [(cid, picture)] = images(msg).items()
    assert f'src="cid:{cid}"' in html_of(msg)
    assert picture.mode == "1" and picture.width == previews.PREVIEW_WIDTH  # 1-bit, as faxed
    colours = dict((v, n) for n, v in picture.getcolors() or [])
    assert colours.get(0, 0) > 0 and colours.get(255, 0) > 0
    assert attachments(msg) == []
    text = text_of(msg)
    assert f"Document SHA-256: {hashlib.sha256(sent).hexdigest()}" in text
    assert "Remote station: SIM REMOTE" in text  # the push's remote_station_id
    assert "Pages confirmed: 1 of 1" in text
    assert "printed it (normal resolution)" in text


async def test_the_pdf_report_also_attaches_the_document_sent(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    msg, sent = await report_of(make_bridge, faxmax, relay, "pdf", make_pdf(2))
    [(name, ctype, data)] = attachments(msg)
    assert ctype == "application/pdf" and data == sent and name == "fax-job-1.pdf"
    assert len(images(msg)) == 1
    assert hashlib.sha256(data).hexdigest() in text_of(msg)


async def test_the_none_report_carries_no_copy_but_still_the_hash(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    msg, sent = await report_of(make_bridge, faxmax, relay, "none", make_pdf(1))
    assert images(msg) == {} and attachments(msg) == []
    assert "cid:" not in html_of(msg)
    assert hashlib.sha256(sent).hexdigest() in html_of(msg)


async def test_a_failed_fax_with_no_page_through_shows_no_picture(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.rejected_numbers.add(NUMBER)
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.FAILED)
    [report] = await relay.wait_for(1)
    assert images(report.message) == {}


# --- settings -----------------------------------------------------------------------------


def test_routing_formats_refuses_a_key_that_is_no_number_and_an_unknown_format(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[routing.formats]\n"tokyo" = "notice"\n')
    with pytest.raises(ConfigError, match=r"routing\.formats\.tokyo: the key must be a fax"):
        config.load(path, env={})
    path.write_text('[routing.formats]\n"81368680000" = "png"\n')
    with pytest.raises(ConfigError, match=r"must be one of 'pdf', 'tiff', 'both', 'notice'"):
        config.load(path, env={})
    path.write_text('[routing.formats]\n"81368680000" = "notice"\n')
    assert dict(config.load(path, env={}).routing.formats) == {"81368680000": "notice"}
