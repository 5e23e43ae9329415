"""Email → fax, end to end: a real SMTP client, the real service, the FaxMAX simulator, and an
SMTP relay sink that receives the delivery reports."""

from __future__ import annotations

import email
import io
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pypdf
import pytest

from bridge.ingress import smtp
from bridge.simulators import Fault, FaxMaxSimulator
from bridge.store import JobState, NewMessage, Store
from tests.docfactory import make_jpeg, make_pdf, make_png, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge, settings_for
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state, wait_until

NUMBER = "902122222525"


def pages_of(document: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(document), strict=True).pages)


@pytest.mark.parametrize("local", [
    "+902122222525", "00902122222525", "02122222525", "0212-222-2525", "0212.222.2525",
    "902122222525",
])
async def test_every_number_form_reaches_faxmax_as_digits_with_country_code(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, local: str
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf",
                                                         make_pdf(1))),
                             rcpts=[f"{local}@fax.local"])
    assert result.rcpts == [(250, f"2.1.5 <{local}@fax.local>: will be faxed to +{NUMBER}")]
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert faxmax.sent_numbers() == [NUMBER]


@pytest.mark.parametrize("in_row", [True, False], ids=["small-in-its-row", "large-spooled"])
async def test_a_mail_is_kept_in_its_row_or_when_large_in_a_spool_file_and_faxed_from_there(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch,
    in_row: bool,
) -> None:
    if not in_row:
        monkeypatch.setattr(smtp, "RAW_IN_ROW_BYTES", 1000)
    bridge = await make_bridge(faxmax={"cover_page": "never"})
    mail = fax_mail(("a.pdf", "application/pdf", make_pdf(3)))
    result = await smtp_send(bridge.smtp_port, mail)
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    [(spool_path, raw)] = await query(bridge.store.path, "SELECT spool_path, raw FROM messages")
    spooled = sorted((Path(bridge.settings.data_dir) / "spool").glob("*.eml"))
    if in_row:
        assert (spool_path, spooled) == ("", [])
        assert b"a.pdf" in raw and raw.endswith(b"\r\n")
    else:
        assert raw is None and spooled == [Path(spool_path)]
        assert b"a.pdf" in spooled[0].read_bytes()
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert pages_of(faxmax.requests[0].document) == 3


async def test_the_request_faxmax_receives_is_exactly_the_documented_one(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(faxmax={"cli": "902160000000", "paper_size": "letter",
                                       "resolution": "superfine", "cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf",
                                                         make_pdf(2))))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await faxmax.wait_for_requests(1)
    request = faxmax.requests[0]
    assert request.filename == "fax-job-1.pdf"
    assert request.content_type == "application/pdf"
    assert pages_of(request.document) == 2
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    data = request.data
    assert data["jsonrpc"] == "2.0" and data["method"] == "Fax.send_fax"
    assert isinstance(data["id"], str) and data["id"]
    assert data["params"] == {
        "token": "sim-token", "token_": "sim-token",
        "phones": [{"phone": NUMBER, "api_id": "1"}],
        "cli": "902160000000", "paper_size": "letter", "resolution": "superfine",
    }


@pytest.mark.parametrize(("attachments", "pages"), [
    ([("scan.pdf", "application/pdf", make_pdf(3))], 3),
    ([("photo.png", "image/png", make_png(800, 600))], 1),
    ([("photo.jpg", "image/jpeg", make_jpeg(800, 600))], 1),
    ([("fax.tif", "image/tiff", make_tiff(2))], 2),
    ([("a.pdf", "application/pdf", make_pdf(2)), ("b.png", "image/png", make_png(300, 300)),
      ("c.tif", "image/tiff", make_tiff(3)), ("d.jpg", "image/jpeg", make_jpeg(300, 400))], 7),
    # the declared type is ignored: content decides
    ([("renamed.bin", "application/octet-stream", make_pdf(1))], 1),
])
async def test_attachments_become_one_valid_pdf_with_the_right_page_count(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
    attachments: list[tuple[str, str, bytes]], pages: int,
) -> None:
    bridge = await make_bridge(faxmax={"cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, fax_mail(*attachments))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await faxmax.wait_for_requests(1)
    assert pages_of(faxmax.requests[0].document) == pages


async def test_each_recipient_is_one_job_and_one_send_call(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf",
                                                         make_pdf(1))),
                             rcpts=["02122222525@fax.local", "03122222222@fax.local",
                                    "+902122222525@fax.local"])
    assert result.rcpts[2] == (250, "2.1.5 <+902122222525@fax.local>: same number as an "
                                    "earlier recipient; faxed once")
    assert result.data == (250, "2.0.0 queued as fax jobs 1, 2")
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    assert sorted(faxmax.sent_numbers()) == [NUMBER, "903122222222"]
    reports = await relay.wait_for(2)
    assert {r.message["Subject"] for r in reports} == {
        "Fax delivered to (0212) 222 25 25: Invoice 42",
        "Fax delivered to (0312) 222 22 22: Invoice 42"}


async def test_503_then_success_sends_exactly_once(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.faults.append(Fault.http(503, "<html>Service Unavailable</html>"))
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert len(faxmax.requests) == 2
    assert faxmax.sent_numbers() == [NUMBER]
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.attempts == 2


async def test_rejected_number_fails_at_once_and_the_sender_is_told_why(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.rejected_numbers.add(NUMBER)
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.FAILED)
    [report] = await relay.wait_for(1)
    msg = report.message
    assert msg["Subject"] == "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Reason: FaxMAX rejected the number 902122222525" in text
    assert len(faxmax.requests) == 1


async def test_status_push_settles_the_job_and_the_report_lands_in_the_senders_thread(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.statuses[NUMBER] = ["QUEUED", "SENDING", "SUCCESS"]
    bridge = await make_bridge()
    mail = fax_mail(("a.pdf", "application/pdf", make_pdf(2)), subject="Contract")
    mail["References"] = "<earlier@example.com>"
    await smtp_send(bridge.smtp_port, mail)
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await relay.wait_for(1)
    assert report.mail_from == "<>"  # the null sender: a bounce of a report cannot loop
    assert report.rcpt_tos == ["alice@example.com"]
    msg = report.message
    assert msg["In-Reply-To"] == "<original-1@example.com>"
    assert msg["References"] == "<earlier@example.com> <original-1@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    installation = bridge.store.installation
    assert re.fullmatch("[0-9a-f]{12}", installation)  # random per database
    assert msg["Message-ID"] == f"<fax-bridge.{installation}.job-1.delivered@localhost>"
    assert msg["Subject"] == "Fax delivered to (0212) 222 25 25: Contract"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Your fax to (0212) 222 25 25 was delivered." in text
    assert "Pages:       2" in text
    assert "Fax status:  delivered (SUCCESS)" in text
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<strong>(0212) 222 25 25</strong> was delivered" in html
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.provider_status == "SUCCESS"


async def test_failed_status_push_reports_the_providers_reason(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.statuses[NUMBER] = ["FAILED"]  # not a busy line, which is dialled again
    faxmax.result_messages[NUMBER] = "Remote machine refused the call"
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.FAILED)
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Reason: Remote machine refused the call" in text


async def test_a_status_push_that_arrives_before_the_send_response_is_applied(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.push_before_response = True
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await relay.wait_for(1)
    assert report.message["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"


async def test_repeated_pushes_are_harmless(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    fax_id = (await bridge.store.jobs.get(1)).fax_id  # type: ignore[union-attr]
    event = {"type": "OUTGOING_FAX", "id": fax_id, "status": "SUCCESS", "cld": NUMBER,
             "result_message": "ok", "page_count": 1}
    for _ in range(3):
        await faxmax.push_events([event])
    failed = dict(event, status="FAILED", result_message="late contradiction")
    await faxmax.push_events([failed])
    await relay.wait_for(1)
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.state is JobState.DELIVERED
    # one report only; the relay has it a moment before the mailer records it sent
    await wait_until(bridge.store.outbox.counts, {"sent": 1})


async def test_no_final_status_within_status_timeout_is_reported_as_no_delivery_report(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.statuses[NUMBER] = ["QUEUED"]
    bridge = await make_bridge(faxmax={"status_timeout": 1})
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.UNKNOWN)
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "no delivery report" in text


async def test_a_job_left_sending_by_a_crash_becomes_unknown_and_is_reported_not_resent(
    tmp_path: Path, make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    settings = settings_for(tmp_path, faxmax.url)
    store = await Store.open(settings.data_path / "fax-bridge.sqlite3")
    [job_id] = await store.jobs.accept(
        NewMessage(mail_from="bob@example.com", header_from="bob@example.com", subject="Crash",
                   message_id="<m@example.com>", refs="", spool_path="/nonexistent"),
        [("02122222525@fax.local", NUMBER)], 1.0)
    message = await store.jobs.message(1)
    assert message is not None
    await store.jobs.converted(1, document_path="/nonexistent.pdf", pages=1,
                                   cover_html=None, left_out=[])
    claimed = await store.jobs.claim(2.0)
    assert claimed is not None and claimed[0].state is JobState.SENDING
    await store.close()  # the process "dies" here, mid-send

    bridge = await make_bridge()
    await wait_for_state(bridge, job_id, JobState.UNKNOWN)
    [report] = await relay.wait_for(1)
    assert report.rcpt_tos == ["bob@example.com"]
    assert report.message["Subject"] == "Fax to (0212) 222 25 25: outcome unknown: Crash"
    assert faxmax.requests == []


async def test_reports_can_be_delivered_into_a_maildir(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tmp_path: Path
) -> None:
    bridge = await make_bridge(via_relay=False)
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 1})
    files = list((tmp_path / "maildir" / "new").iterdir())
    assert len(files) == 1
    msg = email.message_from_bytes(files[0].read_bytes(), policy=default)
    assert msg["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    assert not list((tmp_path / "maildir" / "tmp").iterdir())


async def test_cover_page_from_a_japanese_body_with_signature_and_quote_stripped(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "02122222525@fax.local"
    msg["Subject"] = "見積書の送付"
    msg["Message-ID"] = "<jp@example.com>"
    body = "いつもお世話になっております。\n見積書をお送りします。\n\n-- \n山田太郎\n"
    msg.set_content(body.encode("iso-2022-jp"), maintype="text", subtype="plain",
                    cte="7bit")
    msg.replace_header("Content-Type", 'text/plain; charset="iso-2022-jp"')
    msg.add_attachment(make_pdf(1), maintype="application", subtype="pdf", filename="q.pdf")
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, msg)
    await faxmax.wait_for_requests(1)
    cover = faxmax.requests[0].data["params"]["cover_html"]
    assert "見積書をお送りします。" in cover
    assert "見積書の送付" in cover
    assert "山田太郎" not in cover


async def test_cover_page_is_escaped_and_uses_windows_1254(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    mail = fax_mail(subject="Şubat faturası")
    mail.set_content("Merhaba, <script>alert(1)</script> ekte fatura var. Teşekkürler\n\n"
                     "On Mon, Bob wrote:\n> old text\n", charset="windows-1254")
    mail.add_attachment(make_pdf(1), maintype="application", subtype="pdf", filename="f.pdf")
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, mail)
    await faxmax.wait_for_requests(1)
    cover = faxmax.requests[0].data["params"]["cover_html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; ekte fatura var. Teşekkürler" in cover
    assert "Şubat faturası" in cover
    assert "old text" not in cover and "<script>" not in cover


async def test_no_cover_page_when_the_body_is_only_a_signature(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(("a.pdf", "application/pdf", make_pdf(1)),
                    body="\n-- \nAlice Example\nACME Ltd.\n")
    await smtp_send(bridge.smtp_port, mail)
    await faxmax.wait_for_requests(1)
    assert "cover_html" not in faxmax.requests[0].data["params"]


async def test_inline_signature_logo_is_left_out_and_named_in_the_report(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "02122222525@fax.local"
    msg["Subject"] = "Photo"
    msg["Message-ID"] = "<logo@example.com>"
    msg.set_content("See the photo.")
    msg.add_alternative('<p>See the photo.</p><img src="cid:logo123@example.com">',
                        subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(make_png(120, 40), maintype="image", subtype="png",
                          cid="<logo123@example.com>", filename="logo.png",
                          disposition="inline")
    msg.add_attachment(make_jpeg(640, 480), maintype="image", subtype="jpeg",
                       filename="photo.jpg")
    bridge = await make_bridge(faxmax={"cover_page": "never"})
    result = await smtp_send(bridge.smtp_port, msg)
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await faxmax.wait_for_requests(1)
    assert pages_of(faxmax.requests[0].document) == 1
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "logo.png (an image shown inside the message text)" in text


async def test_a_document_that_fails_after_250_is_reported_to_its_sender(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    broken = make_pdf(1)[:200]  # passes the magic-byte check, fails the real parse
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(("Teklif_Şubat.pdf", "application/pdf",
                                                         broken)))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.FAILED)
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Teklif_Şubat.pdf" in text  # the report names the file exactly (the wire: ASCII)
    assert faxmax.requests == []


async def test_report_ids_stay_across_restarts_and_differ_between_installations(
    tmp_path: Path,
) -> None:
    """A report resent after a crash must repeat its Message-ID; a reinstalled bridge, whose
    job numbers start at 1 again, must not (mail stores drop repeated ids as duplicates)."""
    ids = []
    for name in ("first", "first", "second"):
        store = await Store.open(tmp_path / name / "fax-bridge.sqlite3")
        ids.append(store.installation)
        await store.close()
    assert ids[0] == ids[1] != ids[2]
