"""Office documents, end to end through a real LibreOffice: a real SMTP client, the service,
the FaxMAX simulator; the documents are made in the tests (tests/officedocs.py)."""

from __future__ import annotations

import asyncio
import email
import io
import os
import signal
from collections.abc import Callable
from email.policy import default
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
    make_odt_with_macro,
    make_rtf,
    make_xlsx,
    protected,
    texts,
)
from tests.process import ServeProcess
from tests.process import start as start_serve
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
    # A page that names its own charset (Shift_JIS), as Japanese mail clients write them: it
    # is read in that charset, and LibreOffice is not misled by its <meta> into a second one.
    mail.add_attachment(f'<html><head><meta charset="shift_jis"><title>Mitsumori</title>'
                        f"</head><body><h1>{JAPANESE}</h1><script>document.write('INJECTED')"
                        "</script></body></html>", subtype="html", charset="shift_jis",
                        filename="sayfa.html")
    await smtp_send(bridge.smtp_port, mail)
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    text_page, html_page = texts(faxmax.requests[0].document)
    assert "Not: Teklif Şubat ığüşöç İstanbul" in text_page  # decoded from windows-1254
    assert JAPANESE in html_page and "INJECTED" not in html_page
    assert "Mitsumori" not in html_page  # the page's head is not its text


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


async def test_a_macro_that_runs_when_its_document_opens_never_runs(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
) -> None:
    """Its Basic macro, bound to the document's open event, writes a file. Seen to run in this
    LibreOffice when it was loaded as a desktop user's LibreOffice with macros allowed would
    load it (MacroExecutionMode 4, macro security low, not hidden); never here."""
    ran = tmp_path / "the-macro-ran"
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "never"})
    await smtp_send(bridge.smtp_port, fax_mail(
        ("macro.odt", "application/vnd.oasis.opendocument.text", make_odt_with_macro(str(ran)))))
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert TURKISH in texts(faxmax.requests[0].document)[0]
    assert not ran.exists()


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
# as soon as it has a document open (a part's file in {documents} among its open files; the
# part's file appearing is too early, LibreOffice may not have it yet, and would be killed
# idle): "hang" stops it dead (SIGSTOP), "crash" kills it (SIGSEGV); "broken" does not start it.
what=$(cat {mode} 2>/dev/null)
if [ "$what" = broken ]; then exit 1; fi
{soffice} "$@" &
office=$!
echo $office > {pids}
if [ -n "$what" ]; then
    (until ls -l /proc/$office/fd 2>/dev/null | grep -q '{documents}/message-.*/part-'; do
         sleep 0.002; done
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


async def test_a_libreoffice_that_cannot_start_holds_back_only_the_mails_that_need_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The machine's trouble, not the document's: nothing is refused, and a PDF sent after
    the Word document is faxed meanwhile."""
    monkeypatch.setattr(converter, "TRANSIENT_PAUSE", 0.5)
    stand_in, mode_file, _ = _stand_in(tmp_path)
    mode_file.write_text("broken")
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, fax_mail(("offer.docx", DOCX, make_docx())))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1)),
                                               message_id="<pdf@example.com>"))
    await wait_for_state(bridge, 2, JobState.DELIVERED, timeout=30)
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.state is JobState.QUEUED
    assert await query(bridge.store.path, "SELECT state FROM messages WHERE id = 1") == [
        ("received",)]
    mode_file.unlink()
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert TURKISH in texts(faxmax.requests[-1].document)[0]


async def test_mails_that_need_libreoffice_wait_for_it_across_a_start_without_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
) -> None:
    """Accepted while it was there, they are not failed when the next start has none: they
    wait, the admin is told, and a start with LibreOffice again converts them."""
    stand_in, mode_file, _ = _stand_in(tmp_path)
    mode_file.write_text("broken")
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"},
                               routing={"admin": "admin@example.com"})
    await smtp_send(bridge.smtp_port, fax_mail(("offer.docx", DOCX, make_docx())))
    await bridge.stop()
    bridge = await make_bridge(documents={"office": "off"},
                               routing={"admin": "admin@example.com"})

    async def told() -> bool:
        rows = await query(bridge.store.path, "SELECT body FROM outbox")
        subjects = [str(email.message_from_bytes(body, policy=default)["Subject"])
                    for (body,) in rows]
        return any("1 mail waits for LibreOffice" in subject for subject in subjects)

    await wait_until(told, True)
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.state is JobState.QUEUED
    await bridge.stop()
    mode_file.unlink()
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"})
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)


async def test_a_libreoffice_that_died_while_idle_is_replaced_and_the_document_converted(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
) -> None:
    """Killed between documents (the kernel's OOM killer, an operator): not the next
    document's fault."""
    stand_in, _, pids = _stand_in(tmp_path)
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"})
    assert bridge.pipeline is not None and bridge.pipeline.office is not None
    office_ = bridge.pipeline.office
    await wait_until(lambda: asyncio.sleep(0, office_.warm), True, timeout=30)
    idle = int(pids.read_text())
    os.kill(idle, signal.SIGKILL)
    await wait_until(lambda: asyncio.sleep(0, _alive(idle)), False)
    await smtp_send(bridge.smtp_port, fax_mail(("offer.docx", DOCX, make_docx())))
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert int(pids.read_text()) != idle


async def test_a_stopped_service_leaves_no_libreoffice_profile_pipe_or_process(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path,
) -> None:
    stand_in, _, pids = _stand_in(tmp_path)
    stale = tmp_path / "data" / "office" / "libreoffice-left-by-a-killed-service"
    stale.mkdir(parents=True)
    bridge = await make_bridge(documents={"office": "auto", "libreoffice": str(stand_in)},
                               faxmax={"cover_page": "never"})
    await smtp_send(bridge.smtp_port, fax_mail(("offer.docx", DOCX, make_docx())))
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert bridge.pipeline is not None and bridge.pipeline.office is not None
    running = bridge.pipeline.office._running  # what it left in /tmp, to look for after
    assert running is not None and running.sockets
    office_pid = int(pids.read_text())
    assert not stale.exists()  # swept before LibreOffice's start
    await bridge.stop()
    assert list((tmp_path / "data" / "office").iterdir()) == []
    assert not any(socket.exists() for socket in running.sockets)
    assert not _alive(office_pid)


async def test_libreoffice_dies_with_a_service_killed_outright(
    serve: list[ServeProcess], faxmax: FaxMaxSimulator, relay: RelaySink, tmp_path: Path,
) -> None:
    """SIGKILL runs no cleanup: LibreOffice and its driver go with their parent
    (PR_SET_PDEATHSIG)."""
    process = await start_serve(serve, tmp_path, faxmax, relay, documents={"office": "auto"})
    await wait_until(lambda: asyncio.sleep(0, "LibreOffice started" in process.log()), True,
                     timeout=30)
    found = _processes_using(tmp_path)
    assert any("soffice.bin" in command for command in found.values())
    await process.kill()
    await wait_until(lambda: asyncio.sleep(0, [p for p in found if _alive(p)]), [])


def _processes_using(directory: Path) -> dict[int, str]:
    """Processes whose command line names `directory` (LibreOffice's profile is in it)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in command:
                found[int(entry.name)] = command
    return found
