"""Unknown outcomes settled by FaxMAX's own pushes (docs/RELIABILITY.md F11): a send whose
answer never came is `unknown` with no fax id; a push for a fax id the store does not know,
to the number of exactly one such job called near the push's `requested_on`, settles it, and
its sender gets the corrected report. Two candidates, or none, change nothing and are listed
by `fax-bridge unmatched`.

The simulator withholds the answer (`Fault.reset()`: FaxMAX took the fax, then the connection
broke) and pushes the fax's status as usual.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta

from bridge.simulators import Fault, FaxMaxSimulator
from bridge.simulators.formats import TURKEY_TIME, format_provider_time
from bridge.store import JobState
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

NUMBER = "902122222525"
PDF = ("a.pdf", "application/pdf", make_pdf(2))
MATCHED_WORDS = "matched by number\nand time"


def text_of(relay: RelaySink, n: int) -> str:
    body = relay.messages[n].message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


async def cli(*args: str) -> str:
    done = await asyncio.to_thread(run_cli, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_push_for_an_unknown_jobs_fax_settles_it_and_corrects_the_report(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    faxmax.push_delay = 0.5  # the answer is lost first, and the sender told; then the push
    faxmax.faults.append(Fault.reset())
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await relay.wait_for(1)
    assert relay.messages[0].message["Subject"] == (
        "Fax to (0212) 222 25 25: outcome unknown: Invoice 42")

    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await relay.wait_for(2)
    assert relay.messages[1].message["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    assert MATCHED_WORDS in text_of(relay, 1)
    job = await bridge.store.jobs.get(1)
    assert job is not None
    assert (job.fax_id, job.matched) == (faxmax.faxes[0].fax_id, "number and time")
    assert len(faxmax.faxes) == 1  # settled, not sent again

    shown = await cli("show", "1", "--data-dir", bridge.settings.data_dir)
    assert f"(FaxMAX fax id {job.fax_id}, matched by number and time)" in shown
    assert "(matched by number and time)" in shown  # the attempt line
    assert await cli("unmatched", "--data-dir", bridge.settings.data_dir) == (
        "every status push belongs to a known fax\n")


async def test_a_push_that_came_before_the_send_turned_unknown_settles_it_at_once(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """The push is stored while the job is still `sending` (its fax id unknown to us), then
    the connection breaks: the job is settled in the transaction that makes it unknown, and
    its sender gets one report, the right one."""
    faxmax.push_before_response = True
    faxmax.faults.append(Fault.reset())
    bridge = await make_bridge()
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [report] = await relay.wait_for(1)
    assert report.message["Subject"] == "Fax delivered to (0212) 222 25 25: Invoice 42"
    await asyncio.sleep(0.3)  # a second report, were one coming, would be queued by now
    assert len(relay.messages) == 1


async def test_two_unknown_jobs_to_one_number_are_not_told_apart_and_are_listed(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    faxmax.push_delay = 0.5
    faxmax.faults.extend([Fault.reset(), Fault.reset()])
    bridge = await make_bridge()
    for _ in range(2):
        await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await relay.wait_for(2)  # both reported unknown
    await faxmax.wait_for_requests(2)
    # Both pushes are in (each fax's final one) and neither settled anything.
    data_dir = bridge.settings.data_dir

    async def listed() -> list[dict[str, object]]:
        return list(json.loads(await cli("unmatched", "--json", "--data-dir", data_dir)))

    deadline = asyncio.get_running_loop().time() + 10
    while len(found := await listed()) < 2:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.1)
    assert sorted(str(u["fax_id"]) for u in found) == sorted(f.fax_id for f in faxmax.faxes)
    assert all(u["candidates"] == [1, 2] and u["number"] == NUMBER for u in found)
    for job_id in (1, 2):
        job = await bridge.store.jobs.get(job_id)
        assert job is not None and (job.state, job.fax_id) == (JobState.UNKNOWN, None)
    shown = await cli("show", "1", "--data-dir", data_dir)
    assert shown.count("maybe:") == 2 and "also near the calls of job(s) 2" in shown
    assert len(relay.messages) == 2
    # `fax-bridge status` names them once they are no push that raced ahead of its answer.
    assert (await bridge.store.upkeep.snapshot(time.time())).unmatched == 0
    assert (await bridge.store.upkeep.snapshot(time.time() + 301)).unmatched == 2


async def test_pushes_with_no_candidate_change_nothing_and_are_listed(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """A push to a number no job called, one far outside the window of an unknown job's call,
    and one from another caller number on the account: none settles anything."""
    faxmax.push_delay = 60  # the unknown job's own fax is never pushed during the test
    faxmax.faults.append(Fault.reset())
    bridge = await make_bridge(faxmax={"cli": "902121110000"})
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await relay.wait_for(1)
    now = datetime.now(TURKEY_TIME)

    def event(number: str, requested: datetime, cli: str = "902121110000") -> dict[str, object]:
        return {"type": "OUTGOING_FAX", "id": str(uuid.uuid4()), "cli": cli, "cld": number,
                "status": "SUCCESS", "requested_on": format_provider_time(requested),
                "result_message": "Fax delivered", "page_count": 2, "total_page_count": 2,
                "tried_count": 1}

    strays = [event("903125550000", now), event(NUMBER, now - timedelta(hours=2)),
              event(NUMBER, now, cli="905321112233")]
    await faxmax.push_events(strays)
    found = json.loads(await cli("unmatched", "--json", "--data-dir", bridge.settings.data_dir))
    assert sorted(u["fax_id"] for u in found) == sorted(str(e["id"]) for e in strays)
    by_id = {u["fax_id"]: u for u in found}
    assert by_id[strays[0]["id"]]["candidates"] == []  # nobody called that number
    assert by_id[strays[1]["id"]]["candidates"] == []  # two hours off
    # Near in time, but from another caller number: the listing names the job an operator
    # may look at, and the store did not settle it.
    assert by_id[strays[2]["id"]]["candidates"] == [1]
    job = await bridge.store.jobs.get(1)
    assert job is not None and (job.state, job.fax_id) == (JobState.UNKNOWN, None)
    assert len(relay.messages) == 1
