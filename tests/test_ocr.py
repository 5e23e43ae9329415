"""Searchable received faxes (`documents.ocr`): fax images with Turkish and Japanese text, drawn
here, pushed by the FaxMAX simulator or polled from the 秒速FAX Plus one through the real
service with the real OCRmyPDF and Tesseract; the email's excerpt and the PDF's text layer are
read as a mail reader would. A missing Tesseract and an OCR that overruns its time still
deliver the fax, once, without a text layer."""

from __future__ import annotations

import io
import os
import shutil
import stat
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pypdf
import pytest
from PIL import Image, ImageDraw, ImageFont

from bridge import documents, ocr
from bridge.app import Bridge
from bridge.clock import FakeClock, SystemClock
from bridge.simulators import ByosokuSimulator, FaxMaxSimulator
from tests.cli_runner import run_cli
from tests.relay import RelaySink
from tests.rigs import ADMIN, ROUTED
from tests.settings import MakeBridge

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Noto CJK has no ş, ğ, ı
TURKISH = ("FATURA BİLGİSİ", "Sayın İlkay Doğan,", "teşekkür ederiz. Işık ağacı")
JAPANESE = ("請求書のお知らせ", "東京都千代田区", "ありがとうございます")
ROUTING: dict[str, Any] = {"numbers": ROUTED | {"0368680000": ("tokyo@example.com",)},
                           "admin": ADMIN}

pytestmark = pytest.mark.skipif(
    not isinstance(ocr.find(("eng", "jpn", "tur")), ocr.Reader),
    reason="needs ocrmypdf and tesseract-ocr with jpn, tur and eng (deploy/debian-packages.sh)")


def fax_tiff(lines: tuple[str, ...], font: str, pages: int = 1) -> bytes:
    """A fine-resolution G4 fax page (1728 dots wide, 204 x 196 dpi) with `lines` typed on it
    at about 17 points; further pages carry only a page number."""
    face = ImageFont.truetype(font, 48)
    frames = []
    for page in range(pages):
        image = Image.new("1", (1728, 2200), 1)
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(lines if page == 0 else (f"Page {page + 1}",)):
            draw.text((120, 150 + 100 * n), line, font=face, fill=0)
        frames.append(image)
    out = io.BytesIO()
    frames[0].save(out, format="TIFF", compression="group4", dpi=(204, 196), save_all=True,
                   append_images=frames[1:])
    return out.getvalue()


def attached_pdf(msg: EmailMessage) -> bytes:
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def text_layer(pdf: bytes) -> str:
    """The PDF's text as a reader's search sees it, without the spaces Tesseract puts between
    Japanese characters."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "".join("".join(page.extract_text().split()) for page in reader.pages)


def parts(msg: EmailMessage) -> tuple[str, str]:
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    crlf = (plain.get_content(), html.get_content())
    return crlf[0].replace("\r\n", "\n"), crlf[1].replace("\r\n", "\n")


def path_with(tmp_path: Path, **programs: str) -> str:
    """A PATH of one directory holding `programs`: a name to the real program's path, or to a
    script's text (starting with #!)."""
    where = tmp_path / "bin"
    where.mkdir()
    for name, what in programs.items():
        if what.startswith("#!"):
            (where / name).write_text(what)
            (where / name).chmod(stat.S_IRWXU)
        else:
            (where / name).symlink_to(what)
    return str(where)


def found(bridge: Bridge) -> ocr.Reader | ocr.Missing:
    assert bridge.pipeline is not None
    return bridge.pipeline.ocr_availability


def real(program: str) -> str:
    found = shutil.which(program)
    assert found is not None
    return found


# --- the excerpt ---------------------------------------------------------------------------


def test_the_excerpt_is_page_ones_first_three_lines_with_japanese_rejoined() -> None:
    sidecar = "\n  請求 書 の お 知ら せ \n\n東京 都\tABC 12\n\n third  line \nfourth\n\fpage two"
    assert ocr.excerpt(sidecar) == "請求書のお知らせ\n東京都 ABC 12\nthird line"
    assert ocr.excerpt("\n \n\fonly page two") == ""
    assert ocr.excerpt("[OCR skipped on page(s) 1]\n\f") == ""  # it had text already
    long = ocr.excerpt("x" * 500)
    assert len(long) == ocr.EXCERPT_CHARS and long.endswith("…")


@pytest.mark.parametrize(("config", "programs", "said"), [
    ("", ("ocrmypdf", "tesseract"), "available: OCRmyPDF "),
    ("[documents]\nocr = 'off'\n", ("ocrmypdf", "tesseract"),
     'not available: documents.ocr is "off"'),
    ("", ("ocrmypdf",), "not available: Tesseract is not installed (no tesseract on PATH); "
                        "install ocrmypdf, tesseract-ocr and tesseract-ocr-LANG"),
    ("", ("tesseract",), "not available: OCRmyPDF is not installed"),
    ("[byosoku]\nenabled = true\nlog_url = 'https://a.example/log'\n"
     "pdf_url = 'https://a.example/pdf'\nocr_languages = 'jpn+kor'\n", ("ocrmypdf", "tesseract"),
     "not available: Tesseract has no data for kor; install tesseract-ocr-kor"),
], ids=["found", "off", "no-tesseract", "no-ocrmypdf", "no-language"])
def test_check_config_says_whether_received_faxes_are_ocrd(
    tmp_path: Path, config: str, programs: tuple[str, ...], said: str,
) -> None:
    path = tmp_path / "fax-bridge.toml"
    path.write_text(config)
    search = path_with(tmp_path, **{name: real(name) for name in programs})
    result = run_cli("check-config", "-c", str(path), env={"PATH": search})
    assert result.returncode == 0, result.stderr
    assert f"# OCR of received faxes (documents.ocr): {said}" in result.stdout


# --- through the service -------------------------------------------------------------------


async def test_a_pushed_turkish_fax_has_its_words_in_the_email_and_the_pdf(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING, documents={"ocr": "auto"})
    assert isinstance(found(bridge), ocr.Reader)
    await faxmax.push_incoming(tiff=fax_tiff(TURKISH, LATIN_FONT, pages=2),
                               cld="902121110000", cli="903125550000")
    [mail] = await relay.wait_for(1)
    plain, html = parts(mail.message)
    assert "It begins:\n\n  FATURA BİLGİSİ\n  Sayın İlkay Doğan,\n  teşekkür ederiz." in plain
    assert "Sayın İlkay Doğan," in html and "teşekkür ederiz. Işık ağacı" in html
    pdf = attached_pdf(mail.message)
    assert len(pypdf.PdfReader(io.BytesIO(pdf)).pages) == 2
    layer = text_layer(pdf)
    for word in ("Sayın", "İlkay", "Doğan", "teşekkür", "Işık", "ağacı", "Page2"):
        assert word in layer
    assert mail.message["Subject"].endswith("(2 pages)")
    assert await bridge.store.inbound.counts() == {"mailed": 1}
    assert len(relay.messages) == 1


async def test_a_polled_japanese_fax_is_read_in_japanese(
    make_bridge: MakeBridge, relay: RelaySink, clock: FakeClock, byosoku: ByosokuSimulator,
) -> None:
    """秒速FAX Plus gives PDFs of the scanned pages, without text: read with `jpn+eng`."""
    byosoku.clock = SystemClock()  # the whole service runs on wall-clock time
    byosoku.log_interval, byosoku.pdf_interval = 0.3, 0.05
    scanned, _ = documents.tiff_to_pdf("the fax", fax_tiff(JAPANESE, CJK_FONT))
    byosoku.add_fax(fax_number="0368680000", sender="0312345678", pdf=scanned)
    await make_bridge(routing=ROUTING, documents={"ocr": "auto"}, mail={"timezone": "Asia/Tokyo"},
                      byosoku={"enabled": True, "log_url": byosoku.log_url,
                               "pdf_url": byosoku.pdf_url, "poll_interval": 0.3,
                               "pdf_interval": 0.05, "initial_sync": "deliver"})
    [mail] = await relay.wait_for(1)
    assert mail.rcpt_tos == ["tokyo@example.com"]
    plain, html = parts(mail.message)
    assert "  請求書のお知らせ\n  東京都千代田区\n" in plain
    assert "請求書のお知らせ" in html
    layer = text_layer(attached_pdf(mail.message))
    for word in JAPANESE:
        assert word in layer
    assert text_layer(scanned) == ""


async def test_without_tesseract_the_fax_is_mailed_once_without_a_text_layer(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("PATH", path_with(tmp_path, ocrmypdf=real("ocrmypdf")))
    bridge = await make_bridge(routing=ROUTING, documents={"ocr": "auto"})
    assert found(bridge).describe().startswith("not available: Tesseract is not installed")
    assert bridge.pipeline is not None and bridge.pipeline.inbox.ocr is None
    await faxmax.push_incoming(tiff=fax_tiff(TURKISH, LATIN_FONT), cld="902121110000")
    [mail] = await relay.wait_for(1)
    plain, _ = parts(mail.message)
    assert "It begins" not in plain and "Sayın" not in plain
    assert text_layer(attached_pdf(mail.message)) == ""
    assert await bridge.store.inbound.counts() == {"mailed": 1}
    assert len(relay.messages) == 1


async def test_an_ocr_past_its_timeout_is_killed_and_the_fax_mailed_without_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A stand-in OCRmyPDF that answers the availability check but never finishes a fax."""
    pid_file = tmp_path / "stand-in.pid"
    monkeypatch.setenv("PATH", path_with(
        tmp_path, tesseract=real("tesseract"),
        ocrmypdf=f"#!/bin/sh\necho $$ > {pid_file}\nexec {real('sleep')} 600\n"))
    bridge = await make_bridge(routing=ROUTING, documents={"ocr": "auto", "ocr_timeout": 0.5})
    assert isinstance(found(bridge), ocr.Reader)
    await faxmax.push_incoming(tiff=fax_tiff(TURKISH, LATIN_FONT), cld="902121110000")
    [mail] = await relay.wait_for(1)
    plain, _ = parts(mail.message)
    assert "It begins" not in plain
    assert text_layer(attached_pdf(mail.message)) == ""
    assert await bridge.store.inbound.counts() == {"mailed": 1}
    assert len(relay.messages) == 1
    stand_in = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed with its group, and reaped
        os.kill(stand_in, 0)
    [line] = [r.getMessage() for r in caplog.records if "no text layer" in r.getMessage()]
    assert line.startswith("fax 1: no text layer, mailed without one: OCR took longer than "
                           "documents.ocr_timeout (0.5 s)")
