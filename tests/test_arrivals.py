"""Conversions give way to arriving mail and pushes: held back while they keep coming, started
once they pause, and never held longer than `max_hold`."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib

from bridge.ingress.arrivals import Arrivals
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import PUSH_TOKEN, MakeBridge
from tests.smtp_client import smtp_send


async def settling_time(arrivals: Arrivals) -> float:
    started = time.monotonic()
    await arrivals.settled()
    return time.monotonic() - started


async def test_with_nothing_arriving_work_starts_at_once() -> None:
    assert await settling_time(Arrivals(quiet=0.5, max_hold=5)) < 0.25


async def test_after_an_arrival_work_waits_for_the_quiet_time() -> None:
    arrivals = Arrivals(quiet=0.3, max_hold=5)
    arrivals.note()
    assert 0.25 <= await settling_time(arrivals) < 2


async def test_while_a_client_waits_for_an_answer_work_waits_and_then_the_quiet_time() -> None:
    arrivals = Arrivals(quiet=0.2, max_hold=5)

    async def answer() -> None:
        with arrivals.answering():
            await asyncio.sleep(0.5)  # longer than `quiet`: a slow check, a commit in a queue

    task = asyncio.create_task(answer())
    await asyncio.sleep(0)
    assert 0.6 <= await settling_time(arrivals) < 2.5
    await task
    with arrivals.answering():  # and no longer than `max_hold`
        arrivals.max_hold = 0.3
        assert 0.25 <= await settling_time(arrivals) < 2


async def test_a_lull_is_waited_for_however_long_clients_wait_for_answers() -> None:
    """Upkeep (a sandbox child's successor) waits for a real pause; `max_hold` is not for it."""
    arrivals = Arrivals(quiet=0.1, max_hold=0.2)
    with arrivals.answering():
        lull = asyncio.create_task(arrivals.lull())
        await asyncio.sleep(0.6)
        assert not lull.done()
    started = time.monotonic()
    await asyncio.wait_for(lull, 5)
    assert time.monotonic() - started >= 0.05  # and then the quiet time


async def test_a_stream_that_never_pauses_holds_work_back_no_longer_than_max_hold() -> None:
    arrivals = Arrivals(quiet=0.2, max_hold=0.6)
    streaming = True

    async def stream() -> None:
        while streaming:
            arrivals.note()
            await asyncio.sleep(0.02)

    arrivals.note()
    task = asyncio.create_task(stream())
    try:
        held = await settling_time(arrivals)
    finally:
        streaming = False
        await task
    assert 0.55 <= held < 1.5


async def test_mail_arriving_holds_its_conversion_back_until_the_stream_pauses(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge()
    bridge.arrivals.quiet, bridge.arrivals.max_hold = 1.5, 30
    for n in range(4):  # a mail every 0.1 s or so: none is converted meanwhile
        result = await smtp_send(bridge.smtp_port, fax_mail(
            ("invoice.pdf", "application/pdf", make_pdf(1)), message_id=f"<stream-{n}@x>"))
        assert result.data is not None and result.data[0] == 250
        assert len(await bridge.store.jobs.to_convert()) == n + 1
        await asyncio.sleep(0.1)
    last = time.monotonic()
    await faxmax.wait_for_requests(4, timeout=20)  # then all of them, and their faxes go out
    assert time.monotonic() - last >= 1.3  # not before the stream had paused
    assert not await bridge.store.jobs.to_convert()
    assert len(faxmax.sent_numbers()) == 4  # each once
    assert (await bridge.store.jobs.counts()).get(JobState.QUEUED, 0) == 0


async def test_pushes_arriving_hold_the_faxes_emails_back_until_they_pause(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing={"default": ("frontdesk@example.com",)})
    bridge.arrivals.quiet, bridge.arrivals.max_hold = 1.5, 30
    for n in range(4):
        await faxmax.push_incoming(tiff=make_tiff(1), cld="902121110000", fax_id=f"stream-{n}")
        await asyncio.sleep(0.1)
    last = time.monotonic()
    assert not relay.messages  # none mailed while they kept coming
    await relay.wait_for(4, timeout=20)
    assert time.monotonic() - last >= 1.3


async def test_a_mail_or_a_push_on_its_way_counts_as_arriving(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """Their start counts, not only their answer: a conversion that could wait no longer slows
    a stream, the gaps between answers widen past `quiet`, and that must not pass for a
    pause."""
    bridge = await make_bridge()
    bridge.arrivals.quiet, bridge.arrivals.max_hold = 0.5, 30
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.smtp_port, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await asyncio.sleep(0.6)  # connecting is not yet a mail
        assert await settling_time(bridge.arrivals) < 0.25
        await client.mail("alice@example.com")
        assert await settling_time(bridge.arrivals) >= 0.4
    finally:
        client.close()
    await asyncio.sleep(0.6)
    _, writer = await asyncio.open_connection("127.0.0.1", bridge.http_port)
    try:  # a push whose body is still on its way
        writer.write(f"POST /faxmax/push/{PUSH_TOKEN} HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[".encode())
        await writer.drain()
        await asyncio.sleep(0.1)
        assert await settling_time(bridge.arrivals) >= 0.4
    finally:
        writer.close()
