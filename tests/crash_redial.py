"""F10's crash round: SIGKILL around the redial of a busy line (docs/RELIABILITY.md F10).

FaxMAX takes the fax and pushes BUSY with no page sent; the service queues a redial
`REDIAL_DELAY` seconds later; the kill falls at a random instant from just after that push to
after the redial's own send call (which FaxMAX holds `REDIAL_STALL` seconds before answering):
before the redial, inside its send window, or after its answer. After the restart the job must
end reported, having gone to FaxMAX exactly twice (the busy call and one redial), whatever the
kill interrupted: a redial caught in its send window is `unknown` at the restart and is then
settled by its own push (F11), never sent a third time.
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass
from pathlib import Path

from bridge.simulators import Fault, Outcome
from tests.crash_rounds import (
    FAX_TO,
    SENDER,
    Crashes,
    Figures,
    Mail,
    mails_of,
    message_id,
    open_rig,
)
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.smtp_client import smtp_send

REDIAL_DELAY = 1.0
REDIAL_STALL = 0.6
KILL_WINDOW = REDIAL_DELAY + REDIAL_STALL + 0.4  # after the busy push: the whole redial
FAX_TO_DIGITS = "902122222525"  # FAX_TO as FaxMAX sees it


@dataclass
class RedialRound:
    seed: int
    kill_after: float  # seconds after the busy push was recorded
    state_at_kill: str | None  # job 1: queued (before the redial), sending, or final
    final_states: dict[int, str | None]
    sends: collections.Counter[str]  # api_id -> faxes FaxMAX took
    mails: list[Mail]
    crashes: Crashes

    def reports(self, job_id: int) -> list[Mail]:
        return [m for m in self.mails if f"job-{job_id}." in m.message_id]

    def figures(self) -> Figures:
        duplicated = sum(n - 1 for n in collections.Counter(
            m.message_id for m in self.mails).values())
        delivered = any(".delivered@" in m.message_id for m in self.reports(1))
        return self.crashes.figures(
            acknowledged=len(self.final_states), lost=0 if delivered else 1,
            faxes_duplicated=max(0, self.sends["1"] - 2) + max(0, self.sends["2"] - 1),
            emails_duplicated=duplicated)

    def problems(self) -> list[str]:
        found = self.crashes.problems()
        if self.final_states != {1: "delivered", 2: "delivered"}:
            found.append(f"final job states {self.final_states}, wanted both delivered")
        if self.sends != {"1": 2, "2": 1}:
            found.append(f"faxes FaxMAX took per job (api_id): {dict(self.sends)}, wanted job "
                         "1 twice (the busy call and one redial) and job 2 once")
        final = [m for m in self.reports(1) if ".delivered@" in m.message_id]
        if len(final) != 1:
            found.append(f"{len(final)} delivery reports about job 1, wanted one")
        for report in final:
            if report.to != (SENDER,):
                found.append(f"the report about job 1 went to {report.to}, not the sender")
            if "line busy (BUSY), no page sent; dialled again at" not in report.text:
                found.append(f"the report about job 1 does not list the busy attempt:\n"
                             f"{report.text}")
        return found


async def redial_round(rng: random.Random, workdir: Path, seed: int) -> RedialRound:
    kill_after = rng.uniform(0.0, KILL_WINDOW)
    document = ("a.pdf", "application/pdf", make_pdf(1))
    async with open_rig(workdir, faxmax={"redial_delays": (REDIAL_DELAY,)}) as rig:

        def reported(job_id: int) -> bool:
            return any(f"job-{job_id}.delivered@" in message_id(m) for m in rig.relay.messages)

        def dialled_once() -> bool:
            return bool(rig.serve.query("SELECT 1 FROM jobs WHERE id = 1 AND state = 'queued'"
                                        " AND dials = 1"))

        rig.faxmax.outcomes[FAX_TO_DIGITS] = collections.deque([Outcome.busy()])
        # The first call is answered at once; the redial's answer is held a little, so that
        # some kills fall inside its send window.
        rig.faxmax.faults.extend([Fault.stall(0), Fault.stall(REDIAL_STALL)])
        first = await smtp_send(rig.serve.smtp_port, fax_mail(document, subject="Busy"),
                                rcpts=[FAX_TO])
        assert first.data == (250, "2.0.0 queued as fax jobs 1"), first
        await rig.until(dialled_once, "the busy push to queue a redial")
        await asyncio.sleep(kill_after)
        state_at_kill = rig.job_state(1)
        await rig.crash()
        await rig.restart()
        await rig.until(lambda: reported(1), "the delivery report about job 1", timeout=30)
        second = await smtp_send(rig.serve.smtp_port, fax_mail(document, subject="Barrier"),
                                 rcpts=[FAX_TO])
        assert second.data == (250, "2.0.0 queued as fax jobs 2"), second
        await rig.until(lambda: reported(2), "a report about job 2", timeout=20)
        await rig.settle()
        sends = collections.Counter(str(fax.api_id) for fax in rig.faxmax.faxes)
        return RedialRound(seed, kill_after, state_at_kill,
                           {1: rig.job_state(1), 2: rig.job_state(2)}, sends,
                           mails_of(rig.relay), rig.crashes)
