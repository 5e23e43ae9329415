"""The service's own pipeline (bridge/pipeline.py) on a fake clock, driven worker by worker.

Not the whole Bridge: its workers run as tasks that draw random jitter and sleep on the wall
clock, while the tests of retry schedules and provider limits need every time exact (jitter
fixed at 0, so each delay is half its nominal value) and days of it in milliseconds. A rig
builds the pipeline the service builds, passing in what it must control, and `run_workers`
lets simulated time pass, each worker acting exactly when it says its work is due.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from bridge.clock import Clock, FakeClock
from bridge.config import ByosokuSettings, FaxmaxSettings, MailSettings, RoutingSettings, Settings
from bridge.mail import Envelope as MailEnvelope
from bridge.mail import SmtpTransport
from bridge.pipeline import Pipeline, build_pipeline
from bridge.providers.faxmax import FaxMaxClient, SendResult
from bridge.sandbox import Sandbox
from bridge.simulators import ByosokuSimulator
from bridge.store import JobState, NewMessage, Store
from bridge.workers.base import Worker
from bridge.workers.inbox import Inbox
from bridge.workers.poller import Poller
from tests.docfactory import make_pdf
from tests.settings import settings_for
from tests.sql import query

T = TypeVar("T")

MakePipeline = Callable[..., Pipeline]
"""The `make_pipeline` fixture: `make_pipeline(settings, store, clock, **parts)` is
`build_pipeline`, and what it built is closed after the test."""

ADMIN = "admin@example.com"
ROUTED = {"902121110000": ("istanbul@example.com",), "0368680000": ("tokyo@example.com",)}
NUMBER = "902122222525"
"""Where `OutboundRig.queue_fax` sends its fax."""


def no_jitter() -> float:
    return 0.0


async def run_workers(clock: FakeClock, seconds: float, *workers: Worker) -> None:
    """Let simulated time pass, each worker acting exactly when it says its work is due.

    A worker that says work is due now and then does none would spin in the service; here
    that fails the test at once instead of hanging it."""
    until = clock.now() + seconds
    while True:
        busy = True
        while busy:
            busy = False
            for worker in workers:
                while await worker.run_once():
                    busy = True
        dues = [due for worker in workers if (due := await worker.next_due()) is not None]
        due = min(dues, default=None)
        if due is None or due > until:
            clock.advance(max(0.0, until - clock.now()))
            return
        assert due > clock.now(), f"hot loop: work due at {due} is never done"
        clock.advance(due - clock.now())


# --- 秒速FAX Plus: the poller, and the inbox that mails what it fetched -----------------------


class InlineSandbox(Sandbox):
    """Runs the inbox's check of a received PDF in a thread, not in a fresh process.

    These tests are about the poller; a process per fax (0.1-0.4 s each here) would make 200
    faxes take most of a minute. The sandbox's limits have their own tests (B6, B7)."""

    async def run(self, func: Callable[..., T], *args: Any, what: str = "the document") -> T:
        return await asyncio.to_thread(func, *args)


class PollerRig:
    """The real poller, client, store and simulator, on one fake clock. Each `open()` is a
    start of the service on the same data directory."""

    def __init__(self, tmp_path: Path, sim: ByosokuSimulator, clock: FakeClock, *,
                 sandbox: Sandbox | None = None, **byosoku: Any) -> None:
        self.tmp_path, self.sim, self.clock, self.sandbox = tmp_path, sim, clock, sandbox
        self.settings: Settings = replace(
            settings_for(tmp_path, "http://127.0.0.1:9/unused"),
            routing=RoutingSettings(numbers=ROUTED, default=("frontdesk@example.com",),
                                    admin=ADMIN),
            byosoku=ByosokuSettings(enabled=True, log_url=sim.log_url, pdf_url=sim.pdf_url,
                                    **byosoku))

    async def open(self) -> Poller:
        self.store = await Store.open(self.settings.data_path / "fax-bridge.sqlite3")
        self.pipeline = build_pipeline(self.settings, self.store, self.clock,
                                       sandbox=self.sandbox, jitter=no_jitter)
        assert self.pipeline.poller is not None  # [byosoku] is enabled
        return self.pipeline.poller

    async def close(self) -> None:
        await self.pipeline.close()
        await self.store.close()

    async def run_for(self, poller: Poller, seconds: float) -> None:
        await run_workers(self.clock, seconds, poller)

    async def alerts(self) -> list[str]:
        rows = await query(self.store.path, "SELECT body FROM outbox WHERE recipients LIKE ?",
                           (f'%{ADMIN}%',))
        return [bytes(r[0]).decode() for r in rows]


@contextlib.asynccontextmanager
async def poller_rig(tmp_path: Path, sim: ByosokuSimulator, clock: FakeClock,
                     **byosoku: Any) -> AsyncIterator[tuple[PollerRig, Poller, Inbox]]:
    """The real poller, and the inbox that turns each fetched fax into its email."""
    rig = PollerRig(tmp_path, sim, clock, sandbox=InlineSandbox(), **byosoku)
    poller = await rig.open()
    try:
        yield rig, poller, rig.pipeline.inbox
    finally:
        await rig.close()


# --- outbound: the real Sender, Reporter and Mailer ------------------------------------------


class TimedFaxMaxClient(FaxMaxClient):
    """The real FaxMAX client, noting the simulated time of every send call."""

    def __init__(self, settings: FaxmaxSettings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock
        self.calls: list[float] = []

    async def send_fax(self, *, job_id: int, number: str, document: Path,
                       cover: Path | None, resolution: str, paper_size: str) -> SendResult:
        self.calls.append(self.clock.now())
        return await super().send_fax(job_id=job_id, number=number, document=document,
                                      cover=cover, resolution=resolution,
                                      paper_size=paper_size)


class TimedSmtpTransport(SmtpTransport):
    """The real relay transport, noting the simulated time of every delivery attempt."""

    def __init__(self, settings: MailSettings, clock: Clock) -> None:
        super().__init__(settings)
        self.clock = clock
        self.attempts: list[float] = []

    async def deliver(self, envelope: MailEnvelope) -> str:
        self.attempts.append(self.clock.now())
        return await super().deliver(envelope)


class OutboundRig:
    """A fax job through the real Sender, Reporter and Mailer, one store, one fake clock."""

    def __init__(self, tmp_path: Path, clock: FakeClock, faxmax_url: str, relay_port: int,
                 **sections: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.clock = clock
        self.settings = settings_for(tmp_path, faxmax_url, relay_port, **sections)

    async def open(self) -> None:
        s = self.settings
        self.store = await Store.open(s.data_path / "fax-bridge.sqlite3")
        self.client = TimedFaxMaxClient(s.faxmax, self.clock)
        self.transport = TimedSmtpTransport(s.mail, self.clock)
        self.pipeline: Pipeline = build_pipeline(s, self.store, self.clock, faxmax=self.client,
                                                 transport=self.transport, jitter=no_jitter)
        self.sender = self.pipeline.sender
        self.reporter = self.pipeline.reporter
        self.mailer = self.pipeline.mailer

    async def close(self) -> None:
        await self.pipeline.close()
        await self.client.close()
        await self.store.close()

    async def queue_fax(self) -> int:
        """A one-page fax from alice@example.com to NUMBER, converted and ready to send."""
        document = self.tmp_path / "fax.pdf"
        document.write_bytes(make_pdf(1))
        [job_id] = await self.store.jobs.accept(
            NewMessage(mail_from="alice@example.com", header_from="alice@example.com",
                       subject="Invoice 42", message_id="<original-1@example.com>", refs="",
                       spool_path=""),
            [("02122222525@fax.local", NUMBER)], self.clock.now())
        job = await self.store.jobs.get(job_id)
        assert job is not None
        await self.store.jobs.converted(job.message, document_path=str(document), pages=1,
                                            cover_html=None, left_out=[])
        return job_id

    async def run_for(self, seconds: float) -> None:
        await run_workers(self.clock, seconds, self.sender, self.reporter, self.mailer)

    async def job_state(self, job_id: int) -> tuple[JobState, int, str]:
        job = await self.store.jobs.get(job_id)
        assert job is not None
        return job.state, job.attempts, job.detail


@contextlib.asynccontextmanager
async def outbound_rig(tmp_path: Path, clock: FakeClock, faxmax_url: str, relay_port: int,
                       **sections: dict[str, Any]) -> AsyncIterator[OutboundRig]:
    rig = OutboundRig(tmp_path, clock, faxmax_url, relay_port, **sections)
    await rig.open()
    try:
        yield rig
    finally:
        await rig.close()
