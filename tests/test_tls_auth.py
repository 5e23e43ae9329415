"""TLS and AUTH on both SMTP sides, with certificates from a throwaway CA (trustme):
- the relay that receives our reports requires STARTTLS and a login;
- our own intake offers AUTH only after STARTTLS, and a user may send only as themselves."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge.config import SmtpUser
from bridge.passwords import hash_password
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state, wait_until


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


class AuthRelay(RelaySink):
    logins: list[str]

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"relay-user", b"relay-pass")
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)


@pytest.fixture
async def tls_relay(server_cert: tuple[Path, Path]) -> AsyncIterator[AuthRelay]:
    sink = AuthRelay()
    sink.logins = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*server_cert)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, tls_context=context, require_starttls=True, auth_required=True,
                     authenticator=sink.authenticate, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    yield sink
    server.close()
    await server.wait_closed()


async def test_reports_go_through_a_relay_that_requires_starttls_and_auth(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tls_relay: AuthRelay, ca_file: Path
) -> None:
    bridge = await make_bridge(via_relay=False, mail={
        "transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": tls_relay.port,
        "smtp_security": "starttls", "smtp_username": "relay-user",
        "smtp_password": "relay-pass", "smtp_ca_file": str(ca_file)})
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await tls_relay.wait_for(1)
    assert report.message["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    assert tls_relay.logins == ["relay-user"]


async def test_a_relay_with_an_untrusted_certificate_is_not_used(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tls_relay: AuthRelay
) -> None:
    bridge = await make_bridge(via_relay=False, mail={
        "transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": tls_relay.port,
        "smtp_security": "starttls", "smtp_username": "relay-user",
        "smtp_password": "relay-pass"})
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    rows: list[Any] = []

    async def last_error() -> bool:
        rows[:] = await query(bridge.store.path, "SELECT state, last_error FROM outbox")
        return bool(rows and rows[0][1])

    await wait_until(last_error, True)
    assert rows[0][0] == "pending"  # kept and retried, never sent in clear or unverified
    assert "CERTIFICATE_VERIFY_FAILED" in rows[0][1]
    assert tls_relay.messages == []


@pytest.fixture
async def auth_bridge(
    make_bridge: MakeBridge, server_cert: tuple[Path, Path]
) -> AsyncIterator[int]:
    user = SmtpUser(name="alice", password_hash=hash_password("alice-pw"),
                    addresses=("alice@example.com",))
    bridge = await make_bridge(smtp={"trusted_networks": (), "tls_cert": str(server_cert[0]),
                                     "tls_key": str(server_cert[1]), "users": (user,)})
    yield bridge.smtp_port


async def client(port: int, ca: trustme.CA) -> aiosmtplib.SMTP:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, tls_context=context,
                           start_tls=False, timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def test_auth_is_not_offered_or_accepted_before_starttls(
    auth_bridge: int, ca: trustme.CA
) -> None:
    smtp = await client(auth_bridge, ca)
    assert not smtp.supports_extension("auth")
    plain = base64.b64encode(b"\0alice\0alice-pw").decode()
    response = await smtp.execute_command(b"AUTH", b"PLAIN", plain.encode())
    assert (response.code, response.message) == (
        538, "5.7.11 Encryption required for requested authentication mechanism")
    with pytest.raises(aiosmtplib.SMTPResponseException) as info:
        await smtp.mail("alice@example.com")
    assert info.value.code == 530
    smtp.close()


async def test_a_user_logs_in_after_starttls_and_may_send_only_as_themselves(
    auth_bridge: int, ca: trustme.CA, faxmax: FaxMaxSimulator
) -> None:
    smtp = await client(auth_bridge, ca)
    await smtp.starttls()
    await smtp.ehlo()
    assert smtp.supports_extension("auth")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
        await smtp.login("alice", "guess")
    assert wrong.value.code == 535
    await smtp.login("alice", "alice-pw")
    with pytest.raises(aiosmtplib.SMTPResponseException) as other:
        await smtp.mail("bob@example.com")
    assert (other.value.code, other.value.message) == (
        550, "5.7.1 <bob@example.com>: user alice may only send as alice@example.com")
    await smtp.mail("alice@example.com")
    await smtp.rcpt("02122222525@fax.local")
    response = await smtp.data(fax_mail(("a.pdf", "application/pdf", make_pdf(1))).as_bytes())
    assert (response.code, response.message) == (250, "2.0.0 queued as fax jobs 1")
    await smtp.quit()
    await faxmax.wait_for_requests(1)


async def test_a_user_may_not_put_another_persons_address_in_from(
    auth_bridge: int, ca: trustme.CA, faxmax: FaxMaxSimulator, tmp_path: Path
) -> None:
    """The From: is printed on the cover page: a logged-in user signs only as themselves. The
    limits count the user, whichever of their addresses the mail comes from."""
    smtp = await client(auth_bridge, ca)
    await smtp.starttls()
    await smtp.ehlo()
    await smtp.login("alice", "alice-pw")
    await smtp.mail("alice@example.com")
    await smtp.rcpt("02122222525@fax.local")
    forged = fax_mail(("a.pdf", "application/pdf", make_pdf(1)), sender="ceo@example.com")
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp.data(forged.as_bytes())
    assert (refused.value.code, refused.value.message) == (
        550, "5.7.1 The From: header names ceo@example.com, but user alice may only send as "
             "alice@example.com (the From: is printed on the fax's cover page)")
    await smtp.mail("alice@example.com")  # the connection goes on
    await smtp.rcpt("02122222525@fax.local")
    response = await smtp.data(fax_mail(("a.pdf", "application/pdf", make_pdf(1))).as_bytes())
    assert (response.code, response.message) == (250, "2.0.0 queued as fax jobs 1")
    await smtp.quit()
    db = tmp_path / "data" / "fax-bridge.sqlite3"
    assert await query(db, "SELECT sender FROM jobs") == [("user:alice",)]


async def test_a_failed_login_logs_neither_the_user_field_nor_the_password(
    auth_bridge: int, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """People type their password into the user field: the log gets its length and a hash
    that only this process can recompute, and the peer; a configured user's name is logged."""
    smtp = await client(auth_bridge, ca)
    await smtp.starttls()
    await smtp.ehlo()
    with caplog.at_level("WARNING", logger="bridge.ingress.smtp"):
        for login in ("S3cret-Passw0rd", "alice"):
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await smtp.login(login, "wrong")
    smtp.close()
    lines = [r.getMessage() for r in caplog.records if "failed AUTH" in r.getMessage()]
    assert "S3cret" not in caplog.text and "wrong" not in caplog.text
    count = r" \([1-4] of 5 failures allowed from 127\.0\.0\.1 in 900 s\)"
    unknown = (r"smtp \('127\.0\.0\.1', \d+\): failed AUTH (PLAIN|LOGIN) for an unknown user "
               r"name \(15 characters, tag [0-9a-f]{8}\)" + count)
    known = r"smtp \('127\.0\.0\.1', \d+\): failed AUTH (PLAIN|LOGIN) for user alice" + count
    assert lines and re.fullmatch(unknown, lines[0]) and re.fullmatch(known, lines[-1]), lines
    assert all(re.fullmatch(unknown, line) or re.fullmatch(known, line) for line in lines)


async def test_s2_commands_sent_with_starttls_are_not_run_inside_tls(
    auth_bridge: int, ca: trustme.CA
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", auth_bridge)
    assert (await reader.readline()).startswith(b"220")
    writer.write(b"EHLO x\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    writer.write(b"STARTTLS\r\nRSET\r\n")  # the RSET rides in the plaintext segment
    assert (await reader.readline()).startswith(b"220")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    await writer.start_tls(context, server_hostname="127.0.0.1")
    writer.write(b"EHLO x\r\n")
    first = await asyncio.wait_for(reader.readline(), 5)
    assert first.startswith(b"250-"), first  # the EHLO answer, not a "250 OK" for the RSET
    writer.close()
