"""Busy lines (docs/RELIABILITY.md F10): a fax whose final push says the line was busy or
did not answer, with no page transferred, is dialled again on `faxmax.redial_delays`, as a new
attempt of the same job, and reported once at the end with every attempt; a push that shows
pages went through, or does not say, is never dialled again. At most
`faxmax.per_number_concurrency` faxes to one number are in flight, the rest wait in order, and
other numbers are not held up.

The FaxMAX simulator plays the outcomes FaxMAX does not document (`Outcome`), and a fax
machine with one line (`lines`), which answers a second call while it is in one with BUSY.
"""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from bridge.clock import FakeClock
from bridge.simulators import FaxMaxSimulator, Outcome
from bridge.store import JobState
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state, wait_until

NUMBER = "902122222525"
OTHER = "903125550000"
OTHER_ADDRESS = "03125550000@fax.local"
PDF = ("a.pdf", "application/pdf", make_pdf(3))


def report_text(relay: RelaySink, n: int = 0) -> str:
    body = relay.messages[n].message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def redial_due(bridge: object, job_id: int, dials: int) -> float:
    """Wait until the job is queued again after its `dials`-th dial; its next attempt time."""
    store = bridge.store  # type: ignore[attr-defined]

    async def read() -> tuple[str, int] | None:
        job = await store.jobs.get(job_id)
        return None if job is None else (job.state, job.dials)

    await wait_until(read, (JobState.QUEUED, dials))
    job = await store.jobs.get(job_id)
    assert job is not None
    return float(job.next_attempt_at)


async def test_a_busy_line_is_dialled_again_on_schedule_and_reported_once_with_every_attempt(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    faxmax.outcomes[NUMBER] = collections.deque(
        [Outcome.busy(), Outcome.no_answer(), Outcome("SUCCESS")])
    bridge = await make_bridge(clock=clock)
    start = clock.now()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))

    assert await redial_due(bridge, 1, 1) == start + 120  # the first of redial_delays
    assert len(faxmax.faxes) == 1
    clock.advance(119)
    bridge.wake()
    assert not await bridge.pipeline.sender.run_once()  # type: ignore[union-attr]
    assert len(faxmax.faxes) == 1  # a second early
    clock.advance(1)
    bridge.wake()
    assert await redial_due(bridge, 1, 2) == start + 120 + 300
    assert len(faxmax.faxes) == 2
    assert relay.messages == []  # no report while it is being dialled again

    clock.advance(300)
    bridge.wake()
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await relay.wait_for(1)
    assert report.message["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    text = report_text(relay)
    assert "Your fax to (0212) 222 25 25 was delivered at attempt 3." in text
    lines = [line.strip() for line in text.splitlines()]
    attempts = lines[lines.index("Attempts:") + 1:lines.index("Attempts:") + 4]
    assert attempts[0].startswith("1. ")
    assert "line busy (BUSY), no page sent; dialled again at" in attempts[0]
    assert attempts[1].startswith("2. ")
    assert "no answer (NO_ANSWER), no page sent; dialled again" in attempts[1]
    assert attempts[2].startswith("3. ")
    assert attempts[2].endswith("delivered (SUCCESS), 3 page(s) sent")
    # One job, three faxes FaxMAX took, each with the job id as its api_id.
    assert [f.api_id for f in faxmax.faxes] == ["1", "1", "1"]
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.dials == 3
    assert [a.status for a in await bridge.store.jobs.attempts(job)] == [
        "BUSY", "NO_ANSWER", "SUCCESS"]

    shown = await asyncio.to_thread(run_cli, "show", "1", "--json", "--data-dir",
                                    bridge.settings.data_dir)
    detail = json.loads(shown.stdout)
    assert [(a["status"], a["pages"]) for a in detail["attempts"]] == [
        ("BUSY", 0), ("NO_ANSWER", 0), ("SUCCESS", 3)]


async def test_redials_end_after_the_last_delay_with_every_dial_counted(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    faxmax.outcomes[NUMBER] = collections.deque([Outcome.busy()] * 3)
    bridge = await make_bridge(clock=clock, faxmax={"redial_delays": (10, 20)})
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    for dials, delay in ((1, 10), (2, 20)):
        await redial_due(bridge, 1, dials)
        clock.advance(delay)
        bridge.wake()
    await wait_for_state(bridge, 1, JobState.FAILED)
    assert len(faxmax.faxes) == 3  # 1 + len(redial_delays), and no more
    [report] = await relay.wait_for(1)
    assert report.message["Subject"] == "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    text = report_text(relay)
    assert "The number was dialled 3 times; no call went through." in text
    assert text.count("line busy (BUSY), no page sent") == 3


async def test_faxmax_own_redials_count_against_the_same_budget(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    """FaxMAX dialled three times before its final BUSY: the next dial is the fourth, after
    the third delay; a second such push uses up the budget of six dials."""
    faxmax.outcomes[NUMBER] = collections.deque([Outcome.busy(tried=3), Outcome.busy(tried=3)])
    bridge = await make_bridge(clock=clock)
    start = clock.now()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert await redial_due(bridge, 1, 3) == start + 600  # redial_delays[2]
    clock.advance(600)
    bridge.wake()
    await wait_for_state(bridge, 1, JobState.FAILED)
    assert len(faxmax.faxes) == 2
    await relay.wait_for(1)
    text = report_text(relay)
    assert "The number was dialled 6 times; no call went through." in text
    assert "(FaxMAX dialled 3 times)" in text


@pytest.mark.parametrize(("outcome", "words"), [
    pytest.param(Outcome.cut_off(2), ["could NOT be delivered completely: 2 of 3 pages "
                                      "confirmed.", "Reason: Call dropped after 2 page(s)",
                                      "so it was NOT sent again automatically"],
                 id="pages-went-through"),
    pytest.param(Outcome("BUSY", pages=None), [
        "FaxMAX did not say whether any page went through",
        "line busy (BUSY), pages sent not reported"],
                 id="page-count-missing"),
])
async def test_a_fax_that_may_have_printed_is_not_dialled_again_and_a_person_decides(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, outcome: Outcome,
    words: list[str],
) -> None:
    faxmax.outcomes[NUMBER] = collections.deque([outcome])
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, JobState.FAILED)
    await relay.wait_for(1)
    text = report_text(relay)
    assert [w for w in words if w not in text] == []
    assert "(fax-bridge retry 1)" in text
    assert len(faxmax.faxes) == 1


async def test_a_burst_to_one_number_queues_one_call_at_a_time_beside_other_numbers(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """Five mails to a fax machine with one line, and three to another number, at once: the
    five go one after the other, in the order they came, with no busy line; the others are
    not held up behind them."""
    faxmax.push_delay = 0.3  # how long each call holds the line
    faxmax.lines[NUMBER] = 1
    bridge = await make_bridge(faxmax={"concurrency": 4, "redial_delays": ()})
    await asyncio.gather(*(smtp_send(bridge.smtp_port, fax_mail(PDF)) for _ in range(5)))
    await asyncio.gather(*(smtp_send(bridge.smtp_port, fax_mail(PDF, to=OTHER_ADDRESS),
                                     rcpts=[OTHER_ADDRESS]) for _ in range(3)))
    for job_id in range(1, 9):
        await wait_for_state(bridge, job_id, JobState.DELIVERED, timeout=20)
    assert faxmax.most_in_call[NUMBER] == 1
    to_number = [f for f in faxmax.faxes if f.phone == NUMBER]
    assert [f.api_id for f in to_number] == ["1", "2", "3", "4", "5"]  # in order
    # The other number's faxes did not wait for the burst: all three went before the last
    # of the five.
    order = [f.api_id for f in faxmax.faxes]
    assert max(order.index(str(j)) for j in (6, 7, 8)) < order.index("5")
    assert len(faxmax.faxes) == 8


async def test_without_the_per_number_limit_the_same_burst_collides(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """The control for the test above: the simulated line is really single, so with three
    calls allowed at once some of the five find it busy."""
    faxmax.push_delay = 0.3
    faxmax.lines[NUMBER] = 1
    bridge = await make_bridge(faxmax={"concurrency": 4, "per_number_concurrency": 3,
                                       "redial_delays": ()})
    await asyncio.gather(*(smtp_send(bridge.smtp_port, fax_mail(PDF)) for _ in range(5)))
    states = [await wait_for_state(bridge, j, JobState.DELIVERED, JobState.FAILED, timeout=20)
              for j in range(1, 6)]
    assert JobState.FAILED in states
    assert faxmax.most_in_call[NUMBER] == 1  # a busy call never connects


async def test_a_fax_whose_final_status_never_comes_holds_its_line_only_for_line_hold(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
) -> None:
    """FaxMAX says only QUEUED for the first fax, never a final status: the second fax to the
    same number waits `faxmax.line_hold`, not `faxmax.status_timeout` (a day)."""
    faxmax.outcomes[NUMBER] = collections.deque([Outcome("QUEUED", pages=None)])
    bridge = await make_bridge(clock=clock, faxmax={"line_hold": 600})
    for _ in range(2):
        await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, JobState.SUBMITTED)
    sender = bridge.pipeline.sender  # type: ignore[union-attr]
    assert await sender.next_due() == clock.now() + 600  # the line's hold ends
    clock.advance(599)
    assert not await sender.run_once()
    assert len(faxmax.faxes) == 1
    clock.advance(1)
    bridge.wake()
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    assert len(faxmax.faxes) == 2
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.state is JobState.SUBMITTED  # still waiting for its status
