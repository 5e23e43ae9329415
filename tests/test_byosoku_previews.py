"""A fax received from 秒速FAX Plus, end to end: polled by the real service from the simulator,
then shown and attached as a FaxMAX push is (`tests/test_previews.py`): page 1 inline, the next
pages as thumbnails, the attachment `routing.formats` chose, in the language
`routing.languages` chose, with numbers written as Japanese readers write them. The PDF the
provider serves is scanned pages, drawn here; a page's number is told by its bars, so each
picture can be checked for the page it shows. Emails are read at the relay sink; pictures and
attachments are opened with Pillow.

OCR of a polled fax in Japanese is tests/test_ocr.py's (`test_a_polled_japanese_fax_...`).
"""

from __future__ import annotations

import datetime
import io
import re
from typing import Any

import img2pdf
import pypdf
import pytest
from PIL import Image, ImageDraw

from bridge import previews
from bridge.app import Bridge
from bridge.clock import SystemClock
from bridge.simulators import ByosokuSimulator
from tests.mail_parts import attachments, html_of, images, text_of
from tests.relay import Received, RelaySink
from tests.rigs import ADMIN, ROUTED
from tests.settings import MakeBridge
from tests.waits import wait_until

RECEIVING = "0368680000"  # as 秒速FAX Plus writes it; routed to tokyo@example.com (ROUTED)
SENDER = "0312345678"
RECEIVED_AT = datetime.datetime(2026, 11, 23, 3, 9)  # Japan time, as the log gives it
SUBJECT = "【FAX受信】03-1234-5678 → 03-6868-0000（{pages}枚）"
A4_AT_200_DPI = (1654, 2339)
BAR, GAP, TOP = 120, 120, 200  # page n carries n bars this tall, this far apart


def scanned_pdf(pages: int) -> bytes:
    """A PDF of scanned A4 pages, as 秒速FAX Plus serves them (images, no text); page n has n
    black bars down its left half, so a picture of it says which page it is."""
    scans = []
    for n in range(1, pages + 1):
        page = Image.new("L", A4_AT_200_DPI, 255)
        draw = ImageDraw.Draw(page)
        for k in range(n):
            y = TOP + k * (BAR + GAP)
            draw.rectangle((150, y, 800, y + BAR), fill=0)
        buffer = io.BytesIO()
        page.save(buffer, format="PNG", dpi=(200, 200))
        scans.append(buffer.getvalue())
    pdf: bytes = img2pdf.convert(scans)
    return pdf


def bars(picture: Image.Image) -> int:
    """How many dark runs a column through the bars crosses: the page's number."""
    grey = picture.convert("L")
    x = round(grey.width * 475 / A4_AT_200_DPI[0])
    dark = [grey.getpixel((x, y)) < 128 for y in range(grey.height)]  # type: ignore[operator]
    return sum(1 for y, d in enumerate(dark) if d and (y == 0 or not dark[y - 1]))


def facts_in_text(text: str) -> dict[str, str]:
    """The indented `label:   value` lines of the plain part."""
    return {m[1]: m[2] for m in re.finditer(r"(?m)^  (\S+):\s+(.+)$", text)}


def facts_in_html(html: str) -> dict[str, str]:
    """The label and value cells of the HTML part's table of facts."""
    return {m[1]: m[2] for m in re.finditer(
        r'<tr><td style="color: #555555[^"]*">([^<]+)</td><td>([^<]+)</td></tr>', html)}


async def polled_fax(make_bridge: MakeBridge, relay: RelaySink, byosoku: ByosokuSimulator,
                     pdf: bytes, pages: int,
                     **routing: dict[str, str]) -> tuple[Bridge, Received, str]:
    """Start the service polling the simulator, which holds one fax to RECEIVING from SENDER;
    wait for its one email. Returns the bridge, the email and the fax's pdfId."""
    byosoku.clock = SystemClock()  # the whole service runs on wall-clock time
    byosoku.log_interval, byosoku.pdf_interval = 0.3, 0.05
    pdf_id = byosoku.add_fax(fax_number=RECEIVING, sender=SENDER, pages=pages, pdf=pdf,
                             received_at=RECEIVED_AT)
    settings: dict[str, Any] = {"numbers": ROUTED, "admin": ADMIN} | routing
    bridge = await make_bridge(
        routing=settings, mail={"timezone": "Asia/Tokyo"},
        byosoku={"enabled": True, "log_url": byosoku.log_url, "pdf_url": byosoku.pdf_url,
                 "poll_interval": 0.3, "pdf_interval": 0.05, "initial_sync": "deliver"})
    [mail] = await relay.wait_for(1)
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 1})
    assert len(relay.messages) == 1 and dict(byosoku.fetched) == {pdf_id: 1}
    assert byosoku.violations == 0
    assert mail.rcpt_tos == ["tokyo@example.com"]
    return bridge, mail, pdf_id


async def test_a_polled_fax_is_shown_in_japanese_with_page_1_and_thumbnails(
    make_bridge: MakeBridge, relay: RelaySink, byosoku: ByosokuSimulator,
) -> None:
    pdf = scanned_pdf(6)
    bridge, mail, _ = await polled_fax(make_bridge, relay, byosoku, pdf, 6,
                                       languages={"81368680000": "ja"})  # the other form
    msg = mail.message
    assert msg["Subject"] == SUBJECT.format(pages=6)
    html, text = html_of(msg), text_of(msg).replace("\r\n", "\n")
    assert '<html lang="ja">' in html and "FAXを受信しました。" in text

    pictures = images(msg)
    shown = re.findall(r'src="cid:([^"]+)"', html)
    assert sorted(shown) == sorted(pictures)  # each picture shown, none remote
    page_1, *thumbnails = (pictures[cid] for cid in shown)
    assert page_1.width == previews.PREVIEW_WIDTH
    width, height = A4_AT_200_DPI
    assert page_1.height == round(previews.PREVIEW_WIDTH * height / width)  # upright, whole
    assert [t.width for t in thumbnails] == [previews.THUMBNAIL_WIDTH] * previews.MAX_THUMBNAILS
    assert [bars(p) for p in (page_1, *thumbnails)] == [1, 2, 3, 4, 5]  # page 6: not shown
    assert 'alt="FAXの1枚目"' in html and 'alt="5枚目"' in html

    facts = {"送信元": "03-1234-5678", "受信番号": "03-6868-0000", "枚数": "6枚",
             "受信日時": "2026年11月23日 03:09", "受信サービス": "秒速FAX Plus"}
    assert facts_in_text(text) == facts
    assert facts_in_html(html) == facts
    assert "このメールのHTML版では、1～5枚目をご覧いただけます。" in text

    [(name, ctype, data)] = attachments(msg)  # the pictures are not attachments
    assert (name, ctype) == ("fax-2026-11-23-0309-from-0312345678.pdf", "application/pdf")
    assert data == pdf  # as 秒速FAX Plus served it
    assert f'<code dir="auto">{name}</code>' in html
    assert f"FAXはこのメールに添付しています（{name}）" in text
    assert await bridge.store.inbound.counts() == {"mailed": 1}


@pytest.mark.parametrize("chosen", ["tiff", "both"])
async def test_routing_formats_tiff_makes_a_fax_tiff_of_the_polled_pdf(
    make_bridge: MakeBridge, relay: RelaySink, byosoku: ByosokuSimulator, chosen: str,
) -> None:
    pdf = scanned_pdf(3)
    _, mail, _ = await polled_fax(make_bridge, relay, byosoku, pdf, 3,
                                  formats={"81368680000": chosen})
    found = attachments(mail.message)
    assert [ctype for _, ctype, _ in found] == (
        ["image/tiff"] if chosen == "tiff" else ["application/pdf", "image/tiff"])
    [(name, _, tiff)] = [a for a in found if a[1] == "image/tiff"]
    assert name == "fax-2026-11-23-0309-from-0312345678.tif"
    with Image.open(io.BytesIO(tiff)) as image:
        assert image.format == "TIFF" and image.info["compression"] == "group4"
        assert image.n_frames == 3  # type: ignore[attr-defined]
        frames = []
        for index in range(3):
            image.seek(index)
            assert image.mode == "1" and image.width == previews.FAX_WIDTH
            frames.append(bars(image))
        assert frames == [1, 2, 3]
    if chosen == "both":
        [pdf_sent] = [data for _, ctype, data in found if ctype == "application/pdf"]
        assert pdf_sent == pdf and len(pypdf.PdfReader(io.BytesIO(pdf_sent)).pages) == 3
    assert [bars(p) for p in images(mail.message).values()] == [1, 2, 3]


async def test_a_notice_number_of_byosoku_gets_only_that_a_fax_arrived_in_japanese(
    make_bridge: MakeBridge, relay: RelaySink, byosoku: ByosokuSimulator,
) -> None:
    bridge, mail, _ = await polled_fax(make_bridge, relay, byosoku, scanned_pdf(2), 2,
                                       formats={RECEIVING: "notice"},
                                       languages={RECEIVING: "ja"})
    msg = mail.message
    assert attachments(msg) == [] and images(msg) == {}
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/alternative", "text/plain", "text/html"]
    assert msg["Subject"] == "【FAX受信】03-6868-0000 宛て"
    html, text = html_of(msg), text_of(msg).replace("\r\n", "\n")
    assert "cid:" not in html and "<img" not in html
    assert "この番号で受信したFAXは、メールに添付しない設定になっています。" in text
    facts = {"受信番号": "03-6868-0000", "受信日時": "2026年11月23日 03:09",
             "受信サービス": "秒速FAX Plus"}
    assert facts_in_text(text) == facts and facts_in_html(html) == facts
    for said in (text, html, msg["Subject"]):  # not who sent it, nor how long it is
        assert "1234-5678" not in said and "枚数" not in said and "2枚" not in said
    assert await bridge.store.inbound.counts() == {"mailed": 1}
