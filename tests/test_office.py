"""Office documents, end to end through a real LibreOffice: a real SMTP client, the service,
the FaxMAX simulator; the documents are made in the tests (tests/officedocs.py)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import pypdf
import pytest

from bridge import office
from bridge.config import DocumentsSettings
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from bridge.workers import converter
from tests.cli_runner import run_cli
from tests.docfactory import make_jpeg, make_pdf
from tests.mails import fax_mail
from tests.officedocs import (
    JAPANESE,
    TURKISH,
    make_docx,
    make_odt,
    make_rtf,
    make_xlsx,
    protected,
    texts,
)
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state, wait_until

pytestmark = pytest.mark.timeout(180)
LIBREOFFICE = office.availability(DocumentsSettings())
OFFICE_ON = {"office": "auto"}
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def test_libreoffice_is_installed_here() -> None:
    """Every test below needs it; CI installs it (.ci/run)."""
    assert isinstance(LIBREOFFICE, office.Office), LIBREOFFICE.describe()


@pytest.mark.parametrize(("documents", "said"), [
    ("", "available: LibreOffice "),
    ("office = 'off'", 'not available: documents.office is "off"'),
    ("libreoffice = '/nowhere/soffice'", "not available: LibreOffice is not installed (no "
                                         "soffice /nowhere/soffice); install libreoffice-"),
], ids=["found", "off", "missing"])
def test_check_config_says_whether_office_documents_convert(
    tmp_path: Path, documents: str, said: str,
) -> None:
    path = tmp_path / "fax-bridge.toml"
    path.write_text(f"[documents]\n{documents}\n")
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert f"# office conversion (documents.office): {said}" in result.stdout


async def test_what_runs_in_the_converters_namespace_cannot_reach_even_loopback(
    listener: tuple[int, list[bytes]],
) -> None:
    """The namespace alone stops a connection, whatever the profile's settings would do."""
    assert isinstance(LIBREOFFICE, office.Office)
    port, seen = listener
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
    process = await asyncio.create_subprocess_exec(
        *LIBREOFFICE.isolate, LIBREOFFICE.python, "-c", connect,
        stderr=asyncio.subprocess.PIPE)
    _, error = await process.communicate()
    assert process.returncode != 0
    assert b"Network is unreachable" in error or b"Connection refused" in error
    direct = await asyncio.open_connection("127.0.0.1", port)  # the listener does listen
    direct[1].close()
    await wait_until(lambda: asyncio.sleep(0, len(seen)), 1)


@pytest.mark.parametrize(("name", "mimetype", "make", "pages"), [
    ("Teklif_Şubat.docx", DOCX, lambda: make_docx(pages=3), 3),
    ("見積書.xlsx", XLSX, lambda: make_xlsx(sheets=2, rows=20, columns=30), 2),
    ("Teklif.odt", "application/vnd.oasis.opendocument.text", make_odt, 1),
    ("Teklif.rtf", "application/rtf", make_rtf, 1),
], ids=["docx", "xlsx", "odt", "rtf"])
async def test_an_office_document_reaches_faxmax_as_one_pdf_with_its_words_and_pages(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, name: str, mimetype: str,
    make: Callable[[], bytes], pages: int,
) -> None:
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, fax_mail((name, mimetype, make())))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    [request] = faxmax.requests
    found = texts(request.document)
    assert len(found) == pages
    for page in found:  # each page (each sheet, for the workbook) carries the words
        assert TURKISH in page and JAPANESE in page, page


async def test_a_sheet_wider_than_a_page_is_scaled_to_its_width_not_cut_into_columns(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    """60 columns are several pages wide at 100 %: every column is on the one page."""
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    await smtp_send(bridge.smtp_port,
                    fax_mail(("wide.xlsx", XLSX, make_xlsx(rows=10, columns=60))))
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    [page] = texts(faxmax.requests[0].document)
    assert "R10C1" in page and "R10C60" in page


async def test_pdf_docx_and_jpeg_become_pages_in_mail_order(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    await smtp_send(bridge.smtp_port, fax_mail(
        ("a.pdf", "application/pdf", make_pdf(2, width=300, height=400)),
        ("b.docx", DOCX, make_docx(pages=1)),
        ("c.jpg", "image/jpeg", make_jpeg(800, 600, dpi=(200, 200)))))
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    reader = pypdf.PdfReader(io.BytesIO(faxmax.requests[0].document))
    sizes = [(round(float(p.mediabox.width)), round(float(p.mediabox.height)))
             for p in reader.pages]
    assert sizes[:2] == [(300, 400), (300, 400)]  # the PDF's own pages first
    assert TURKISH in " ".join(reader.pages[2].extract_text().split())  # then the document
    assert sizes[3] == (288, 216)  # then the photo: 800 x 600 px at 200 dpi
    assert len(sizes) == 4


async def test_text_and_html_attachments_become_pages(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    mail = fax_mail()
    mail.add_attachment(f"Not: {TURKISH}\n", subtype="plain", charset="windows-1254",
                        cte="quoted-printable", filename="not.txt")
    mail.add_attachment(f"<html><body><h1>{JAPANESE}</h1><script>document.write('INJECTED')"
                        "</script></body></html>".encode(), maintype="text", subtype="html",
                        filename="sayfa.html")
    await smtp_send(bridge.smtp_port, mail)
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    text_page, html_page = texts(faxmax.requests[0].document)
    assert "Not: Teklif Şubat ığüşöç İstanbul" in text_page  # decoded from windows-1254
    assert JAPANESE in html_page and "INJECTED" not in html_page


async def test_what_a_document_or_an_html_file_links_to_is_never_fetched(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, listener: tuple[int, list[bytes]],
) -> None:
    """LibreOffice itself fetches a linked picture (seen here without the namespace: an
    OPTIONS request from "LibreOffice 7.4"); converted, it makes no connection at all."""
    port, seen = listener
    url = f"http://127.0.0.1:{port}/logo.png"
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    mail = fax_mail(("linked.docx", DOCX, make_docx(linked_image=url)))
    mail.add_attachment(f'<html><body><p>{TURKISH}</p><img src="{url}">'
                        f'<div style="background-image: url({url}x)">x</div>'
                        f'<link rel="stylesheet" href="{url}.css"></body></html>'.encode(),
                        maintype="text", subtype="html", filename="page.html")
    await smtp_send(bridge.smtp_port, mail)
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    found = texts(faxmax.requests[0].document)
    assert TURKISH in found[0] and TURKISH in found[-1]
    assert seen == []


@pytest.mark.parametrize(("name", "mimetype", "document"), [
    ("Gizli_Şubat.docx", DOCX, lambda: protected(make_docx())),
    ("秘密.pdf", "application/pdf", lambda: _protected_pdf()),
], ids=["docx", "pdf"])
async def test_a_password_protected_document_is_refused_naming_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, name: str,
    mimetype: str, document: Callable[[], bytes],
) -> None:
    bridge = await make_bridge(documents=OFFICE_ON)
    await smtp_send(bridge.smtp_port, fax_mail((name, mimetype, document())))
    await wait_for_state(bridge, 1, JobState.FAILED, timeout=60)
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"'{name}' is password-protected" in text
    assert faxmax.requests == []


def _protected_pdf() -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf(1))))
    writer.encrypt("gizli")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


async def test_without_libreoffice_an_office_file_is_refused_saying_what_to_send(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge(documents={"office": "off"})
    result = await smtp_send(bridge.smtp_port,
                             fax_mail(("Teklif_Şubat.docx", DOCX, make_docx())))
    assert result.data == (554, "5.6.1 'Teklif_Subat.docx' is a Word, Excel or PowerPoint "
                                "document, which this fax gateway cannot convert; save it as "
                                "PDF (in Word or Excel: File > Save As > PDF) and send the PDF")
    assert faxmax.requests == []


STAND_IN = """#!/bin/sh
# Stands in for soffice.bin: starts the real one, and while {mode} names a mode, does that to it
# as soon as a document is given to it (its file appears in {documents}): "hang" stops it dead
# (SIGSTOP), "crash" kills it (SIGSEGV); "broken" does not start it at all.
what=$(cat {mode} 2>/dev/null)
if [ "$what" = broken ]; then exit 1; fi
{soffice} "$@" &
office=$!
echo $office > {pids}
if [ -n "$what" ]; then
    (until ls {documents}/message-*/part-* >/dev/null 2>&1; do sleep 0.01; done
     if [ "$what" = hang ]; then kill -STOP $office; else kill -SEGV $office; fi) &
fi
wait $office
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _stand_in(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The stand-in, the file naming its mode, and the file it writes LibreOffice's pid to."""
    assert isinstance(LIBREOFFICE, office.Office)
    mode, pids = tmp_path / "mode", tmp_path / "office.pid"
    stand_in = tmp_path / "soffice.bin"
    stand_in.write_text(STAND_IN.format(mode=mode, pids=pids, soffice=LIBREOFFICE.soffice,
                                        documents=tmp_path / "data" / "documents"))
    stand_in.chmod(0o755)
    return stand_in, mode, pids


@pytest.mark.parametrize(("mode", "said"), [
    ("hang", "reading 'bad.docx' took longer than 10 seconds"),
    ("crash", "converting 'bad.docx' stopped LibreOffice"),
])
async def test_a_converter_that_hangs_or_crashes_costs_one_refusal_and_the_next_mail_converts(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, tmp_path: Path,
    mode: str, said: str,
) -> None:
    """Killed with its whole process group: LibreOffice (stopped dead, for a hang) too."""
    stand_in, mode_file, pids = _stand_in(tmp_path)
    mode_file.write_text(mode)
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in),
                                          "timeout": 10}, faxmax={"cover_page": "never"})
    assert bridge.pipeline is not None and bridge.pipeline.office is not None
    converter_ = bridge.pipeline.office
    await wait_until(lambda: asyncio.sleep(0, converter_.warm), True, timeout=30)
    await smtp_send(bridge.smtp_port, fax_mail(("bad.docx", DOCX, make_docx())))
    await wait_for_state(bridge, 1, JobState.FAILED, timeout=40)
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert said in text
    first = int(pids.read_text())
    await wait_until(lambda: asyncio.sleep(0, _alive(first)), False)
    mode_file.unlink()
    await smtp_send(bridge.smtp_port, fax_mail(("next.docx", DOCX, make_docx(pages=2)),
                                               message_id="<next@example.com>"))
    await wait_for_state(bridge, 2, JobState.DELIVERED, timeout=60)
    assert len(texts(faxmax.requests[0].document)) == 2
    assert int(pids.read_text()) != first  # a new LibreOffice


async def test_a_libreoffice_that_cannot_start_keeps_the_mail_queued_until_it_can(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine's trouble, not the document's: nothing is refused."""
    monkeypatch.setattr(converter, "TRANSIENT_PAUSE", 0.2)
    stand_in, mode_file, _ = _stand_in(tmp_path)
    mode_file.write_text("broken")
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, fax_mail(("offer.docx", DOCX, make_docx())))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    async def failed_to_start() -> bool:  # counted as the machine's failure, the mail kept
        rows = await query(bridge.store.path, "SELECT last_error FROM failures WHERE queue = ?",
                           ("convert",))
        return any("LibreOffice did not start" in error for (error,) in rows)

    await wait_until(failed_to_start, True, timeout=30)
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.state is JobState.QUEUED
    mode_file.unlink()
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert TURKISH in texts(faxmax.requests[0].document)[0]
