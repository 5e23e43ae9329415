"""Fax → email, end to end: FaxMAX pushes received faxes to the real service; 秒速FAX Plus is
polled by the real poller against its simulator on an injected clock. Emails are checked as a
mail reader sees them, at an SMTP relay sink."""

from __future__ import annotations

import asyncio
import datetime
import io
import itertools
import json
import sqlite3
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pypdf
import pytest

from bridge.clock import FakeClock, SystemClock
from bridge.simulators import ByosokuFault, ByosokuSimulator, FaxMaxSimulator
from bridge.store import InboundState
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf, make_tiff
from tests.relay import RelaySink
from tests.rigs import ADMIN, ROUTED, PollerRig
from tests.settings import PUSH_TOKEN, RULES, MakeBridge
from tests.sql import query
from tests.waits import wait_until

ROUTING: dict[str, Any] = {"numbers": ROUTED, "default": ("frontdesk@example.com",),
                           "admin": ADMIN}


def pdf_pages(data: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(data), strict=True).pages)


def attachment(msg: EmailMessage) -> tuple[str, str, bytes]:
    [part] = list(msg.iter_attachments())
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return part.get_filename() or "", part.get_content_type(), payload


async def inbound_counts(bridge: Any) -> dict[str, int]:
    counts: dict[str, int] = await bridge.store.inbound.counts()
    return counts


# --- FaxMAX pushes ------------------------------------------------------------------------


async def test_a_pushed_two_page_tiff_fax_becomes_one_email_with_a_two_page_pdf(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    await faxmax.push_incoming(tiff=make_tiff(2), cld="902121110000", cli="903125550000")
    [mail] = await relay.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ["istanbul@example.com"]
    assert msg["Subject"] == "Fax from (0312) 555 00 00 to (0212) 111 00 00 (2 pages)"
    filename, ctype, data = attachment(msg)
    assert ctype == "application/pdf" and pdf_pages(data) == 2
    assert filename.startswith("fax-") and filename.endswith("-from-903125550000.pdf")
    assert msg["Message-ID"].startswith("<fax-bridge.fax.faxmax.")
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Via:       FaxMAX" in text
    assert await inbound_counts(bridge) == {"mailed": 1}


async def test_the_fax_email_is_composed_in_the_sandbox_not_in_the_service(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding a fax into an email is pure CPU: in the service, even in a thread, it would hold
    the interpreter from the event loop while pushes arrive. The sandbox's children are fresh
    interpreters, which this patch does not reach."""

    def in_the_service(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the fax email was composed in the service process")

    monkeypatch.setattr("bridge.workers.inbox.compose", in_the_service)
    await make_bridge(routing=ROUTING)
    await faxmax.push_incoming(tiff=make_tiff(2), cld="902121110000", cli="903125550000")
    [mail] = await relay.wait_for(1)
    _, ctype, data = attachment(mail.message)
    assert ctype == "application/pdf" and pdf_pages(data) == 2


async def test_the_same_push_five_times_is_one_email(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    event = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000", cli="")
    for _ in range(5):
        await faxmax.push_events([event])
    await relay.wait_for(1)
    await wait_until(lambda: inbound_counts(bridge), {"mailed": 1})
    assert len(relay.messages) == 1
    # "sent" is recorded after the relay's 250, so a moment after the mail arrived
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 1})
    assert "from-withheld.pdf" in attachment(relay.messages[0].message)[0]


async def test_a_mixed_array_delivers_the_good_events_and_quarantines_the_bad_one(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    good = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000", cli="903125550000")
    bad = dict(good, id="bad-1", content="not base64 at all!")
    other = faxmax.incoming_event(tiff=make_tiff(1), cld="902129990000", cli="903125550001")
    await faxmax.push_events([good, bad, other])
    mails = await relay.wait_for(3)
    by_rcpt = {m.rcpt_tos[0]: m.message for m in mails}
    assert set(by_rcpt) == {"istanbul@example.com", "frontdesk@example.com", ADMIN}
    alert = by_rcpt[ADMIN]
    assert alert["Subject"] == "[fax-bridge] 1 FaxMAX push event could not be understood"
    assert "the fax image (content) is not valid base64" in alert.get_body(
        ("plain",)).get_content()  # type: ignore[union-attr]
    [kept] = await bridge.store.inbound.quarantined()
    assert json.loads(kept.body)["id"] == "bad-1"


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "the body is not JSON"),
    (b"42", "the body is not a JSON array of events"),
    (b'[{"type": "INCOMING_FAX", "cld": "902121110000"}]', "an INCOMING_FAX event lacks its id"),
    (b'[{"type": "INCOMING_FAX", "id": "x", "content": "%%%"}]',
     "the fax image (content) is not valid base64"),
    (b'[{"type": "INCOMING_FAX", "id": "x", "content": "JVBERi0xLjQK"}]',
     "the fax image (content) is not a TIFF"),
    (b'[{"type": "FAX_SOMETHING"}]', "unknown event type 'FAX_SOMETHING'"),
])
async def test_malformed_bodies_are_kept_answered_2xx_and_reported(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, body: bytes,
    reason: str,
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["quarantined"] == 1
        [alert] = await relay.wait_for(1)
        assert alert.rcpt_tos == [ADMIN]
        assert reason in alert.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        [kept] = await bridge.store.inbound.quarantined()
        assert (kept.reason, kept.source) == (reason, "faxmax-push")
        async with session.get(f"http://127.0.0.1:{bridge.http_port}/healthz") as resp:
            assert resp.status == 200  # still serving


def disk_full(*args: Any, **kwargs: Any) -> Any:
    """What the store raises when the disk is full (SQLITE_FULL)."""
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise exc


async def test_a_stored_push_is_answered_2xx_even_when_its_alert_cannot_be_queued(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The push is committed before the alert is tried: an error after the commit must not
    turn the answer into one, or FaxMAX retries what is already stored."""
    bridge = await make_bridge(routing=ROUTING)
    monkeypatch.setattr(bridge.store.outbox, "throttle_alert", disk_full)
    url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
    async with aiohttp.ClientSession() as session, session.post(
            url, data=b'[{"type": "FAX_SOMETHING"}]',
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["quarantined"] == 1
    [kept] = await bridge.store.inbound.quarantined()
    assert (kept.id, kept.reason, kept.repeats) == (1, "unknown event type 'FAX_SOMETHING'", 0)
    assert ("push: quarantine #1 is stored, but its alert to the admin could not be queued"
            in caplog.text)


async def test_a_bad_push_retried_by_faxmax_is_one_quarantine_row_with_its_repeats(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
    bodies = [b"{not json"] * 3 + [b"42"]
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["quarantined"] == 1
    kept = await bridge.store.inbound.quarantined()
    assert [(q.body, q.repeats) for q in kept] == [(b"{not json", 2), (b"42", 0)]
    [alert] = await relay.wait_for(1)  # the repeats are not new: no alert of their own
    assert "quarantine #1" in alert.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_a_wrong_token_gets_404_and_writes_nothing(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    event = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000")
    async with aiohttp.ClientSession() as session:
        for token in ("wrong-token-0123456789", PUSH_TOKEN[:-1], ""):
            url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{token}"
            async with session.post(url, json=[event]) as resp:
                assert resp.status == 404
    assert await bridge.store.inbound.all() == []
    assert await bridge.store.inbound.quarantined() == []
    assert not (Path(bridge.settings.data_dir) / "inbound").exists()


async def test_a_tiff_that_cannot_be_converted_is_still_delivered_and_the_admin_told(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    broken = make_tiff(1)[:60]  # a TIFF header, then nothing
    bridge = await make_bridge(routing=ROUTING)
    await faxmax.push_incoming(tiff=broken, cld="902121110000", cli="903125550000")
    mails = await relay.wait_for(2)
    by_rcpt = {m.rcpt_tos[0]: m.message for m in mails}
    filename, ctype, data = attachment(by_rcpt["istanbul@example.com"])
    assert (ctype, data) == ("image/tiff", broken) and filename.endswith(".tif")
    assert "could not be converted to PDF" in by_rcpt[ADMIN]["Subject"]
    assert await inbound_counts(bridge) == {"mailed": 1}


async def test_relay_down_for_a_while_then_every_fax_is_delivered_once(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    relay.refuse_with = "421 4.3.2 shutting down"
    bridge = await make_bridge(routing=ROUTING)
    for n in range(3):
        await faxmax.push_incoming(tiff=make_tiff(1), cld="902121110000", cli=f"90312555000{n}")
    await wait_until(lambda: inbound_counts(bridge), {"mailed": 3})

    async def attempts() -> bool:
        rows = await query(bridge.store.path, "SELECT MIN(attempts) FROM outbox")
        return bool(rows[0][0] and rows[0][0] >= 2)

    await wait_until(attempts, True)
    assert relay.messages == []
    relay.refuse_with = None
    mails = await relay.wait_for(3)
    await wait_until(lambda: bridge.store.outbox.counts(), {"sent": 3})
    assert sorted(m.message["Message-ID"] for m in mails) == sorted(
        {m.message["Message-ID"] for m in mails})
    assert len(relay.messages) == 3


async def test_provider_text_cannot_inject_headers_and_non_ascii_round_trips(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, tmp_path: Path
) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "fax.subject.j2").write_text(
        "FAX受信 / Faks alındı: {{ sender }} ({{ station }})\n", encoding="utf-8")
    await make_bridge(routing=ROUTING, mail={"templates_dir": str(overrides)})
    await faxmax.push_incoming(tiff=make_tiff(1), cld="902121110000", cli="非通知\r\nBcc: x@evil",
                               remote_station_id="ŞİRKET\r\nX-Evil: 1")
    [mail] = await relay.wait_for(1)
    assert b"\r\nX-Evil:" not in mail.data and b"\r\nBcc:" not in mail.data
    msg = mail.message
    assert msg["Subject"] == "FAX受信 / Faks alındı: 非通知 Bcc: x@evil (ŞİRKET X-Evil: 1)"
    assert msg["X-Evil"] is None and msg["Bcc"] is None
    filename = attachment(msg)[0]
    assert filename.endswith("-from-非通知 Bcc: x@evil.pdf")
    assert all(ord(c) < 128 for c in mail.data.decode("ascii"))  # RFC 2047/2231 on the wire


async def test_replay_quarantine_delivers_what_was_kept_and_keeps_what_still_fails(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing=ROUTING)
    good = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000")
    # As if an older version had failed to understand a good event:
    await bridge.store.inbound.record_push(
        source="faxmax-push", events=[], faxes=[], now=1.0, rules=RULES,
        bad=[(json.dumps(good).encode(), "not understood by an older version"),
             (b"{still broken", "the body is not JSON")])
    result = await asyncio.to_thread(
        run_cli, "replay-quarantine", "--data-dir", bridge.settings.data_dir)
    assert result.returncode == 1  # one body is still not understood
    assert result.stdout.splitlines()[:2] == [
        "#1: replayed (0 status event(s), 1 new fax(es))",
        "#2: still not understood: the body is not JSON"]
    assert result.stdout.splitlines()[-1] == (
        "done; the running service was told and sends it now")  # SIGUSR1, no minute's wait
    [mail] = await relay.wait_for(1)
    assert mail.rcpt_tos == ["istanbul@example.com"]
    assert [q.id for q in await bridge.store.inbound.quarantined(pending_only=True)] == [2]


# --- 秒速FAX Plus polling -----------------------------------------------------------------


@pytest.mark.parametrize("sender_field", ["senderNumber", "sendNumber"])
async def test_polling_fetches_each_new_fax_once_and_never_too_soon_across_a_restart(
    tmp_path: Path, clock: FakeClock, sender_field: str
) -> None:
    sim = ByosokuSimulator(clock=clock, log_interval=60, pdf_interval=1,
                           sender_field=sender_field)
    await sim.start()
    rig = PollerRig(tmp_path, sim, clock, initial_sync="deliver")
    try:
        poller = await rig.open()
        ids = [sim.add_fax(fax_number="0368680000", sender="0312345678", pages=2)
               for _ in range(3)]
        await rig.run_for(poller, 30)
        assert dict(sim.fetched) == {i: 1 for i in ids}
        faxes = await rig.store.inbound.all()
        assert {f.sender_number for f in faxes} == {"0312345678"}
        assert {f.pages for f in faxes} == {2}
        await rig.close()  # restart in the middle of a poll interval
        poller = await rig.open()
        more = [sim.add_fax(fax_number="0368680000") for _ in range(2)]
        await rig.run_for(poller, 200)
        assert dict(sim.fetched) == {i: 1 for i in ids + more}
        assert sim.violations == 0
        assert min(b - a for a, b in itertools.pairwise(sim.log_calls)) >= 60
        pdf_times = [t for t, _, _ in sim.pdf_calls]
        assert min(b - a for a, b in itertools.pairwise(pdf_times)) >= 1
    finally:
        await rig.close()
        await sim.stop()


async def test_a_restart_right_after_a_call_waits_the_full_interval(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator
) -> None:
    rig = PollerRig(tmp_path, byosoku, clock)
    poller = await rig.open()
    await poller.run_once()  # the first log call
    await rig.close()
    clock.advance(5)
    poller = await rig.open()
    assert await poller.next_due() == pytest.approx(clock.now() - 5 + 61)
    assert not await poller.run_once()
    await rig.run_for(poller, 120)
    assert byosoku.violations == 0
    await rig.close()


@pytest.mark.parametrize(("initial_sync", "delivered"), [("skip", 0), ("deliver", 2)])
async def test_initial_sync_decides_whether_faxes_already_in_the_log_are_mailed(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator, initial_sync: str,
    delivered: int,
) -> None:
    for _ in range(2):
        byosoku.add_fax(fax_number="0368680000")
    rig = PollerRig(tmp_path, byosoku, clock, initial_sync=initial_sync)
    poller = await rig.open()
    await rig.run_for(poller, 10)
    later = byosoku.add_fax(fax_number="0368680000")
    await rig.run_for(poller, 70)
    counts = await rig.store.inbound.counts()
    assert counts.get("received", 0) == delivered + 1
    assert counts.get("skipped", 0) == 2 - delivered
    assert byosoku.fetched[later] == 1
    await rig.close()


async def test_err_no_pdf_for_one_fax_does_not_block_the_others(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator
) -> None:
    missing = byosoku.add_fax(fax_number="0368680000", sender="0311112222")
    late = byosoku.add_fax(fax_number="0368680000")
    ok = byosoku.add_fax(fax_number="0368680000")
    byosoku.delete_pdf(missing)
    byosoku.no_pdf_times[late] = 2  # not ready for the first two calls
    rig = PollerRig(tmp_path, byosoku, clock, initial_sync="deliver", pdf_attempts=3,
                    retry_base=5, retry_cap=20)
    poller = await rig.open()
    await rig.run_for(poller, 5)
    assert byosoku.fetched[ok] == 1  # fetched while the others wait
    await rig.run_for(poller, 300)
    states = {f.external_id: f.state for f in await rig.store.inbound.all()}
    assert states == {missing: InboundState.FAILED, late: InboundState.RECEIVED,
                      ok: InboundState.RECEIVED}
    [alert] = await rig.alerts()
    assert "could not be downloaded" in alert and missing in alert.replace("=\n", "")
    assert byosoku.violations == 0
    await rig.close()


async def test_only_err_no_pdf_answers_count_towards_giving_a_fax_up(
    tmp_path: Path, clock: FakeClock, byosoku: ByosokuSimulator
) -> None:
    """`pdf_attempts` is about a PDF that may never come (ERR_NO_PDF); a busy provider before
    it says nothing about that, and must not use the fax's allowance up."""
    lagging = byosoku.add_fax(fax_number="0368680000", sender="0311112222")
    byosoku.pdf_faults.extend([ByosokuFault.error(503, "ERR_SERVER_BUSY")] * 4)
    byosoku.no_pdf_times[lagging] = 2  # then not ready for two more calls
    rig = PollerRig(tmp_path, byosoku, clock, initial_sync="deliver", pdf_attempts=3,
                    retry_base=5, retry_cap=20)
    poller = await rig.open()
    await rig.run_for(poller, 600)
    [fax] = await rig.store.inbound.all()
    assert (fax.state, fax.attempts, fax.no_pdf_answers) == (InboundState.RECEIVED, 7, 2)
    assert byosoku.fetched[lagging] == 1
    assert await rig.alerts() == []
    assert byosoku.violations == 0
    await rig.close()


async def test_polled_faxes_are_routed_by_either_number_form_and_mailed(
    make_bridge: MakeBridge, relay: RelaySink, clock: FakeClock, byosoku: ByosokuSimulator,
    faxmax: FaxMaxSimulator,
) -> None:
    byosoku_settings = {"enabled": True, "log_url": byosoku.log_url, "pdf_url": byosoku.pdf_url,
                        "poll_interval": 0.3, "pdf_interval": 0.05, "initial_sync": "deliver",
                        "pdf_method": "POST"}
    byosoku.clock = SystemClock()  # the whole service runs on wall-clock time
    byosoku.log_interval, byosoku.pdf_interval = 0.3, 0.05
    routing = {"numbers": {"0368680000": ("tokyo@example.com",),
                           "81612345678": ("sapporo@example.com",)}, "admin": ADMIN}
    pdf = make_pdf(3)
    byosoku.add_fax(fax_number="0368680000", sender="0312345678", pages=3, pdf=pdf,
                    received_at=datetime.datetime(2026, 11, 23, 3, 9))  # Japan time
    byosoku.add_fax(fax_number="0612345678", sender="", pages=1)
    await make_bridge(routing=routing, byosoku=byosoku_settings,
                      mail={"timezone": "Asia/Tokyo"})
    mails = await relay.wait_for(2)
    by_rcpt = {m.rcpt_tos[0]: m.message for m in mails}
    assert set(by_rcpt) == {"tokyo@example.com", "sapporo@example.com"}
    tokyo = by_rcpt["tokyo@example.com"]
    assert tokyo["Subject"] == "Fax from 03-1234-5678 to 03-6868-0000 (3 pages)"
    filename, ctype, data = attachment(tokyo)
    assert (ctype, data) == ("application/pdf", pdf)
    assert filename == "fax-2026-11-23-0309-from-0312345678.pdf"
    assert {method for _, _, method in byosoku.pdf_calls} == {"POST"}
    assert "Via:       秒速FAX Plus" in tokyo.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert by_rcpt["sapporo@example.com"]["Subject"] == "Fax from withheld to 06-1234-5678 (1 page)"
    assert byosoku.violations == 0

