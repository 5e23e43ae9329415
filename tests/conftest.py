"""Shared fixtures: real servers on 127.0.0.1, port 0, awaited until ready (no sleeps).

- `faxmax`: the FaxMAX simulator, recording every request and push.
- `relay`: an aiosmtpd sink that plays the outgoing SMTP relay and records what it got.
- `make_bridge`: starts the real service (SMTP + HTTP + workers) against both.
"""

from __future__ import annotations

import asyncio
import email
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.app import Bridge
from bridge.config import Settings
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.process import ServeProcess

PUSH_TOKEN = "test-push-token-0123456789"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class RelaySink:
    """An SMTP relay that records every message, or refuses with `refuse_with`."""

    messages: list[Received] = field(default_factory=list)
    refuse_with: str | None = None
    port: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        assert isinstance(envelope.content, bytes)
        self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos),
                                      envelope.content))
        self.arrived.set()
        return "250 2.0.0 OK"

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"relay got {len(self.messages)} messages, wanted {n}")
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                continue
        return self.messages


@pytest.fixture
async def relay() -> AsyncIterator[RelaySink]:
    sink = RelaySink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(sink, loop=loop), "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    yield sink
    server.close()
    await server.wait_closed()


@pytest.fixture
async def faxmax() -> AsyncIterator[FaxMaxSimulator]:
    sim = FaxMaxSimulator(token="sim-token", push_delay=0.01, push_retry_interval=0.05)
    await sim.start()
    yield sim
    await sim.stop()


def settings_for(tmp_path: Path, faxmax_url: str, relay_port: int | None = None,
                 **sections: dict[str, Any]) -> Settings:
    """Test settings: loopback everything, fast retries, trusted loopback senders."""
    base = Settings()
    mail = replace(base.mail, maildir=str(tmp_path / "maildir"), retry_base=0.05,
                   retry_cap=0.2, timezone="Europe/Istanbul")
    if relay_port is not None:
        mail = replace(mail, transport="smtp", smtp_host="127.0.0.1", smtp_port=relay_port,
                       smtp_security="none", smtp_timeout=5)
    settings = replace(
        base,
        data_dir=str(tmp_path / "data"),
        smtp=replace(base.smtp, listen="127.0.0.1:0", trusted_networks=("127.0.0.0/8",)),
        http=replace(base.http, listen="127.0.0.1:0", push_token=PUSH_TOKEN),
        faxmax=replace(base.faxmax, enabled=True, url=faxmax_url, token="sim-token",
                       retry_base=0.05, retry_cap=0.2, timeout=5),
        mail=mail,
    )
    for name, values in sections.items():
        settings = replace(settings, **{name: replace(getattr(settings, name), **values)})
    return settings


MakeBridge = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def make_bridge(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
) -> AsyncIterator[MakeBridge]:
    """Start the real service; `via_relay=True` delivers mail to the relay sink instead of
    the Maildir. Every bridge started is stopped at the end of the test."""
    started: list[Bridge] = []

    async def make(*, via_relay: bool = True, **sections: dict[str, Any]) -> Bridge:
        settings = settings_for(tmp_path, faxmax.url, relay.port if via_relay else None,
                                **sections)
        bridge = Bridge(settings)
        await bridge.start()
        started.append(bridge)
        faxmax.push_url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
        return bridge

    yield make
    for bridge in started:
        if bridge.workers and not all(w._stopping for w in bridge.workers):
            await bridge.stop()


@dataclass
class SmtpResult:
    mail: tuple[int, str]
    rcpts: list[tuple[int, str]]
    data: tuple[int, str] | None


async def smtp_send(
    port: int, message: bytes | EmailMessage, *, mail_from: str = "alice@example.com",
    rcpts: list[str] | None = None, mail_options: list[str] | None = None,
) -> SmtpResult:
    """Speak SMTP the way a mail client does, and return every reply."""
    if isinstance(message, EmailMessage):
        message = message.as_bytes()
    rcpts = rcpts or ["02122222525@fax.local"]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await client.connect()
    try:
        await client.ehlo()
        try:
            r = await client.mail(mail_from, options=mail_options or [])
            mail = (r.code, r.message)
        except aiosmtplib.SMTPResponseException as exc:
            return SmtpResult((exc.code, exc.message), [], None)
        replies = []
        for rcpt in rcpts:
            try:
                r = await client.rcpt(rcpt)
                replies.append((r.code, r.message))
            except aiosmtplib.SMTPResponseException as exc:
                replies.append((exc.code, exc.message))
        if not any(code == 250 for code, _ in replies):
            return SmtpResult(mail, replies, None)
        try:
            r = await client.data(message)
            data = (r.code, r.message)
        except aiosmtplib.SMTPResponseException as exc:
            data = (exc.code, exc.message)
        return SmtpResult(mail, replies, data)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


def fax_mail(
    *attachments: tuple[str, str, bytes], body: str = "", subject: str = "Invoice 42",
    to: str = "02122222525@fax.local", sender: str = "alice@example.com",
    message_id: str = "<original-1@example.com>",
) -> EmailMessage:
    """A mail as a client writes it: (filename, mime type, data) attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(body or "\n")
    for filename, mimetype, data in attachments:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


async def wait_until(read: Callable[[], Awaitable[Any]], wanted: Any,
                     timeout: float = 10.0) -> None:
    """Re-read a value from the store until it equals `wanted`: the workers act in the
    background, and the store is the truth about what they did."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, wanted {wanted!r}")
        await asyncio.sleep(0.02)


async def wait_for_state(bridge: Bridge, job_id: int, *states: JobState,
                         timeout: float = 10.0) -> JobState:
    async def state() -> JobState | None:
        job = await bridge.store.jobs.get(job_id)
        return job.state if job is not None and job.state in states else None

    deadline = time.monotonic() + timeout
    while (found := await state()) is None:
        if time.monotonic() > deadline:
            job = await bridge.store.jobs.get(job_id)
            raise AssertionError(f"job {job_id} is {job and job.state}, wanted {states}")
        await asyncio.sleep(0.02)
    return found


# --- the real `fax-bridge serve` process ---------------------------------------------------


@pytest.fixture
async def serve(tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
                ) -> AsyncIterator[list[ServeProcess]]:
    """Processes the test starts; each is stopped at the end."""
    started: list[ServeProcess] = []
    yield started
    for process in started:
        if process.running():
            await process.kill()


async def start(started: list[ServeProcess], tmp_path: Path, sim: FaxMaxSimulator,
                relay: RelaySink, /, *, shutdown_timeout: float = 30,
                **sections: dict[str, object]) -> ServeProcess:
    settings = settings_for(tmp_path, sim.url, relay.port, **sections)
    process = ServeProcess(replace(settings, shutdown_timeout=shutdown_timeout), tmp_path)
    started.append(process)
    await process.start()
    sim.push_url = process.push_url
    return process


def job_states(process: ServeProcess) -> list[str]:
    return [str(state) for (state,) in process.query("SELECT state FROM jobs ORDER BY id")]
