"""What an operator's monitoring sees: `/metrics` read with prometheus_client's own parser after
real traffic, and `/healthz` turning 503, with the reason in words, for each thing a person must
fix (a read-only database, a dead worker, polling failing for too long)."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge import health
from bridge.app import Bridge
from bridge.simulators import ByosokuFault, ByosokuSimulator, Fault, FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state, wait_until

ROUTING: dict[str, Any] = {"default": ("frontdesk@example.com",), "admin": "admin@example.com"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bridge: Bridge) -> Samples:
    """Every sample of `/metrics`, parsed by prometheus_client; the content type is checked."""
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{bridge.http_port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in {sorted(k[0] for k in samples)}"
    return samples[key]


async def healthz(bridge: Bridge) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{bridge.http_port}/healthz") as resp:
        return resp.status, await resp.text()


async def test_metrics_count_what_happened_and_parse_as_prometheus_text(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_healthy") == 1
    assert value(samples, "fax_bridge_last_push_timestamp_seconds") == 0  # never
    for queue in ("convert", "send", "status", "report", "inbound", "email"):
        assert value(samples, "fax_bridge_queue_depth", queue=queue) == 0
        assert value(samples, "fax_bridge_queue_oldest_age_seconds", queue=queue) == 0

    faxmax.faults.append(Fault.http(503))  # the first send is refused "not now", then retried
    sent = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    assert sent.data is not None and sent.data[0] == 250
    relayed = await smtp_send(bridge.smtp_port, fax_mail(), rcpts=["someone@example.org"])
    assert relayed.rcpts[0][0] == 550
    bad = await smtp_send(bridge.smtp_port, fax_mail(), rcpts=["invoices@fax.local"])
    assert bad.rcpts[0][0] == 550
    event = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000")
    before_push = time.time()
    await faxmax.push_events([event])
    await faxmax.push_events([event])  # FaxMAX's replay of the same fax
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await relay.wait_for(2)  # the delivery report and the received fax

    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_faxes", state="delivered") == 1
    assert value(samples, "fax_bridge_faxes", state="failed") == 0
    assert value(samples, "fax_bridge_received_faxes", provider="faxmax", state="mailed") == 1
    assert value(samples, "fax_bridge_duplicates_suppressed_total", provider="faxmax",
                 kind="fax") == 1
    assert value(samples, "fax_bridge_smtp_refusals_total", code="550 5.7.1",
                 reason="not_allowed") == 1
    assert sum(v for (name, labels), v in samples.items()
               if name == "fax_bridge_smtp_refusals_total"
               and ("reason", "not_allowed") not in labels) == 1  # the bad number
    assert value(samples, "fax_bridge_provider_request_seconds_count", provider="faxmax",
                 call="send_fax") == 2
    assert value(samples, "fax_bridge_provider_errors_total", provider="faxmax",
                 call="send_fax", code="503") == 1
    assert value(samples, "fax_bridge_pushes_total", status="200") >= 3  # 2 + status pushes
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{bridge.http_port}/faxmax/push/not-the-token", json=[]) as resp:
        assert resp.status == 404
    assert value(await scrape(bridge), "fax_bridge_pushes_total", status="404") == 1
    assert before_push <= value(samples, "fax_bridge_last_push_timestamp_seconds") <= time.time()
    assert value(samples, "fax_bridge_worker_up", worker="sender") == 1
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 2})
    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_queue_depth", queue="email") == 0
    assert value(samples, "fax_bridge_emails", state="sent") == 2


async def test_queue_depth_and_the_age_of_the_oldest_item_show_a_stuck_stage(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    faxmax.pause()  # FaxMAX holds every send call: jobs wait in "sending"
    bridge = await make_bridge()
    for n in range(3):
        result = await smtp_send(bridge.smtp_port, fax_mail(
            ("a.pdf", "application/pdf", make_pdf(1)), message_id=f"<m{n}@example.com>"))
        assert result.data is not None and result.data[0] == 250
    await faxmax.wait_for_paused_calls(1)
    await asyncio.sleep(0.3)
    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_queue_depth", queue="send") == 3
    assert value(samples, "fax_bridge_queue_oldest_age_seconds", queue="send") >= 0.3
    assert (value(samples, "fax_bridge_faxes", state="queued")
            + value(samples, "fax_bridge_faxes", state="sending")) == 3
    assert value(samples, "fax_bridge_queue_depth", queue="status") == 0
    faxmax.resume()

    async def depths() -> tuple[float, float]:
        samples = await scrape(bridge)
        return (value(samples, "fax_bridge_queue_depth", queue="send"),
                value(samples, "fax_bridge_queue_depth", queue="status"))

    await wait_until(depths, (0, 0))  # sent, and FaxMAX pushed each one's final status


async def test_healthz_turns_503_when_the_database_file_is_made_read_only(
    make_bridge: MakeBridge,
) -> None:
    bridge = await make_bridge()
    db = bridge.settings.data_path / "fax-bridge.sqlite3"
    assert await healthz(bridge) == (200, "ok\n")
    mode = db.stat().st_mode
    db.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        status, text = await healthz(bridge)
        assert status == 503
        assert text == f"unhealthy: the database file {db} is read-only (mode -r--r--r--)\n"
        assert value(await scrape(bridge), "fax_bridge_healthy") == 0
    finally:
        db.chmod(mode)
    assert await healthz(bridge) == (200, "ok\n")


async def test_healthz_turns_503_when_a_worker_has_died(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge()
    [sender] = [t for t in bridge._tasks if t.get_name() == "sender"]
    sender.cancel()
    await wait_until(lambda: healthz(bridge), (
        503, "unhealthy: the sender worker has stopped (it was cancelled); restart fax-bridge\n"))
    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_worker_up", worker="sender") == 0
    assert value(samples, "fax_bridge_worker_up", worker="mailer") == 1


@pytest.fixture
async def byosoku() -> AsyncIterator[ByosokuSimulator]:
    sim = ByosokuSimulator(log_interval=0.1, pdf_interval=0.05)
    await sim.start()
    yield sim
    await sim.stop()


async def test_healthz_turns_503_when_polling_fails_longer_than_configured_and_recovers(
    make_bridge: MakeBridge, byosoku: ByosokuSimulator
) -> None:
    byosoku.log_faults.extend([ByosokuFault.error(503, "ERR_SERVER_BUSY")] * 1000)
    bridge = await make_bridge(byosoku={
        "enabled": True, "log_url": byosoku.log_url, "pdf_url": byosoku.pdf_url,
        "poll_interval": 0.1, "pdf_interval": 0.05, "unhealthy_after": 0.5})
    await byosoku.wait_for_log_calls(1)
    assert (await healthz(bridge))[0] == 200  # one failed poll is not yet a problem

    async def reason() -> str:
        status, text = await healthz(bridge)
        return text.split(" log calls have failed")[0] if status == 503 else text

    await wait_until(reason, "unhealthy: 秒速FAX Plus")
    text = (await healthz(bridge))[1]
    assert "(byosoku.unhealthy_after = 0.5): 秒速FAX Plus: server trouble (ERR_SERVER_BUSY)" in text
    samples = await scrape(bridge)
    assert value(samples, "fax_bridge_provider_errors_total", provider="byosoku",
                 call="receive_log", code="ERR_SERVER_BUSY") >= 2
    assert value(samples, "fax_bridge_last_successful_poll_timestamp_seconds") == 0

    byosoku.log_faults.clear()
    await wait_until(lambda: healthz(bridge), (200, "ok\n"))
    samples = await scrape(bridge)
    assert abs(value(samples, "fax_bridge_last_successful_poll_timestamp_seconds")
               - time.time()) < 5
    assert value(samples, "fax_bridge_provider_request_seconds_count", provider="byosoku",
                 call="receive_log") >= 3



async def test_a_flood_of_healthz_requests_probes_the_store_at_most_once_per_interval(
    make_bridge: MakeBridge, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each probe is a durable commit: one per GET would queue fsyncs in front of the SMTP
    commits. The answer is the probe of at most `PROBE_INTERVAL` seconds ago."""
    bridge = await make_bridge()
    probe = bridge.store.upkeep.probe_write
    probes: list[float] = []

    async def counted(now: float) -> None:
        probes.append(now)
        await probe(now)

    monkeypatch.setattr(bridge.store.upkeep, "probe_write", counted)
    started = time.monotonic()
    answers = await asyncio.gather(*(healthz(bridge) for _ in range(50)))
    elapsed = time.monotonic() - started
    assert answers == [(200, "ok\n")] * 50
    assert 1 <= len(probes) <= 1 + int(elapsed / health.PROBE_INTERVAL)
    assert await bridge.store.upkeep.meta("health.probe") == repr(probes[-1])


async def test_metrics_are_refused_with_403_outside_metrics_allow_from(
    make_bridge: MakeBridge,
) -> None:
    bridge = await make_bridge(http={"metrics_allow_from": ("10.0.0.0/8", "::1")})
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{bridge.http_port}/metrics") as resp:
        assert resp.status == 403
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert await resp.text() == ("127.0.0.1 may not read /metrics: it is not in "
                                     "http.metrics_allow_from\n")
    assert await healthz(bridge) == (200, "ok\n")  # the probe stays open to everyone


async def test_a_final_status_that_contradicts_the_first_is_logged_and_counted(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faxmax.statuses["902122222525"] = ["SUCCESS", "FAILED"]
    bridge = await make_bridge()
    sent = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    assert sent.data == (250, "2.0.0 queued as fax jobs 1")

    async def contradictions() -> float:
        return value(await scrape(bridge), "fax_bridge_contradicting_statuses")

    await wait_until(contradictions, 1)
    job = await bridge.store.jobs.get(1)
    assert job is not None and (job.state, job.provider_status) == (JobState.DELIVERED,
                                                                    "SUCCESS")
    [line] = [r.getMessage() for r in caplog.records if "contradicts" in r.getMessage()]
    assert line == (f"job 1 (fax {job.fax_id}): final status FAILED ignored: it contradicts the "
                    "first final status, SUCCESS (delivered)")
