"""Every refusal during the SMTP dialogue: the reply code, the words a person reads in their
bounce, and that nothing was queued or sent."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from bridge.app import Bridge
from bridge.ingress import smtp
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf
from tests.limit_words import says_when
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

PDF = ("a.pdf", "application/pdf", make_pdf(1))


async def assert_nothing_queued(bridge: Bridge, faxmax: FaxMaxSimulator) -> None:
    assert await bridge.store.jobs.counts() == {}
    assert await bridge.store.jobs.to_convert() == []
    assert faxmax.requests == []
    assert not any((Path(bridge.settings.data_dir) / "spool").glob("*.eml"))


@pytest.mark.parametrize(("rcpt", "reply"), [
    ("someone@gmail.com", (550, "5.7.1 <someone@gmail.com>: relaying denied: this gateway only "
                                "sends faxes, to NUMBER@fax.local")),
    # aiosmtpd itself refuses a second @ before our handler sees it
    ("02122222525@fax.local@evil.example", (553, "5.1.3 Error: malformed address")),
    ("12ab@fax.local", (550, "5.1.1 <12ab@fax.local>: '12ab' is not a fax number: use digits, "
                             "like 02122222525 or +902122222525")),
    ("0212%evil.example@fax.local",
     (550, "5.1.3 <0212%evil.example@fax.local>: '0212%evil.example' contains '%', which could "
           "route mail elsewhere: only a fax number may stand before the @")),
    ("09001234567@fax.local",
     (550, "5.7.1 <09001234567@fax.local>: '+909001234567' is a premium-rate number (0900); "
           "this gateway does not fax premium-rate numbers")),
    ("+442071234567@fax.local",
     (550, "5.7.1 <+442071234567@fax.local>: '+442071234567' is outside Turkey (+90); ask the "
           "administrator to allow it")),
])
async def test_recipients_are_refused_one_by_one_at_rcpt(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, rcpt: str, reply: tuple[int, str]
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=[rcpt])
    assert result.rcpts == [reply]
    assert result.data is None
    await assert_nothing_queued(bridge, faxmax)


async def test_one_bad_recipient_does_not_stop_the_good_one(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF),
                             rcpts=["x@gmail.com", "02122222525@fax.local"])
    assert [code for code, _ in result.rcpts] == [550, 250]
    assert result.data == (250, "2.0.0 queued as fax jobs 1")


async def test_null_sender_is_refused(make_bridge: MakeBridge, faxmax: FaxMaxSimulator) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), mail_from="")
    assert result.mail == (550, "5.7.1 Mail from the null sender (bounces, auto-replies) is not "
                                "faxed, to avoid mail loops")
    await assert_nothing_queued(bridge, faxmax)


async def test_auto_submitted_mail_is_refused(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(PDF)
    mail["Auto-Submitted"] = "auto-replied"
    result = await smtp_send(bridge.smtp_port, mail)
    assert result.data == (550, "5.7.1 automatically generated mail (Auto-Submitted) is not "
                                "faxed, to avoid mail loops")
    await assert_nothing_queued(bridge, faxmax)


async def test_oversize_is_refused_by_size_and_at_data(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(smtp={"max_message_bytes": 50_000})
    too_big = ("Message too big: this fax gateway accepts mail of at most 50 KB; send fewer or "
               "smaller attachments")
    declared = await smtp_send(bridge.smtp_port, fax_mail(PDF), mail_options=["SIZE=60000"])
    assert declared.mail == (552, f"5.3.4 {too_big}")
    big = fax_mail(("big.pdf", "application/pdf", make_pdf(1) + b"\n%" + b"x" * 60_000))
    undeclared = await smtp_send(bridge.smtp_port, big)
    assert undeclared.data == (552, f"5.3.4 {too_big}")
    await assert_nothing_queued(bridge, faxmax)


FAXES = ("fax-bridge faxes PDF, TIFF, PNG and JPEG files, Office documents (Word, Excel, "
         "PowerPoint, OpenDocument, RTF), HTML and text")


@pytest.mark.parametrize(("attachment", "reply"), [
    (("contract.docx", "application/octet-stream", b"PK\x03\x04" + b"\0" * 200),
     (554, f"5.6.1 'contract.docx' is a ZIP archive; {FAXES}")),
    (("old.doc", "application/msword", bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 200),
     (554, "5.6.1 'old.doc' is a Word, Excel or PowerPoint document, which this fax gateway "
           "cannot convert; save it as PDF (in Word or Excel: File > Save As > PDF) and send the "
           "PDF")),
    (("anim.gif", "image/gif", b"GIF89a" + b"\0" * 100),
     (554, f"5.6.1 'anim.gif' is a GIF image; {FAXES}")),
    (("empty.pdf", "application/pdf", b""),
     (554, "5.6.1 'empty.pdf' is empty")),
])
async def test_unusable_attachments_are_refused_at_data_with_their_names(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, attachment: tuple[str, str, bytes],
    reply: tuple[int, str],
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF, attachment))
    assert result.data == reply
    await assert_nothing_queued(bridge, faxmax)


@pytest.mark.parametrize(("name", "on_the_wire"), [
    ("見積書.docx", "\\u898b\\u7a4d\\u66f8.docx"),  # no ASCII letters: named exactly
    ("Teklif_Şubat.docx", "Teklif_Subat.docx"),  # accents dropped, as a person writes it
])
async def test_a_refusal_naming_a_non_ascii_file_stays_a_refusal(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, name: str, on_the_wire: str,
) -> None:
    """aiosmtpd sends replies in ASCII: the name is made ASCII on the wire. Sent as it was, it
    made the reply unencodable, and the sender got `451 4.3.0 Internal error`, to try again
    later."""
    bridge = await make_bridge()
    archive = (name, "application/octet-stream", b"PK\x03\x04" + b"\0" * 200)
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF, archive))
    assert result.data == (554, f"5.6.1 '{on_the_wire}' is a ZIP archive; {FAXES}")
    await assert_nothing_queued(bridge, faxmax)


async def test_a_mail_with_nothing_to_fax_is_refused(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(body="Please fax this."))
    assert result.data == (554, "5.6.0 there is nothing to fax: this fax gateway faxes "
                                "attachments only, not the text of a mail; attach the document "
                                "to fax (a PDF, for example)")  # no LibreOffice: tests/test_body.py
    await assert_nothing_queued(bridge, faxmax)


async def test_untrusted_clients_must_authenticate(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(smtp={"trusted_networks": ()})
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert result.mail == (530, "5.7.0 Authentication required: log in with your fax-bridge "
                                "user name and password before sending")
    await assert_nothing_queued(bridge, faxmax)


async def test_senders_outside_the_allowlist_are_refused_by_envelope_and_by_from_header(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(smtp={"allowed_senders": ("@example.com",)})
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), mail_from="mallory@evil.example")
    assert result.mail == (550, "5.7.1 <mallory@evil.example> is not allowed to send faxes "
                                "through this gateway")
    spoofed = fax_mail(PDF, sender="mallory@evil.example")
    result = await smtp_send(bridge.smtp_port, spoofed, mail_from="alice@example.com")
    assert result.data == (550, "5.7.1 The From: header must name exactly one sender who is "
                                "allowed to send faxes through this gateway")
    await assert_nothing_queued(bridge, faxmax)
    allowed = await smtp_send(bridge.smtp_port, fax_mail(PDF), mail_from="alice@example.com")
    assert allowed.data == (250, "2.0.0 queued as fax jobs 1")


async def test_too_many_recipients_get_a_temporary_refusal(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(smtp={"max_recipients": 2})
    rcpts = ["02122222521@fax.local", "02122222522@fax.local", "02122222523@fax.local"]
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=rcpts)
    assert result.rcpts[2] == (452, "4.5.3 Too many recipients: at most 2 fax numbers per mail; "
                                    "send the rest in another mail")
    assert result.data == (250, "2.0.0 queued as fax jobs 1, 2")


async def test_per_sender_hourly_limit(make_bridge: MakeBridge, faxmax: FaxMaxSimulator) -> None:
    bridge = await make_bridge(numbers={"max_faxes_per_sender_per_hour": 1})
    first = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert first.data == (250, "2.0.0 queued as fax jobs 1")
    second = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    [refused] = second.rcpts
    assert says_when(refused, 450, "4.7.1 <alice@example.com> has reached the limit of 1 faxes "
                                   "per hour"), refused
    assert await bridge.store.jobs.counts() in ({"queued": 1}, {"sending": 1},
                                               {"submitted": 1}, {"delivered": 1})


async def test_an_internal_error_is_a_temporary_451_without_exception_text(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = await make_bridge()
    monkeypatch.setattr(smtp, "RAW_IN_ROW_BYTES", 0)  # every mail goes to a spool file
    spool = Path(bridge.settings.data_dir) / "spool"
    spool.write_text("not a directory")  # writing the spool file will fail
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert result.data == (451, "4.3.0 Internal error in the fax gateway; please try again later")
    assert await bridge.store.jobs.counts() == {}


@pytest.mark.parametrize("fault", ["spool-unwritable", "spool-unwritable-large", "store-error"])
async def test_after_an_internal_error_the_next_mail_on_the_same_connection_is_accepted(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """A 451 ends the transaction as any reply to DATA does: the client's retry on the same
    connection starts a new one, instead of `503 nested MAIL command`."""
    bridge = await make_bridge()
    spool = Path(bridge.settings.data_dir) / "spool"
    if fault.startswith("spool-unwritable"):
        monkeypatch.setattr(smtp, "RAW_IN_ROW_BYTES", 0)  # every mail goes to a spool file
        spool.write_text("not a directory")  # writing the spool file will fail
    else:
        accept = bridge.store.jobs.accept
        failed: list[bool] = []

        async def fail_once(*args: Any, **kwargs: Any) -> list[int]:
            if not failed:
                failed.append(True)
                raise sqlite3.OperationalError("cannot start a transaction within a "
                                               "transaction")
            return await accept(*args, **kwargs)

        monkeypatch.setattr(bridge.store.jobs, "accept", fail_once)
    # A large mail fails at its first block, and the blocks after it must not be read as
    # commands.
    message = fax_mail(PDF if fault != "spool-unwritable-large"
                       else ("big.pdf", "application/pdf",
                             make_pdf(1) + b"\n%" + b"x" * 300_000)).as_bytes()
    assert fault != "spool-unwritable-large" or len(message) > 4 * 64 * 1024
    replies = []
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.smtp_port,
                               timeout=30) as client:
        for _ in range(2):
            mail = await client.execute_command(b"MAIL", b"FROM:<alice@example.com>")
            rcpt = await client.execute_command(b"RCPT", b"TO:<02122222525@fax.local>")
            try:
                data = await client.data(message)
            except aiosmtplib.SMTPResponseException as exc:
                data = aiosmtplib.SMTPResponse(exc.code, exc.message)
            replies.append((mail.code, rcpt.code, data.code))
            if spool.is_file():
                spool.unlink()  # the disk is writable again for the retry
    assert replies == [(250, 250, 451), (250, 250, 250)]
    await wait_for_state(bridge, 1, JobState.DELIVERED)


async def test_pages_per_sender_per_day(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(numbers={"max_pages_per_sender_per_day": 3},
                               faxmax={"cover_page": "never"})
    two_pages = ("two.pdf", "application/pdf", make_pdf(2))
    first = await smtp_send(bridge.smtp_port, fax_mail(two_pages))
    assert first.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    second = await smtp_send(bridge.smtp_port, fax_mail(two_pages))
    assert second.data == (250, "2.0.0 queued as fax jobs 2")  # pages are known only later
    await wait_for_state(bridge, 2, JobState.FAILED)
    job = await bridge.store.jobs.get(2)
    assert job is not None and says_when(
        (0, job.detail), 0, "this fax has 2 page(s) for 1 number(s); with it <alice@example.com> "
        "would send more than 3 pages in 24 hours (2 already)", then="please send it again"), job
    third = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert third.data == (250, "2.0.0 queued as fax jobs 3")
    await wait_for_state(bridge, 3, JobState.DELIVERED)
    fourth = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    [refused] = fourth.rcpts
    assert says_when(refused, 450, "4.7.1 <alice@example.com> has reached the limit of 3 pages "
                                   "per day"), refused
    assert faxmax.sent_numbers() == ["902122222525", "902122222525"]


async def test_the_gateway_wide_daily_page_cap(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(numbers={"max_pages_per_day": 1}, faxmax={"cover_page": "never"})
    first = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert first.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    other = await smtp_send(bridge.smtp_port, fax_mail(PDF), mail_from="bob@example.com")
    [refused] = other.rcpts
    assert says_when(refused, 451, "4.7.1 The fax gateway has reached its daily page limit"), (
        refused)
    assert len(faxmax.requests) == 1
