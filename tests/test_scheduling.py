"""`X-Fax-Send-At` and `fax-bridge cancel` (issue 20): a scheduled fax waits in the store, on
the service's injectable clock, across restarts; a queued or scheduled one can be cancelled,
never one FaxMAX may have; the sender hears of it. The real service, the simulators, the
command line as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bridge.clock import FakeClock
from bridge.limits import DAY, HOUR
from bridge.simulators import Fault, FaxMaxSimulator
from bridge.store import JobState, NewMessage, Store
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import migrate_to, query
from tests.waits import wait_for_state, wait_until

PDF = ("offer.pdf", "application/pdf", make_pdf(1))


def rfc3339(at: float, hours: int) -> str:
    """`at` as RFC 3339 with an offset of `hours` from UTC, as a program writes it."""
    return datetime.fromtimestamp(at, timezone(timedelta(hours=hours))).isoformat()


def scheduled_mail(at: str, to: str = "02122222525@fax.local") -> bytes:
    mail = fax_mail(PDF, to=to)
    mail["X-Fax-Send-At"] = at
    return mail.as_bytes()


async def message_state(store: Store, message_id: int = 1) -> str | None:
    message = await store.jobs.message(message_id)
    return None if message is None else str(message.state)


async def test_a_scheduled_fax_waits_for_its_time_even_across_a_restart(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    bridge = await make_bridge(clock=clock)
    at = clock.now() + 2 * HOUR
    result = await smtp_send(bridge.smtp_port, scheduled_mail(rfc3339(at, 9)))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    # Converted at once; only the send waits.
    await wait_until(lambda: message_state(bridge.store), "ready")
    assert not await bridge.pipeline.sender.run_once()  # type: ignore[union-attr]
    job = await bridge.store.jobs.get(1)
    assert job is not None and (job.state, job.send_at) == (JobState.SCHEDULED, at)
    data_dir = bridge.settings.data_dir
    listed = await asyncio.to_thread(run_cli, "list", "--json", "--data-dir", data_dir)
    assert [(j["id"], j["state"], j["send_at"]) for j in json.loads(listed.stdout)] == [
        (1, "scheduled", at)]
    status = await asyncio.to_thread(run_cli, "status", "--json", "--data-dir", data_dir)
    assert json.loads(status.stdout)["jobs"]["scheduled"] == 1

    await bridge.stop()
    clock.advance(2 * HOUR - 1)
    bridge = await make_bridge(clock=clock)  # the same data directory: a restart
    assert not await bridge.pipeline.sender.run_once()  # type: ignore[union-attr]
    assert faxmax.calls == 0  # a second early
    clock.advance(1)
    bridge.wake()
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert len(faxmax.requests) == 1
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    text = text.replace("\r\n", "\n")
    # 2 hours after the fake clock's start, in mail.timezone (Europe/Istanbul, UTC+3)
    assert "  Scheduled:   2027-01-15 13:00 +03\n" in text


async def test_a_fax_scheduled_days_ahead_is_retried_after_a_busy_faxmax_not_failed(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, clock: FakeClock,
) -> None:
    """`faxmax.retry_max_age` (a day) counts from the time the fax was due, not from its
    acceptance: three days ahead, one 503 made it fail as "could not be reached"."""
    bridge = await make_bridge(clock=clock)
    at = clock.now() + 3 * DAY
    await smtp_send(bridge.smtp_port, scheduled_mail(rfc3339(at, 9)))
    await wait_until(lambda: message_state(bridge.store), "ready")
    faxmax.faults.append(Fault.http(503))
    clock.advance(3 * DAY)
    bridge.wake()
    await faxmax.wait_for_requests(1)

    async def state() -> tuple[JobState, int] | None:
        job = await bridge.store.jobs.get(1)
        return None if job is None else (job.state, job.attempts)

    await wait_until(state, (JobState.QUEUED, 1))  # waiting for its retry, not failed
    clock.advance(3600)
    bridge.wake()
    await wait_for_state(bridge, 1, JobState.DELIVERED)


async def test_a_time_in_the_past_means_now(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, clock: FakeClock,
) -> None:
    bridge = await make_bridge(clock=clock)
    result = await smtp_send(bridge.smtp_port, scheduled_mail(rfc3339(clock.now() - 600, 3)))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)  # the clock never moved
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.send_at is None


async def test_a_time_beyond_max_schedule_days_is_refused_saying_the_limit(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, clock: FakeClock,
) -> None:
    bridge = await make_bridge(clock=clock, faxmax={"max_schedule_days": 2})
    too_far = rfc3339(clock.now() + 2 * DAY + 1, 0)
    result = await smtp_send(bridge.smtp_port, scheduled_mail(too_far))
    assert result.data == (554, f"5.6.0 the header X-Fax-Send-At: '{too_far}' is more than 2 "
                                "day(s) ahead; this gateway schedules a fax at most 2 day(s) "
                                "ahead")
    assert await query(bridge.store.path, "SELECT COUNT(*) FROM jobs") == [(0,)]
    result = await smtp_send(bridge.smtp_port, scheduled_mail(rfc3339(clock.now() + 2 * DAY,
                                                                      0)))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    assert faxmax.calls == 0


async def test_cancel_stops_a_queued_and_a_scheduled_fax_and_tells_their_sender(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    faxmax.faults.append(Fault.http(503))  # job 1 waits for its retry: queued
    bridge = await make_bridge(clock=clock)
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await faxmax.wait_for_requests(1)

    async def attempts() -> tuple[JobState, int] | None:
        job = await bridge.store.jobs.get(1)
        return None if job is None else (job.state, job.attempts)

    await wait_until(attempts, (JobState.QUEUED, 1))
    await smtp_send(bridge.smtp_port, scheduled_mail(rfc3339(clock.now() + HOUR, 9),
                                                     to="03122222222@fax.local"),
                    rcpts=["03122222222@fax.local"])
    await wait_for_state(bridge, 2, JobState.SCHEDULED)
    data_dir = bridge.settings.data_dir
    for job_id in (1, 2):
        done = await asyncio.to_thread(run_cli, "cancel", str(job_id), "--data-dir", data_dir)
        assert (done.returncode, done.stdout) == (
            0, f"job {job_id} cancelled; the running service was told and reports it now\n")
    reports = await relay.wait_for(2)
    installation = bridge.store.installation
    assert sorted((r.message["Subject"], r.message["Message-ID"]) for r in reports) == [
        ("Fax to (0212) 222 25 25 cancelled: Invoice 42",
         f"<fax-bridge.{installation}.job-1.cancelled@localhost>"),
        ("Fax to (0312) 222 22 22 cancelled: Invoice 42",
         f"<fax-bridge.{installation}.job-2.cancelled@localhost>")]
    text = reports[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    text = text.replace("\r\n", "\n")
    assert "was cancelled before it was sent.\n\nWhy: an operator cancelled it" in text
    clock.advance(2 * HOUR)
    bridge.wake()
    assert not await bridge.pipeline.sender.run_once()  # type: ignore[union-attr]
    assert faxmax.calls == 1  # neither was sent


async def test_cancel_refuses_a_fax_being_sent_or_submitted_in_words(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    faxmax.statuses["902122222525"] = ["QUEUED"]  # never final: job 1 stays submitted
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, JobState.SUBMITTED)
    faxmax.pause()
    await smtp_send(bridge.smtp_port, fax_mail(PDF, to="03122222222@fax.local"),
                    rcpts=["03122222222@fax.local"])
    await faxmax.wait_for_paused_calls(1)
    await wait_for_state(bridge, 2, JobState.SENDING)
    data_dir = bridge.settings.data_dir
    submitted = await asyncio.to_thread(run_cli, "cancel", "1", "--data-dir", data_dir)
    assert (submitted.returncode, submitted.stderr) == (
        1, "fax-bridge: job 1 is submitted: FaxMAX has the fax already, and a fax FaxMAX has "
           "cannot be called back; nothing cancelled\n")
    sending = await asyncio.to_thread(run_cli, "cancel", "2", "--data-dir", data_dir)
    assert (sending.returncode, sending.stderr) == (
        1, "fax-bridge: job 2 is sending: it is being handed to FaxMAX at this moment, so it "
           "may have it already; nothing cancelled\n")
    missing = await asyncio.to_thread(run_cli, "cancel", "9", "--data-dir", data_dir)
    assert (missing.returncode, missing.stderr) == (
        3, "fax-bridge: there is no fax job 9 (fax-bridge list shows them)\n")
    faxmax.resume()
    await wait_for_state(bridge, 2, JobState.DELIVERED)


def mail(n: int) -> NewMessage:
    return NewMessage(mail_from="alice@example.com", header_from="", subject=f"mail {n}",
                      message_id=f"<{n}@example.com>", refs="", spool_path="", raw=b"x")


async def test_cancel_and_a_sender_claiming_at_once_never_both_win(tmp_path: Path) -> None:
    """The operator's command and the service have stores of their own on one file: the
    check and the cancel are one transaction, as the claim is, so exactly one wins."""
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path) as service, Store.open(path) as operator:
        for n in range(1, 21):
            [job_id] = await service.jobs.accept(mail(n), [("0212@fax.local", "90212")], 1.0)
            await service.jobs.converted(n, document_path="x.pdf", pages=1, cover_html=None,
                                         left_out=[])
            claimed, refusal = await asyncio.gather(service.jobs.claim(2.0),
                                                    operator.jobs.cancel(job_id, 2.0))
            job = await service.jobs.get(job_id)
            assert job is not None
            if claimed is None:
                assert (refusal, job.state) == (None, JobState.CANCELLED)
            else:
                assert claimed[0].id == job_id and job.state is JobState.SENDING
                assert refusal == (f"job {job_id} is sending: it is being handed to FaxMAX at "
                                   "this moment, so it may have it already")


async def test_a_cancelled_fax_costs_no_pages_and_one_without_its_cover_not_the_covers(
    tmp_path: Path,
) -> None:
    async with Store.open(tmp_path / "fax-bridge.sqlite3") as store:
        ids = await store.jobs.accept(mail(1), [("a@fax.local", "90212"), ("b@fax.local",
                                                                          "90213"),
                                                ("c@fax.local", "90214")], 1.0)
        await store.jobs.converted(1, document_path="x.pdf", pages=5, cover_html=None,
                                   left_out=[], cover_pages=2,
                                   cover_sent={ids[0]: True, ids[1]: False, ids[2]: True})
        usage = await store.jobs.usage("alice@example.com", hour_since=0, day_since=0)
        assert usage.sender_pages == 5 + 3 + 5
        # A conversion run again (its first commit lost to a power cut, but not this time)
        # changes nothing: the decision stays with the pages it was charged with.
        await store.jobs.converted(1, document_path="x.pdf", pages=5, cover_html=None,
                                   left_out=[], cover_pages=2, cover_sent={ids[0]: False})
        job = await store.jobs.get(ids[0])
        assert job is not None and job.cover_sent is True
        assert await store.jobs.usage("alice@example.com", hour_since=0, day_since=0) == usage
        assert await store.jobs.cancel(ids[2], 2.0) is None
        usage = await store.jobs.usage("alice@example.com", hour_since=0, day_since=0)
        assert (usage.sender_pages, usage.faxes_last_hour) == (5 + 3, 3)


async def test_an_upgrade_keeps_older_jobs_sendable_with_the_operators_options(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    with sqlite3.connect(path) as db:  # a store as version 9 left it
        migrate_to(db, 9)
        db.execute("INSERT INTO messages (state, mail_from, header_from, subject, message_id,"
                   " refs, spool_path, document_path, pages, received_at) VALUES"
                   " ('ready', 'a@example.com', '', 's', '', '', '', 'x.pdf', 3, 1.0)")
        db.execute("INSERT INTO jobs (message, number, recipient, sender, state,"
                   " next_attempt_at, created_at, updated_at) VALUES"
                   " (1, '90212', '0212@fax.local', 'a@example.com', 'queued', 1.0, 1.0, 1.0)")
    async with Store.open(path) as store:
        claimed = await store.jobs.claim(2.0)
        assert claimed is not None
        job, message = claimed
        assert (job.resolution, job.paper_size, job.cover, job.cover_sent, job.send_at) == (
            None, None, None, None, None)
        assert message.cover_pages == 0
        usage = await store.jobs.usage("a@example.com", hour_since=0, day_since=0)
        assert usage.sender_pages == 3
