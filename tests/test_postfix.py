"""A real Postfix in front of and behind the bridge, configured as the operator configures it.

Why: the bridge is meant to run behind Postfix (deploy/postfix/), and what matters there is
the behaviour of the pair, which no simulator shows: that Postfix routes fax.local to the bridge
and relays its reports back into the users' mailboxes, that Postfix (not the bridge) decides
who may send to fax numbers, and that the bridge's refusals reach the sender in Postfix's
bounce. Each test starts its own Postfix (tests/postfix.py) whose main.cf is the shipped
`deploy/postfix/main.cf` plus test-only lines, and a bridge configured from the shipped
`deploy/postfix/fax-bridge.toml` with only ports, directories and the simulator's address
changed. Mail is submitted with `sendmail` and `swaks`, and checked where a user would see it:
in the Maildirs Postfix delivers to. Every wait is a poll with a deadline; the whole file takes
a few seconds. Skipped only where Postfix is not installed or the tests do not run as root.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path

import pypdf
import pytest

from bridge import config
from bridge.app import Bridge
from bridge.config import Settings
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.postfix import SHIPPED, PostfixInstance, private_postfix, reserved_port, skip_reason
from tests.settings import PUSH_TOKEN
from tests.waits import wait_for_state, wait_until

ALICE = "alice@example.com"
OFFICE = "office@example.com"
FAX = "02122222525@fax.local"
NUMBER = "902122222525"
PDF = ("invoice.pdf", "application/pdf", make_pdf(1))


def shipped_settings(tmp_path: Path, faxmax_url: str, postfix_port: int) -> Settings:
    """deploy/postfix/fax-bridge.toml with secrets from the environment, as in production;
    only what a test machine needs is changed: ports, directories, the simulator, fast
    retries."""
    s = config.load(SHIPPED / "fax-bridge.toml",
                    env={"FAX_BRIDGE_FAXMAX__TOKEN": "sim-token",
                         "FAX_BRIDGE_HTTP__PUSH_TOKEN": PUSH_TOKEN})
    assert (s.mail.transport, s.mail.smtp_host, s.mail.smtp_port, s.mail.smtp_security) == (
        "smtp", "127.0.0.1", 25, "none")
    assert (s.smtp.listen, s.smtp.trusted_networks) == ("127.0.0.1:2525", ("127.0.0.1/32",))
    return replace(
        s,
        data_dir=str(tmp_path / "data"),
        smtp=replace(s.smtp, listen="127.0.0.1:0"),
        http=replace(s.http, listen="127.0.0.1:0"),
        faxmax=replace(s.faxmax, url=faxmax_url, retry_base=0.05, retry_cap=0.2, timeout=5),
        mail=replace(s.mail, smtp_port=postfix_port, smtp_timeout=5, retry_base=0.05,
                     retry_cap=0.2),
    )


@dataclass
class Stack:
    bridge: Bridge
    postfix: PostfixInstance
    faxmax: FaxMaxSimulator


@pytest.fixture
async def stack(tmp_path: Path, faxmax: FaxMaxSimulator) -> AsyncIterator[Stack]:
    """The bridge behind a private Postfix: Postfix's smtpd port is chosen first (the bridge
    relays to it), then the bridge starts, then Postfix starts with fax.local routed to the
    bridge's port."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with reserved_port() as postfix_port:
        bridge = Bridge(shipped_settings(tmp_path, faxmax.url, postfix_port))
        await bridge.start()
    try:
        faxmax.push_url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
        async with private_postfix(fax_bridge_port=bridge.smtp_port,
                                   smtpd_port=postfix_port) as postfix:
            yield Stack(bridge, postfix, faxmax)
            postfix.assert_clean_log()  # no warnings: the shipped main.cf is used as it is
    finally:
        await bridge.stop()


def text_of(msg: EmailMessage) -> str:
    """Every text part, whitespace folded to single spaces (Postfix may wrap long lines)."""
    texts = []
    for part in msg.walk():
        payload = part.get_payload(decode=True) if part.get_content_maintype() == "text" else None
        if isinstance(payload, bytes):
            texts.append(payload.decode(errors="replace"))
    return " ".join(" ".join(texts).split())


def pdf_attachment(msg: EmailMessage) -> tuple[str, bytes]:
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename() or "", payload


def pages_of(document: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(document), strict=True).pages)


async def assert_faxed_and_reported(stack: Stack, message_id: str) -> None:
    """The fax reached FaxMAX as a PDF for the number, and the delivery report came back
    through Postfix into alice's Maildir, in the thread of her mail."""
    await stack.faxmax.wait_for_requests(1, timeout=15)
    [request] = stack.faxmax.requests
    assert request.data["params"]["phones"] == [{"phone": NUMBER, "api_id": "1"}]
    assert request.content_type == "application/pdf"
    assert request.document.startswith(b"%PDF-") and pages_of(request.document) == 1
    assert stack.faxmax.sent_numbers() == [NUMBER]
    # Postfix logged the bridge's own answer to the hand-over.
    await stack.postfix.wait_for_log(
        rf"to=<{re.escape(FAX)}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:{stack.bridge.smtp_port},"
        r".* status=sent \(250 2\.0\.0 queued as fax jobs 1\)")
    await wait_for_state(stack.bridge, 1, JobState.DELIVERED, timeout=15)

    [report] = await stack.postfix.wait_for_mail(ALICE)
    assert report["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    assert report["In-Reply-To"] == message_id
    assert report["Return-Path"] == "<>"  # sent from the null sender, as the bridge does
    assert "(unknown [127.0.0.1])" in report["Received"]  # relayed by Postfix's smtpd
    assert "delivered" in text_of(report).lower()
    await wait_until(stack.bridge.store.outbox.counts, {"sent": 1})


# --- 1. email → fax, through Postfix, and the report back ------------------------------------


async def test_a_mail_from_sendmail_goes_through_postfix_to_faxmax_and_the_report_comes_back(
    stack: Stack,
) -> None:
    msg = fax_mail(PDF, message_id="<via-sendmail@example.com>")
    await stack.postfix.sendmail(msg.as_bytes(), sender=ALICE, recipients=[FAX])
    await assert_faxed_and_reported(stack, "<via-sendmail@example.com>")


async def test_a_mail_over_smtp_from_a_local_client_goes_through_postfix_to_faxmax(
    stack: Stack,
) -> None:
    msg = fax_mail(PDF, message_id="<via-smtp@example.com>")
    result = await stack.postfix.swaks(msg.as_bytes(), sender=ALICE, recipients=[FAX])
    assert result.returncode == 0, result.output
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as \w+", result.output), result.output
    await assert_faxed_and_reported(stack, "<via-smtp@example.com>")


# --- 2. fax → email: a received fax lands in the routed mailbox through Postfix -------------


async def test_a_received_fax_is_relayed_by_postfix_into_the_routed_mailbox(
    stack: Stack,
) -> None:
    # deploy/postfix/fax-bridge.toml routes +90 212 111 00 00 to office@example.com.
    await stack.faxmax.push_incoming(tiff=make_tiff(2), cld="902121110000",
                                     cli="903125550000")
    [mail] = await stack.postfix.wait_for_mail(OFFICE)
    assert mail["Subject"] == "Fax from (0312) 555 00 00 to (0212) 111 00 00 (2 pages)"
    assert mail["From"] == "Fax Bridge <fax-bridge@example.com>"
    assert mail["Return-Path"] == "<fax-bridge@example.com>"
    filename, document = pdf_attachment(mail)
    assert filename.startswith("fax-") and filename.endswith("-from-903125550000.pdf")
    assert document.startswith(b"%PDF-") and pages_of(document) == 2
    await wait_until(stack.bridge.store.inbound.counts, {"mailed": 1})
    assert stack.postfix.maildir(ALICE) == []  # routed, not broadcast


# --- 3. Postfix decides who may send to fax.local ----------------------------------------


async def test_a_client_outside_mynetworks_without_login_is_refused_by_postfix_at_rcpt(
    stack: Stack,
) -> None:
    # 127.0.0.2 is not in the test instance's mynetworks (127.0.0.1/32) and does not log in:
    # a stranger. It may still mail a user here; only the fax number is refused.
    msg = fax_mail(PDF, to=f"{ALICE}, {FAX}", message_id="<stranger@example.com>")
    result = await stack.postfix.swaks(msg.as_bytes(), sender=ALICE,
                                       recipients=[ALICE, FAX], source="127.0.0.2")
    refusal = (f"554 5.7.1 <{FAX}>: Recipient address rejected: Access denied")
    assert f"<** {refusal}" in result.output, result.output
    assert re.search(r"<-  250 2\.0\.0 Ok: queued as \w+", result.output), result.output
    await stack.postfix.wait_for_log(
        rf"reject: RCPT from unknown\[127\.0\.0\.2\]: {re.escape(refusal)};")

    # The mail was accepted for alice and has been fully processed (it is in her Maildir);
    # the fax number never reached the bridge.
    [delivered] = await stack.postfix.wait_for_mail(ALICE)
    assert delivered["Message-ID"] == "<stranger@example.com>"
    assert "Mail queue is empty" in await stack.postfix.queue()
    assert f":{stack.bridge.smtp_port}," not in stack.postfix.log()
    assert await stack.bridge.store.jobs.counts() == {}
    assert stack.faxmax.calls == 0 and stack.faxmax.requests == []


# --- 4. the bridge's refusal reaches the sender in Postfix's bounce -----------------------


async def test_a_number_the_bridge_refuses_at_rcpt_is_bounced_by_postfix_with_its_words(
    stack: Stack,
) -> None:
    premium, garbage = "09001234567@fax.local", "12ab@fax.local"
    msg = fax_mail(PDF, to=f"{premium}, {garbage}", message_id="<bad-numbers@example.com>")
    await stack.postfix.sendmail(msg.as_bytes(), sender=ALICE, recipients=[premium, garbage])

    [bounce] = await stack.postfix.wait_for_mail(ALICE)
    assert bounce["Subject"] == "Undelivered Mail Returned to Sender"
    assert bounce.get_content_type() == "multipart/report"
    text = text_of(bounce)
    for reply in (
        f"550 5.7.1 <{premium}>: '+909001234567' is a premium-rate number (0900); this "
        "gateway does not fax premium-rate numbers",
        f"550 5.1.1 <{garbage}>: '12ab' is not a fax number: use digits, like 02122222525 or "
        "+902122222525",
    ):
        assert f"host 127.0.0.1[127.0.0.1] said: {reply} (in reply to RCPT TO command)" in \
            text, f"{reply!r} not in the bounce:\n{text}\n{stack.postfix.log_excerpt()}"
    assert "<bad-numbers@example.com>" in bounce.as_string()  # the original is returned
    assert await stack.bridge.store.jobs.counts() == {}
    assert stack.faxmax.calls == 0
