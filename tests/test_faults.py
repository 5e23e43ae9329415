"""Provider and relay faults (docs/RELIABILITY.md F5, F6, F7, F9), alert throttling, and the
秒速FAX Plus poller limits (L4).

Each fault is checked for the three things an operator relies on: the retry schedule (exactly
what `retry_base`, `retry_cap`, `max_attempts` and `retry_max_age` promise, and never a tight
loop), the final state in the store, and the words a person gets. Schedules are driven on a
fake clock through the real workers, clients, store and simulators, so hours of retries take
milliseconds and every time can be asserted exactly. The tests where wiring matters (a restart,
the CLI, SMTP intake while FaxMAX is slow) run the real in-process service instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email
import itertools
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.clock import FakeClock
from bridge.mail import Envelope as MailEnvelope
from bridge.mail import SmtpTransport
from bridge.simulators import ByosokuFault, ByosokuSimulator, Fault, FaxMaxSimulator
from bridge.store import InboundState, JobState, MailState
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.rigs import ADMIN, NUMBER, PollerRig, outbound_rig, poller_rig, run_workers
from tests.settings import MakeBridge, settings_for
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state, wait_until

HOUR = 3600.0
DAY = 86_400.0
RETRY = re.compile(r"retry (?:(\d+) )?in (\d+)s")


# --- shared helpers --------------------------------------------------------------------------


@contextlib.contextmanager
def refusing_port() -> Iterator[socket.socket]:
    """A loopback port that is bound but not listening: a connection to it is refused before
    anything is sent, and no other process can take the port meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def plain_text(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def html_text(msg: EmailMessage) -> str:
    body = msg.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def parse(text: str) -> EmailMessage:
    msg = email.message_from_string(text, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


def offsets(times: Sequence[float]) -> list[float]:
    """Times relative to the first one, rounded to the millisecond."""
    return [round(t - times[0], 3) for t in times]


def per_minute(times: Sequence[float], start: float) -> dict[int, int]:
    """How many calls fell into each simulated minute after `start` (minutes with none left
    out): the figure that shows a loop is not tight."""
    return dict(sorted(collections.Counter(int((t - start) // 60) for t in times).items()))


def min_gap(times: Sequence[float]) -> float:
    return min(b - a for a, b in itertools.pairwise(times))


def retries_logged(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int | None, int]]:
    """The (attempt, seconds) of every "retry [N] in Xs" line a worker logged."""
    found = []
    for record in caplog.records:
        if record.name == logger and (m := RETRY.search(record.getMessage())):
            found.append((int(m[1]) if m[1] else None, int(m[2])))
    return found


# --- F5: FaxMAX faults -----------------------------------------------------------------------

# retry_base 30 s, retry_cap 600 s, jitter 0: delays 15, 30, 60, 120, 240, then capped at 300.
SCHEDULE = {"retry_base": 30.0, "retry_cap": 600.0, "max_attempts": 8, "retry_max_age": 86_400}
EIGHT_ATTEMPTS = [0, 15, 45, 105, 225, 465, 765, 1065]


@pytest.mark.parametrize(("fault", "max_age", "expected", "why"), [
    pytest.param(Fault.http(502), DAY, EIGHT_ATTEMPTS,
                 "FaxMAX is temporarily unavailable (HTTP 502)", id="502"),
    pytest.param(Fault.http(503), DAY, EIGHT_ATTEMPTS,
                 "FaxMAX is temporarily unavailable (HTTP 503)", id="503"),
    pytest.param(Fault.http(504), DAY, EIGHT_ATTEMPTS,
                 "FaxMAX is temporarily unavailable (HTTP 504)", id="504"),
    pytest.param(None, DAY, EIGHT_ATTEMPTS, "cannot connect to FaxMAX: ",
                 id="connection-refused"),
    # The age bound ends it first: the 7th attempt would be 765 s after the first.
    pytest.param(Fault.http(503), 600.0, EIGHT_ATTEMPTS[:6],
                 "FaxMAX is temporarily unavailable (HTTP 503)", id="503-until-max-age"),
])
async def test_f5_transient_faxmax_faults_are_retried_on_the_schedule_then_fail_with_words(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink,
    caplog: pytest.LogCaptureFixture, fault: Fault | None, max_age: float,
    expected: list[float], why: str,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.workers.sender")
    if fault:  # more faults than attempts: a surplus call would fail too, and be counted
        faxmax.faults.extend([fault] * 20)
    with refusing_port() as closed:
        url = faxmax.url if fault else f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1"
        async with outbound_rig(tmp_path, clock, url, relay.port,
                                faxmax={**SCHEDULE, "retry_max_age": max_age}) as rig:
            job_id = await rig.queue_fax()
            await rig.run_for(DAY)
            calls = list(rig.client.calls)
            state, attempts, detail = await rig.job_state(job_id)
            await rig.run_for(DAY)  # given up means given up: no call ever after
            assert rig.client.calls == calls

    n = len(expected)
    assert offsets(calls) == expected, f"calls per minute: {per_minute(calls, calls[0])}"
    assert max(per_minute(calls, calls[0]).values()) <= 3
    assert retries_logged(caplog, "bridge.workers.sender") == [
        (attempt + 1, int(b - a)) for attempt, (a, b)
        in enumerate(itertools.pairwise(expected), start=1)]
    assert f"job {job_id}: giving up after {n} attempt(s)" in caplog.text
    assert (state, attempts) == (JobState.FAILED, n)
    assert detail.startswith(f"FaxMAX could not be reached after {n} attempt(s); last error: "
                             + why)
    assert len(faxmax.requests) == (n if fault else 0)
    assert faxmax.faxes == []
    [report] = relay.messages
    msg = report.message
    assert msg["Subject"] == "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    text = plain_text(msg)
    assert "Your fax to (0212) 222 25 25 could NOT be delivered." in text
    assert f"Reason: FaxMAX could not be reached after {n} attempt(s); last error: {why}" in text


async def test_f5_an_invalid_number_fails_at_once_with_the_providers_reason(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    faxmax.faults.append(Fault.jsonrpc_error(
        -32602, "Invalid params: 902122222525 is not a valid fax number"))
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port, faxmax=SCHEDULE) as rig:
        job_id = await rig.queue_fax()
        await rig.run_for(HOUR)
        assert await rig.job_state(job_id) == (
            JobState.FAILED, 1,
            "FaxMAX refused the fax: Invalid params: 902122222525 is not a valid fax number")
        assert len(rig.client.calls) == 1
    assert len(faxmax.requests) == 1 and faxmax.faxes == []
    [report] = relay.messages
    assert report.message["Subject"] == "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    assert ("Reason: FaxMAX refused the fax: Invalid params: 902122222525 is not a valid fax "
            "number") in plain_text(report.message)


async def test_f5_faxes_failing_for_the_operator_alert_the_admin_once(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """A refused token fails every fax until a person fixes it; senders learn of their own
    fax, the admin learns of the cause, once (throttled), not once per fax."""
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port,
                            faxmax={**SCHEDULE, "token": "revoked-token"},
                            routing={"admin": ADMIN}) as rig:
        jobs = [await rig.queue_fax() for _ in range(3)]
        await rig.run_for(HOUR)
        for job_id in jobs:
            state, _, detail = await rig.job_state(job_id)
            assert (state, detail) == (JobState.FAILED, "FaxMAX refused the fax: Invalid token")
    alerts = [m.message for m in relay.messages if m.rcpt_tos == [ADMIN]]
    assert [m["Subject"] for m in alerts] == [
        "[fax-bridge] FaxMAX refuses our credentials: no fax can be sent"]
    assert "FaxMAX refused the fax: Invalid token" in plain_text(alerts[0])
    assert len(relay.messages) == 3 + 1  # one report per sender, one alert


async def test_f5_a_fax_given_up_because_faxmax_is_unreachable_alerts_the_admin(
    tmp_path: Path, clock: FakeClock, relay: RelaySink
) -> None:
    with refusing_port() as closed:
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api/v1"
        async with outbound_rig(tmp_path, clock, url, relay.port, faxmax=SCHEDULE,
                                routing={"admin": ADMIN}) as rig:
            await rig.queue_fax()
            await rig.run_for(DAY)
    [alert] = [m.message for m in relay.messages if m.rcpt_tos == [ADMIN]]
    assert alert["Subject"] == "[fax-bridge] faxes fail because FaxMAX could not be reached"
    assert "was given up after 8 attempts; last error: cannot connect to FaxMAX" in (
        plain_text(alert))


@pytest.mark.parametrize(("fault", "timeout", "why"), [
    pytest.param(Fault.http(500, "Internal Server Error"), 5.0,
                 "FaxMAX answered HTTP 500 after receiving the fax, so it may or may not have "
                 "been sent", id="http-500"),
    pytest.param(Fault.malformed_json(took_effect=True), 5.0,
                 "FaxMAX's answer was not readable JSON, so it is unknown whether the fax was "
                 "accepted", id="malformed-json"),
    pytest.param(Fault.stall(10), 0.8,
                 "FaxMAX did not answer within 0.8 seconds after receiving the fax",
                 id="stall-past-timeout"),
    pytest.param(Fault.reset(), 5.0, "the connection to FaxMAX broke after the fax was sent (",
                 id="reset-after-sending"),
])
async def test_f5_an_unknown_outcome_is_sent_once_and_the_sender_told_it_was_not_resent(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink,
    fault: Fault, timeout: float, why: str,
) -> None:
    faxmax.faults.append(fault)
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port,
                            faxmax={**SCHEDULE, "timeout": timeout}) as rig:
        job_id = await rig.queue_fax()
        await rig.run_for(DAY)
        state, attempts, detail = await rig.job_state(job_id)
        assert (state, attempts) == (JobState.UNKNOWN, 1)
        assert detail.startswith(why)
        assert len(rig.client.calls) == 1
    assert len(faxmax.requests) == 1  # sent exactly once, in a whole day
    [report] = relay.messages
    msg = report.message
    assert msg["Subject"] == "Fax to (0212) 222 25 25: outcome unknown: Invoice 42"
    text = plain_text(msg)
    assert ("fax-bridge cannot tell whether your fax to (0212) 222 25 25 reached the "
            "recipient.") in text
    assert f"Why: {why}" in text
    assert "It was NOT sent again automatically" in text


async def test_a_queue_that_is_never_idle_still_reports_no_delivery_report(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """The status deadline of a submitted fax is kept while other faxes keep the sender busy."""
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port,
                            faxmax={**SCHEDULE, "status_timeout": 100,
                                    # every fax goes to one number: none waits for its line
                                    "per_number_concurrency": 100}) as rig:
        first = await rig.queue_fax()  # FaxMAX takes it and never pushes its status
        assert await rig.sender.run_once()
        assert (await rig.job_state(first))[0] is JobState.SUBMITTED
        for _ in range(10):
            await rig.queue_fax()
        for _ in range(6):  # a fax every 30 s: never idle
            clock.advance(30)
            assert await rig.sender.run_once()
        state, _, detail = await rig.job_state(first)
        assert (state, detail) == (JobState.UNKNOWN, "no delivery report: FaxMAX accepted the "
                                   "fax but never said whether it was delivered")
        assert len(await rig.store.jobs.latest(JobState.QUEUED)) == 4  # still busy


async def test_f5_a_document_that_cannot_be_read_at_send_time_fails_and_is_never_sent(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """Nothing was sent, so nothing is unknown: the job fails, and says why."""
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port, faxmax=SCHEDULE) as rig:
        job_id = await rig.queue_fax()
        (tmp_path / "fax.pdf").unlink()  # removed by hand, or a disk gone bad
        await rig.run_for(DAY)
        state, attempts, detail = await rig.job_state(job_id)
    assert (state, attempts) == (JobState.FAILED, 1)
    assert detail.startswith("the fax document or its cover page could not be read, so it "
                             "was not sent (FileNotFoundError: ")
    assert faxmax.calls == 0
    [report] = relay.messages
    assert report.message["Subject"] == "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    assert f"Reason: {detail}" in plain_text(report.message)


# --- F6: 秒速FAX Plus errors, and alert throttling ------------------------------------------


@dataclass(frozen=True)
class ByosokuCase:
    """One provider error for an hour: which call gets it, and what must follow."""

    log_fault: ByosokuFault | None = None  # answered to every log call of the hour
    pdf_busy: int = 0  # PDF calls answered 503 ERR_SERVER_BUSY before it is served
    pdf_deleted: bool = False  # every PDF call answered ERR_NO_PDF
    pdf_offsets: list[float] = field(default_factory=list)
    state: InboundState | None = None  # of the one fax in the log
    alert: str | None = None  # words of the one admin alert, or no alert


@pytest.mark.parametrize("case", [
    pytest.param(ByosokuCase(log_fault=ByosokuFault.error(400, "ERR_ACCESS_INTERVAL"),
                             alert="秒速FAX Plus polling has failed 5 times in a row"),
                 id="log-400-ERR_ACCESS_INTERVAL"),
    pytest.param(ByosokuCase(log_fault=ByosokuFault.error(400, "ERR_NO_DATA"),
                             alert="秒速FAX Plus cannot find the account (ERR_NO_DATA)"),
                 id="log-400-ERR_NO_DATA"),
    pytest.param(ByosokuCase(log_fault=ByosokuFault.error(403),
                             alert="IP address is not registered with 秒速FAX Plus"),
                 id="log-403"),
    pytest.param(ByosokuCase(log_fault=ByosokuFault.error(404),
                             alert="URLs in the configuration are wrong (HTTP 404)"),
                 id="log-404"),
    # Backoff (retry_base 30 s, jitter 0): 15, 30, 60, 120, 240, 480 s, then served.
    pytest.param(ByosokuCase(pdf_busy=6, pdf_offsets=[0, 15, 45, 105, 225, 465, 945],
                             state=InboundState.MAILED),
                 id="pdf-503-ERR_SERVER_BUSY"),
    # pdf_attempts 5: the fifth ERR_NO_PDF gives up.
    pytest.param(ByosokuCase(pdf_deleted=True, pdf_offsets=[0, 15, 45, 105, 225],
                             state=InboundState.FAILED,
                             alert="a received fax could not be downloaded from 秒速FAX Plus"),
                 id="pdf-ERR_NO_PDF"),
])
async def test_f6_each_byosoku_error_for_an_hour_keeps_the_spacing_and_reaches_a_person(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator, case: ByosokuCase
) -> None:
    pdf_id = byosoku.add_fax(fax_number="0368680000", sender="0311112222")
    if case.log_fault:
        byosoku.log_faults.extend([case.log_fault] * 100)
    byosoku.pdf_faults.extend([ByosokuFault.error(503, "ERR_SERVER_BUSY")] * case.pdf_busy)
    if case.pdf_deleted:
        byosoku.delete_pdf(pdf_id)
    start = clock.now()
    async with poller_rig(tmp_path, byosoku, clock,
                          initial_sync="deliver") as (rig, poller, inbox):
        await run_workers(clock, HOUR, poller, inbox)
        faxes = await rig.store.inbound.all()
        alerts = [parse(a) for a in await rig.alerts()]

    log_minute = per_minute(byosoku.log_calls, start)
    pdf_times = [t for t, _, _ in byosoku.pdf_calls]
    figures = f"log calls per minute {log_minute}; PDF call offsets {offsets(pdf_times)}"
    assert byosoku.violations == 0, figures
    assert min_gap(byosoku.log_calls) >= 60.0, figures
    assert max(log_minute.values()) == 1 and 55 <= len(byosoku.log_calls) <= 60, figures
    assert offsets(pdf_times) == case.pdf_offsets, figures
    assert [f.state for f in faxes] == ([case.state] if case.state else [])
    assert byosoku.fetched[pdf_id] == (1 if case.state is InboundState.MAILED else 0)
    if case.alert is None:
        assert alerts == []
    else:
        [alert] = alerts  # one for the hour, however often it failed
        assert case.alert in alert["Subject"] + plain_text(alert)
        if case.pdf_deleted:
            assert pdf_id in plain_text(alert)


async def test_an_alert_failing_every_minute_is_mailed_once_an_hour_then_counts_the_held_back(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator
) -> None:
    byosoku.log_faults.extend([ByosokuFault.error(403)] * 100)
    async with poller_rig(tmp_path, byosoku, clock) as (rig, poller, _):
        await run_workers(clock, HOUR, poller)
        assert len(byosoku.log_calls) == 60
        [first] = [parse(a) for a in await rig.alerts()]  # one email, not sixty
        await run_workers(clock, 61, poller)  # the 61st failure, past the hour
        assert len(byosoku.log_calls) == 61
        alerts = [parse(a) for a in await rig.alerts()]

    subject = "[fax-bridge] this server's IP address is not registered with 秒速FAX Plus"
    # Whitespace normalised: Python's header folder leaves a double space where it folds
    # before the encoded word (a cosmetic flaw, reported separately).
    assert [" ".join(a["Subject"].split()) for a in alerts] == [subject, subject]
    assert alerts[0]["Message-ID"] == first["Message-ID"] != alerts[1]["Message-ID"]
    assert "more alert" not in plain_text(first)
    held_back = "59 more alerts of this kind came in the last hour and were not mailed."
    assert held_back in plain_text(alerts[1])
    assert held_back in html_text(alerts[1])
    assert "(cause: byosoku-403; at most one email per cause per hour)" in plain_text(alerts[1])


# --- L4: poller limits and the 50-row window ----------------------------------------------------


def drain_time(byosoku: ByosokuSimulator, arrived: dict[str, float], ids: list[str]) -> float:
    """Simulated seconds from the last arrival until every fax in `ids` was fetched."""
    fetched_at = {pdf_id: t for t, pdf_id, _ in byosoku.pdf_calls}
    return max(fetched_at[i] for i in ids) - max(arrived.values())


async def assert_fetched_and_mailed_once(rig: PollerRig, byosoku: ByosokuSimulator,
                                         ids: list[str]) -> None:
    assert byosoku.violations == 0
    assert min_gap(byosoku.log_calls) >= 60.0
    assert min_gap([t for t, _, _ in byosoku.pdf_calls]) >= 1.0
    assert dict(byosoku.fetched) == dict.fromkeys(ids, 1)
    faxes = await rig.store.inbound.all()
    assert sorted(f.external_id for f in faxes) == sorted(ids)
    assert {f.state for f in faxes} == {InboundState.MAILED}
    mails = [m for m in await rig.store.outbox.latest(limit=1000)
             if m.recipients == ("tokyo@example.com",)]
    assert len(mails) == len({m.message_id for m in mails}) == len(ids)


async def test_l4a_200_faxes_at_5_a_minute_are_each_fetched_and_mailed_once_within_the_limits(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    arrived: dict[str, float] = {}
    async with poller_rig(tmp_path, byosoku, clock,
                          initial_sync="deliver") as (rig, poller, inbox):
        for _ in range(200):
            arrived[byosoku.add_fax(fax_number="0368680000")] = clock.now()
            await run_workers(clock, 12, poller, inbox)
        await run_workers(clock, 120, poller, inbox)
        ids = list(arrived)
        drained = drain_time(byosoku, arrived, ids)
        await assert_fetched_and_mailed_once(rig, byosoku, ids)
        assert await rig.alerts() == []
    # The last fax is seen at the next poll (<= 61 s) and fetched behind at most a poll's
    # worth of others (about 5 here) at 1.05 s each.
    assert drained <= 61 + 6 * 1.05, f"backlog drained {drained:.1f} s after the last arrival"
    with capsys.disabled():
        print(f"\nL4a: backlog drained {drained:.1f} s (simulated) after the last arrival; "
              f"{len(byosoku.log_calls)} log calls, {len(byosoku.pdf_calls)} PDF calls")


async def test_l4b_60_faxes_in_one_interval_raise_the_overflow_alert_and_fetch_the_latest_50(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    first = byosoku.add_fax(fax_number="0368680000")
    arrived: dict[str, float] = {}
    async with poller_rig(tmp_path, byosoku, clock,
                          initial_sync="deliver") as (rig, poller, inbox):
        await run_workers(clock, 1, poller, inbox)  # the first poll sees `first`
        for _ in range(60):  # more than one log's worth before the next poll
            arrived[byosoku.add_fax(fax_number="0368680000")] = clock.now()
            await run_workers(clock, 0.9, poller, inbox)
        await run_workers(clock, 120, poller, inbox)
        newest = list(arrived)[-50:]  # what the log still showed at the second poll
        drained = drain_time(byosoku, arrived, newest)
        await assert_fetched_and_mailed_once(rig, byosoku, [first, *newest])
        [alert] = [parse(a) for a in await rig.alerts()]
    assert len(byosoku.log_calls) == 3  # at 0, 61 and 122 s
    assert alert["Subject"] == ("[fax-bridge] faxes may have been missed: the 秒速FAX Plus log "
                                "scrolled past the last poll")
    assert "shows only the latest 50 faxes" in plain_text(alert)
    assert ("alert byosoku-log-overflow: faxes may have been missed" in caplog.text)
    # The second poll finds 50 new faxes; they take 50 PDF calls at 1.05 s.
    assert drained <= 61 + 50 * 1.05, f"backlog drained {drained:.1f} s after the last arrival"
    with capsys.disabled():
        print(f"\nL4b: 10 faxes scrolled out unseen (alerted); the 50 seen drained "
              f"{drained:.1f} s (simulated) after the last arrival")


# --- F7: the onward relay -------------------------------------------------------------------


@dataclass
class FaultyRelay(RelaySink):
    """The relay sink plus the faults smtp-sink can inject: a reply at RCPT (`-r`), a hang
    at RCPT (`-w`), a refusal of chosen recipients at DATA, the answer to the final `.` for
    chosen recipients given only after a delay (a relay that queues and answers late; the
    message is recorded when the `.` arrives), and not listening at all until `listen()` (its
    port is reserved, so connections are refused meanwhile)."""

    listener: socket.socket | None = None
    refuse_rcpt: str | None = None
    hang: bool = False
    refuse_for: dict[str, str] = field(default_factory=dict)
    late_for: dict[str, float] = field(default_factory=dict)
    server: asyncio.Server | None = None

    def __post_init__(self) -> None:
        if self.listener is not None:
            self.port = self.listener.getsockname()[1]

    async def listen(self) -> None:
        assert self.listener is not None
        loop = asyncio.get_running_loop()
        # A fixed hostname: aiosmtpd would otherwise look up this host's name per session.
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="relay.example", loop=loop), sock=self.listener)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.hang:
            await asyncio.Event().wait()  # until the client gives up; aiosmtpd cancels us
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.refuse_for:
                return self.refuse_for[rcpt]
        answer = await super().handle_DATA(server, session, envelope)
        if late := max((self.late_for.get(r, 0.0) for r in envelope.rcpt_tos), default=0.0):
            await asyncio.sleep(late)  # the relay's own delay: the scenario, not a wait
        return answer

    def count(self, message_id: str) -> int:
        return sum(1 for m in self.messages if m.message["Message-ID"] == message_id)


@pytest.fixture
async def faulty_relay() -> AsyncIterator[FaultyRelay]:
    with refusing_port() as sock:
        relay = FaultyRelay(listener=sock)
        yield relay
        await relay.close()


@pytest.mark.parametrize(("fault", "timeout", "error"), [
    pytest.param("not-listening", 5.0, "cannot reach the relay 127.0.0.1:{port}: "
                 "SMTPConnectError", id="not-listening"),
    pytest.param("421-at-DATA", 5.0, "421 4.3.2 shutting down", id="421-at-DATA"),
    pytest.param("450-at-RCPT", 5.0, "the relay refused the recipients: alice@example.com: "
                 "450 4.2.1 mailbox busy, try later", id="450-at-RCPT"),
    pytest.param("hang", 0.5, "cannot reach the relay 127.0.0.1:{port}: "
                 "SMTPReadTimeoutError: Timed out waiting for server response",
                 id="hang-at-RCPT-past-smtp_timeout"),
])
async def test_f7_a_relay_that_is_down_or_says_not_now_gets_the_mail_once_when_it_recovers(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, faulty_relay: FaultyRelay,
    caplog: pytest.LogCaptureFixture, fault: str, timeout: float, error: str,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.workers.mailer")
    relay = faulty_relay
    if fault != "not-listening":
        await relay.listen()
    relay.refuse_with = "421 4.3.2 shutting down" if fault == "421-at-DATA" else None
    relay.refuse_rcpt = "450 4.2.1 mailbox busy, try later" if fault == "450-at-RCPT" else None
    relay.hang = fault == "hang"
    faxmax.rejected_numbers.add(NUMBER)  # the job fails at once: its report is the mail
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port,
                            mail={"retry_base": 30.0, "retry_cap": 3600.0,
                                  "smtp_timeout": timeout}) as rig:
        await rig.queue_fax()
        await rig.run_for(100)  # attempts at 0, 15 and 45 s; the next is due at 105 s
        [pending] = await rig.store.outbox.latest()
        assert (pending.state, pending.attempts) == (MailState.PENDING, 3)
        assert error.format(port=relay.port) in pending.last_error
        assert relay.messages == []

        if fault == "not-listening":
            await relay.listen()
        relay.refuse_with = relay.refuse_rcpt = None
        relay.hang = False
        await rig.run_for(DAY)
        [sent] = await rig.store.outbox.latest()
        attempts = offsets(rig.transport.attempts)

    assert attempts == [0, 15, 45, 105]
    assert [s for _, s in retries_logged(caplog, "bridge.workers.mailer")] == [15, 30, 60]
    assert (sent.state, sent.attempts) == (MailState.SENT, 4)
    assert relay.count(sent.message_id) == len(relay.messages) == 1
    assert relay.messages[0].message["Subject"] == ("Fax NOT delivered to (0212) 222 25 25: "
                                                    "Invoice 42")


async def test_f7_a_relay_that_answers_the_final_dot_late_gets_the_mail_at_most_twice(
    tmp_path: Path, clock: FakeClock, faxmax: FaxMaxSimulator, faulty_relay: FaultyRelay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the final `.` the relay may have queued the mail: a timeout there is an unknown
    outcome, not a "try again". One resend with the same Message-ID, then a kept email in
    `unknown` and the admin told (RFC 5321 4.5.3.2.6 allows the relay 10 minutes)."""
    caplog.set_level(logging.INFO, logger="bridge.workers.mailer")
    relay = faulty_relay
    await relay.listen()
    relay.late_for["alice@example.com"] = 2.0  # the report; the admin's alert is answered at once
    faxmax.rejected_numbers.add(NUMBER)  # the job fails at once: its report is the mail
    async with outbound_rig(tmp_path, clock, faxmax.url, relay.port, routing={"admin": ADMIN},
                            mail={"smtp_timeout": 5.0, "smtp_final_dot_timeout": 1.0,
                                  "max_attempts": 5}) as rig:
        await rig.queue_fax()
        await rig.run_for(DAY)
        [report] = await rig.store.outbox.latest(MailState.UNKNOWN)
        assert await rig.store.outbox.counts() == {"unknown": 1, "sent": 1}

    copies = [m for m in relay.messages if m.rcpt_tos == ["alice@example.com"]]
    assert [c.message["Message-ID"] for c in copies] == [report.message_id] * 2
    assert copies[0].data == copies[1].data
    assert report.attempts == 2
    assert report.last_error.startswith("delivery unknown: the relay did not answer the end of "
                                        "the message within 1 s")
    [alert] = [m for m in relay.messages if m.rcpt_tos == [ADMIN]]
    assert alert.message["Subject"] == ("[fax-bridge] delivery unknown for an email to "
                                        "alice@example.com")
    text = plain_text(alert.message)
    for words in (f"Message-ID: {report.message_id}", "sent twice",
                  f"`fax-bridge retry --mail {report.id}`"):
        assert words in text
    assert f"mail {report.id} {report.message_id}: delivery unknown" in caplog.text


async def test_f7_lines_that_start_with_a_dot_reach_the_relay_as_written(
    tmp_path: Path, relay: RelaySink
) -> None:
    """The DATA section is written by the bridge itself (to wait for the final `.` apart):
    dot-stuffing and line ends as RFC 5321 4.5.2 wants them."""
    settings = settings_for(tmp_path, "http://127.0.0.1:9/unused", relay.port)
    body = b"Subject: dots\r\n\r\n.\r\n..two\r\n.end\r\nbare\nlast"
    outcome = await SmtpTransport(settings.mail).deliver(
        MailEnvelope(mail_from="", recipients=("alice@example.com",), body=body))
    assert outcome.startswith("relayed: ")
    [got] = relay.messages
    assert got.data == b"Subject: dots\r\n\r\n.\r\n..two\r\n.end\r\nbare\r\nlast\r\n"


async def test_f7_a_5xx_refusal_is_a_dead_letter_that_survives_a_restart_and_can_be_retried(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, faulty_relay: FaultyRelay
) -> None:
    relay = faulty_relay
    await relay.listen()
    relay.refuse_for["alice@example.com"] = "550 5.1.1 <alice@example.com>: no such mailbox"
    config: dict[str, dict[str, Any]] = {"routing": {"admin": ADMIN},
                                         "mail": {"smtp_port": relay.port}}
    bridge = await make_bridge(**config)
    sent = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    assert sent.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [alert] = await relay.wait_for(1)  # the alert itself gets through
    report_id = f"<fax-bridge.{bridge.store.installation}.job-1.delivered@localhost>"
    [dead] = await bridge.store.outbox.latest(MailState.FAILED)
    assert (dead.message_id, dead.recipients, dead.attempts) == (
        report_id, ("alice@example.com",), 1)
    assert alert.rcpt_tos == [ADMIN]
    assert alert.message["Subject"] == ("[fax-bridge] an email to alice@example.com could not "
                                        "be delivered")
    text = plain_text(alert.message)
    for words in (f"Message-ID: {report_id}",
                  "Last error: the relay answered 550 5.1.1 <alice@example.com>: no such mailbox",
                  f"It is kept in the outbox as mail {dead.id}.",
                  f"`fax-bridge retry --mail {dead.id}` sends it again",
                  "(cause: mail-undeliverable; at most one email per cause per hour)"):
        assert words in text

    await bridge.stop()
    bridge = await make_bridge(**config)  # a restart on the same data_dir
    data_dir = bridge.settings.data_dir
    listed = await asyncio.to_thread(run_cli, "list", "--mail", "failed", "--data-dir", data_dir)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.split()[0] == str(dead.id)]
    assert "failed" in row and "alice@example.com" in row and "550 5.1.1" in row
    assert [m.id for m in await bridge.store.outbox.latest(MailState.FAILED)] == [dead.id]
    assert relay.count(report_id) == 0  # kept, and not retried on its own

    relay.refuse_for.clear()
    retried = await asyncio.to_thread(run_cli, "retry", "--mail", str(dead.id),
                                      "--data-dir", data_dir)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"mail {dead.id} queued again")
    for worker in bridge.workers:
        worker.wake()  # the CLI is another process; the service would look within a minute
    await relay.wait_for(2)
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 2})
    assert relay.count(report_id) == 1
    assert relay.messages[1].rcpt_tos == ["alice@example.com"]


# --- F9: a slow FaxMAX does not slow SMTP intake --------------------------------------------


async def intake(port: int, message: bytes) -> tuple[str, float]:
    """One mail over a raw SMTP session: the reply to the final `.` and the seconds from
    writing that `.` to reading the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> str:
        lines = [await reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(await reader.readline())
        return lines[-1].decode().rstrip()

    try:
        assert (await reply()).startswith("220")
        for command in (b"EHLO client.example", b"MAIL FROM:<alice@example.com>",
                        b"RCPT TO:<02122222525@fax.local>", b"DATA"):
            writer.write(command + b"\r\n")
            assert (await reply())[:1] in ("2", "3")
        writer.write(re.sub(rb"(?m)^\.", b"..", message))
        writer.write(b".\r\n")
        await writer.drain()
        started = time.monotonic()
        answer = await reply()
        return answer, time.monotonic() - started
    finally:
        writer.close()
        await writer.wait_closed()


async def test_f9_intake_answers_250_while_a_faxmax_call_is_still_outstanding(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bridge = await make_bridge()
    message = fax_mail(("a.pdf", "application/pdf", make_pdf(1))).as_bytes(policy=SMTP_POLICY)
    fast_reply, fast = await intake(bridge.smtp_port, message)
    await wait_for_state(bridge, 1, JobState.DELIVERED)

    faxmax.pause()  # FaxMAX now holds every call unanswered until resume()
    await intake(bridge.smtp_port, message)
    await faxmax.wait_for_paused_calls(1)  # job 2 is being handed to FaxMAX
    slow_reply, slow = await intake(bridge.smtp_port, message)
    outstanding = faxmax.paused_calls
    job = await bridge.store.jobs.get(2)
    faxmax.resume()

    assert (fast_reply, slow_reply) == ("250 2.0.0 queued as fax jobs 1",
                                        "250 2.0.0 queued as fax jobs 3")
    # The 250 came while FaxMAX had not answered job 2: intake never waits for the provider.
    assert outstanding >= 1 and job is not None and job.state is JobState.SENDING
    await wait_for_state(bridge, 3, JobState.DELIVERED)
    assert sorted(faxmax.sent_numbers()) == [NUMBER] * 3
    with capsys.disabled():
        print(f"\nF9: final '.' to 250: {fast * 1000:.0f} ms with FaxMAX answering, "
              f"{slow * 1000:.0f} ms with a FaxMAX call held open")


async def test_the_server_name_is_looked_up_once_not_on_the_event_loop_for_every_connection(
    make_bridge: MakeBridge, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow resolver must not stall SMTP: the greeting's name is looked up once, at start."""
    lookups: list[str] = []

    def getfqdn(name: str = "") -> str:
        lookups.append(name)
        time.sleep(0.05)  # a resolver that answers slowly
        return "faxgw.example.net"

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    bridge = await make_bridge()

    async def greeting() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.smtp_port)
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return line

    greetings = await asyncio.gather(*(greeting() for _ in range(5)))
    assert greetings == [b"220 faxgw.example.net fax-bridge\r\n"] * 5
    assert len(lookups) == 1
