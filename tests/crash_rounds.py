"""The crash rounds of docs/RELIABILITY.md F1–F4: each builds its own world (simulators, relay sink,
a fresh data directory and the real `fax-bridge serve`), kills the service with SIGKILL at
chosen and at random points, restarts it, and returns what it counted.

Each scenario is a `*_round` coroutine; its result's `problems()` applies the pass criteria and
`figures()` gives the counts. tests/test_crash.py runs a few rounds of each and asserts that no
round has a problem; `bench/crash_rounds.py` runs many more and prints the totals. Kill points
come from a seeded `random.Random`, so a failing round can be replayed with its seed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import io
import random
import smtplib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP
from pypdf import PdfWriter

from bridge.config import Settings
from bridge.simulators import ByosokuFault, ByosokuSimulator, Fault, FaxMaxSimulator
from bridge.store import Inbound
from bridge.store.rows import INBOUND
from bridge.workers.inbox import fax_message_id
from bridge.workers.poller import fax_file
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.process import ServeProcess
from tests.relay import Received, RelaySink
from tests.settings import settings_for
from tests.smtp_client import smtp_send

SEED = 20261123
CI_INTAKE_KILL_WINDOW = (0.3, 1.5)
"""F1 kill point, in seconds after the first `250` (the service parses mail in a sandbox that
takes most of a second to warm up, and a kill before any `250` would test nothing). The plan
says 1–3 s; the bench uses that."""

PLAN_INTAKE_KILL_WINDOW = (1.0, 3.0)

SESSIONS = 8  # F1 client threads, each one SMTP session at a time
MAILS_PER_SESSION = 20  # then reconnect: aiosmtpd caps commands per session
SEND_STALL = 2.0  # F2: FaxMAX holds its answer this long after taking the fax
PUSH_KILL_WINDOW = 0.006
"""F3 random kills: up to this long after the push starts. A push is committed and answered
within a few milliseconds here, so the kills fall before the commit, between the commit and
the 2xx, and after it (the bench prints the split)."""
POLL_INTERVAL = 0.5  # F4: loopback spacing, enforced by the simulator
PDF_INTERVAL = 1.5
"""Longer than a restart takes, so the PDF call after the kill in the download window tests
that the poller counts a call in flight at the crash as just answered."""
SENDER = "alice@example.com"
FAX_TO = "02122222525@fax.local"
ROUTED_TO = "frontdesk@example.com"
UNLIMITED = {"max_faxes_per_sender_per_hour": 10**7, "max_faxes_per_hour": 10**7,
             "max_pages_per_sender_per_day": 10**7, "max_pages_per_day": 10**7}
DEFERRED = "421 4.3.2 relay busy, try again later"
SETTLE_TIMEOUT = 20.0
"""Waiting for the last emails; normally well under a second (an email caught mid-delivery by
a kill is due again as soon as the service restarts)."""


def seed_for(scenario: str, round_no: int, base: int = SEED) -> int:
    """One seed per scenario and round, so that a failing round can be run again alone."""
    return base * 1000 + sum(map(ord, scenario)) * 100 + round_no


# --- the world of one round ------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What one round counted, in the units the bench adds up."""

    kills: int = 0
    acknowledged: int = 0  # F1: 250s; F2: jobs queued; F3: pushes answered 2xx; F4: faxes
    lost: int = 0  # acknowledged but not stored, or never mailed / reported
    stored_unacknowledged: int = 0  # F1: stored without a 250 (a client retry duplicates it)
    faxes_duplicated: int = 0  # F2: sent to FaxMAX again; F3, F4: stored again
    emails_duplicated: int = 0  # copies beyond the first, by Message-ID
    extra_pdf_calls: int = 0
    interval_violations: int = 0
    integrity_failures: int = 0
    emails_in_flight: int = 0  # kills that caught an email mid-delivery (sent again at start)

    def __add__(self, other: Figures) -> Figures:
        return Figures(*(a + b for a, b in zip(vars(self).values(), vars(other).values(),
                                                 strict=True)))


def message_id(received: Received) -> str:
    """The Message-ID as a mail reader compares it: a long one is folded onto its own line."""
    return str(received.message["Message-ID"]).strip()


def integrity_ro(serve: ServeProcess) -> str:
    """`PRAGMA integrity_check` on a read-only connection: unlike a read-write one, closing it
    cannot checkpoint the WAL away, so the restart still finds the store exactly as the kill
    left it."""
    return "\n".join(str(row[0]) for row in serve.query("PRAGMA integrity_check"))


def inbound_rows(serve: ServeProcess) -> list[Inbound]:
    """The received faxes as the store's own rows, from which the product derives the
    Message-ID each fax's email must carry."""
    rows = serve.query(f"SELECT {INBOUND.columns} FROM inbound ORDER BY id")
    return [INBOUND.load(row) for row in rows]


@dataclass
class Crashes:
    """What a round's kills left behind, each seen from outside right after the kill, plus
    the integrity check of the store once the service ran again."""

    integrity: list[str] = field(default_factory=list)
    kills: int = 0
    emails_in_flight: int = 0  # kills that caught an email mid-delivery

    def problems(self) -> list[str]:
        return [f"integrity_check #{n}: {result!r}"
                for n, result in enumerate(self.integrity) if result != "ok"]

    def figures(self, **counts: int) -> Figures:
        return Figures(kills=self.kills, emails_in_flight=self.emails_in_flight,
                       integrity_failures=len(self.problems()), **counts)


class WriteLock:
    """The store's write lock, taken from outside (as `fax-bridge retry` would take it): the
    service can still read, but its next commit waits. Killing it then kills it mid-commit.

    Released with ROLLBACK but kept open until the service runs again: the last connection to
    close checkpoints the WAL, which would tidy up the state the crash left behind."""

    def __init__(self, db_path: Path) -> None:
        self._db = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        self._db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        self._db.close()


@dataclass
class Rig:
    """One round's simulators, relay sink and service, on 127.0.0.1."""

    settings: Settings
    serve: ServeProcess
    faxmax: FaxMaxSimulator
    relay: RelaySink
    crashes: Crashes = field(default_factory=Crashes)

    async def crash(self) -> None:
        """SIGKILL, then look at the store as the kill left it: its integrity, and whether an
        email was being delivered (the mailer leases the email it is delivering)."""
        await self.serve.kill()
        self.crashes.kills += 1
        self.crashes.integrity.append(integrity_ro(self.serve))
        leased = self.serve.query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'"
                                  " AND leased_until IS NOT NULL")
        self.crashes.emails_in_flight += int(str(leased[0][0]))

    def check_integrity(self) -> None:
        """The store after the restart, while the service runs on it."""
        self.crashes.integrity.append(self.serve.integrity())

    async def restart(self) -> None:
        await self.serve.start()
        self.faxmax.push_url = self.serve.push_url

    async def until(self, ready: Callable[[], bool], what: str, *, timeout: float = 15.0,
                    poll: float = 0.01) -> None:
        """Re-check until `ready()`: the service works in the background, and the store (or a
        simulator's record) is the truth about what it did."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n"
                                     f"--- service log (tail) ---\n{self.serve.log()[-3000:]}")
            await asyncio.sleep(poll)

    def job_state(self, job_id: int) -> str | None:
        rows = self.serve.query("SELECT state FROM jobs WHERE id = ?", (job_id,))
        return str(rows[0][0]) if rows else None

    def drained(self) -> bool:
        """Every received fax mailed or given up, and no email waiting to leave."""
        return not self.serve.query(
            "SELECT 1 FROM inbound WHERE state IN ('fetching', 'received')"
            " UNION ALL SELECT 1 FROM outbox WHERE state = 'pending'")

    async def settle(self) -> None:
        """Wait until every email has left, check the store, stop the service: after that the
        relay's record is final, so counting duplicates there is not a matter of waiting long
        enough."""
        await self.until(self.drained, "the outbox to drain", timeout=SETTLE_TIMEOUT, poll=0.05)
        self.check_integrity()
        await self.serve.stop()

    def message_ids(self) -> collections.Counter[str]:
        return collections.Counter(message_id(m) for m in self.relay.messages)


@asynccontextmanager
async def open_rig(workdir: Path, **sections: dict[str, Any]) -> AsyncIterator[Rig]:
    """Start everything for one round; on the way out kill whatever still runs (a round that
    succeeded has already stopped the service gracefully)."""
    await asyncio.to_thread(workdir.mkdir, parents=True)
    faxmax = FaxMaxSimulator(token="sim-token", push_delay=0.01, push_retry_interval=0.05,
                             push_max_attempts=2000)
    relay = RelaySink()
    loop = asyncio.get_running_loop()
    await faxmax.start()
    server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    merged: dict[str, dict[str, Any]] = {"numbers": dict(UNLIMITED),
                                         "routing": {"default": (ROUTED_TO,)}}
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    settings = settings_for(workdir, faxmax.url, relay.port, **merged)
    serve = ServeProcess(settings, workdir)
    try:
        rig = Rig(settings, serve, faxmax, relay)
        await rig.restart()
        yield rig
    finally:
        if serve.running():
            await serve.kill()
        await faxmax.stop()
        server.close()
        await server.wait_closed()




# --- F1: SIGKILL during SMTP intake ----------------------------------------------------------


@dataclass
class SessionLog:
    """One client thread's view: what it handed to DATA, and what got `250`."""

    sent: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def smtp_client(port: int, tag: str, template: bytes, stop: threading.Event,
                first_ack: threading.Event, log: SessionLog | None = None) -> SessionLog:
    """Send mails as fast as the server takes them, until the server dies or `stop` is set.

    A Message-ID counts as sent just before its DATA; as acknowledged once `250` came back.
    Anything else the server says is a refusal, which this scenario does not expect. Pass
    `log` to watch it fill while the client runs.
    """
    log = log if log is not None else SessionLog()
    n = 0
    try:
        while not stop.is_set():
            with smtplib.SMTP("127.0.0.1", port, timeout=15) as client:
                for _ in range(MAILS_PER_SESSION):
                    message_id = f"<f1.{tag}.{n}@crash.test>"
                    n += 1
                    log.sent.append(message_id)
                    client.sendmail(SENDER, [FAX_TO],
                                    template.replace(b"<PLACEHOLDER>", message_id.encode()))
                    log.acknowledged.append(message_id)
                    first_ack.set()
                    if stop.is_set():
                        break
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
        log.refused.append(f"{log.sent[-1] if log.sent else 'connecting'}: {exc}")
    except (smtplib.SMTPServerDisconnected, OSError):
        pass  # the server was killed: what happens to the mail in flight is the question
    return log


@dataclass
class IntakeRound:
    seed: int
    kill_after: float
    sessions: int
    sent: set[str]
    acknowledged: set[str]
    refused: list[str]
    stored: set[str]
    unspooled: list[str]  # acknowledged, but the raw mail is not on disk
    crashes: Crashes

    @property
    def lost(self) -> set[str]:
        return self.acknowledged - self.stored

    @property
    def stored_unacknowledged(self) -> set[str]:
        return self.stored - self.acknowledged

    def figures(self) -> Figures:
        return self.crashes.figures(acknowledged=len(self.acknowledged), lost=len(self.lost),
                                    stored_unacknowledged=len(self.stored_unacknowledged))

    def problems(self) -> list[str]:
        found = self.crashes.problems()
        if not self.acknowledged:
            found.append("no mail got 250 before the kill: the round tested nothing")
        if self.lost:
            found.append(f"acknowledged but not stored: {sorted(self.lost)}")
        if self.unspooled:
            found.append(f"acknowledged but the raw mail is gone: {self.unspooled}")
        if not self.stored_unacknowledged <= self.sent:
            found.append(f"stored mails no client sent: {self.stored_unacknowledged - self.sent}")
        if len(self.stored_unacknowledged) > self.sessions:
            found.append(f"{len(self.stored_unacknowledged)} stored without 250, more than the "
                         f"{self.sessions} sessions that could have had one in flight")
        if self.refused:
            found.append(f"refused: {self.refused}")
        return found


def spooled(path: Path) -> bytes:
    """A large mail's spool file, or nothing if it is gone."""
    return path.read_bytes() if path.is_file() else b""


async def intake_round(rng: random.Random, workdir: Path, seed: int, *,
                       kill_window: tuple[float, float] = CI_INTAKE_KILL_WINDOW,
                       sessions: int = SESSIONS) -> IntakeRound:
    """F1: `sessions` clients send continuously; SIGKILL at a random point after the first
    `250`; restart; compare what the clients were told with what the store holds."""
    template = fax_mail(("scan.pdf", "application/pdf", make_pdf(1)),
                        message_id="<PLACEHOLDER>").as_bytes(policy=SMTP_POLICY)
    kill_after = rng.uniform(*kill_window)
    async with open_rig(workdir) as rig:
        stop, first_ack = threading.Event(), threading.Event()
        with concurrent.futures.ThreadPoolExecutor(max_workers=sessions) as pool:
            futures = [asyncio.wrap_future(pool.submit(
                smtp_client, rig.serve.smtp_port, f"{seed}.{n}", template, stop, first_ack))
                for n in range(sessions)]
            try:
                await rig.until(first_ack.is_set, "the first 250", timeout=20)
                await asyncio.sleep(kill_after)  # the kill point, not a wait for an outcome
                await rig.crash()
            finally:
                stop.set()
            logs = await asyncio.gather(*futures)
        await rig.restart()
        rows = rig.serve.query("SELECT message_id, spool_path, raw FROM messages")
        stored = {str(message_id) for message_id, _, _ in rows}
        acknowledged = {m for log in logs for m in log.acknowledged}
        kept = {str(message_id): raw if isinstance(raw, bytes) else spooled(Path(str(path)))
                for message_id, path, raw in rows}
        unspooled = sorted(m for m in acknowledged & stored if m.encode() not in kept[m])
        rig.check_integrity()
        await rig.serve.stop()
        return IntakeRound(seed, kill_after, sessions,
                           sent={m for log in logs for m in log.sent},
                           acknowledged=acknowledged,
                           refused=[r for log in logs for r in log.refused], stored=stored,
                           unspooled=unspooled, crashes=rig.crashes)


# --- F2: SIGKILL in the send window ----------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: tuple[str, ...]
    subject: str
    text: str


def mails_of(relay: RelaySink) -> list[Mail]:
    out = []
    for received in relay.messages:
        msg = received.message
        body = msg.get_body(("plain",))
        text = body.get_content() if isinstance(body, EmailMessage) else ""
        out.append(Mail(message_id(received), tuple(received.rcpt_tos), str(msg["Subject"]),
                        text))
    return out


UNKNOWN_WORDS = ("outcome unknown", "cannot tell whether your fax to (0212) 222 25 25 reached",
                 "It was NOT sent again automatically")


@dataclass
class SendWindowRound:
    seed: int
    kill_after: float  # seconds after FaxMAX logged the send request
    state_at_kill: str | None
    final_states: dict[int, str | None]
    sends: collections.Counter[str]  # api_id -> send requests FaxMAX received
    mails: list[Mail]
    crashes: Crashes

    def unknown_reports(self) -> list[Mail]:
        return [m for m in self.mails if "job-1." in m.message_id]

    def figures(self) -> Figures:
        duplicated = sum(n - 1 for n in collections.Counter(
            m.message_id for m in self.mails).values())
        reported = any(UNKNOWN_WORDS[0] in m.subject for m in self.unknown_reports())
        return self.crashes.figures(
            acknowledged=len(self.final_states), lost=0 if reported else 1,
            faxes_duplicated=sum(n - 1 for n in self.sends.values() if n > 1),
            emails_duplicated=duplicated)

    def problems(self) -> list[str]:
        found = self.crashes.problems()
        if self.state_at_kill != "sending":
            found.append(f"job 1 was {self.state_at_kill!r} at the kill, not 'sending': the "
                         "kill missed the send window")
        if self.final_states != {1: "unknown", 2: "delivered"}:
            found.append(f"final job states {self.final_states}, wanted 1 unknown, 2 delivered")
        if self.sends != {"1": 1, "2": 1}:
            found.append(f"send requests per job (api_id): {dict(self.sends)}, wanted one each")
        reports = self.unknown_reports()
        if len(reports) != 1:
            found.append(f"{len(reports)} reports about job 1, wanted exactly one: {reports}")
        for report in reports:
            if report.to != (SENDER,):
                found.append(f"the report about job 1 went to {report.to}, not the sender")
            missing = [w for w in UNKNOWN_WORDS if w not in report.subject + report.text]
            if missing:
                found.append(f"the report about job 1 does not say {missing}:\n"
                             f"{report.subject}\n{report.text}")
        return found


async def send_window_round(rng: random.Random, workdir: Path, seed: int) -> SendWindowRound:
    """F2: FaxMAX takes the fax and holds its answer; SIGKILL while it does; restart.

    A second mail after the report is the proof that the job is not resent: the sender claims
    due jobs in order, so by the time job 2 is delivered, job 1 would have gone again if it
    were ever going to.
    """
    kill_after = rng.uniform(0.0, SEND_STALL / 2)  # the plan: 1 s into a 2 s stall
    document = ("a.pdf", "application/pdf", make_pdf(1))
    async with open_rig(workdir) as rig:

        def reported(job_id: int) -> bool:
            return any(f"job-{job_id}." in message_id(m) for m in rig.relay.messages)

        rig.faxmax.faults.append(Fault.stall(SEND_STALL))
        # FaxMAX pushes nothing about this fax (as for an account without a notification
        # URL): a push would settle the unknown job by number and time (F11), and this round
        # is about what the sender is told when nothing ever does.
        rig.faxmax.push_url = None
        first = await smtp_send(rig.serve.smtp_port, fax_mail(document, subject="Crash"),
                                rcpts=[FAX_TO])
        assert first.data == (250, "2.0.0 queued as fax jobs 1"), first
        await rig.faxmax.wait_for_requests(1, timeout=20)
        await asyncio.sleep(kill_after)  # the kill point, inside the stall
        await rig.crash()
        state_at_kill = rig.job_state(1)
        await rig.restart()
        await rig.until(lambda: reported(1), "a report about job 1")
        second = await smtp_send(rig.serve.smtp_port, fax_mail(document, subject="Barrier"),
                                 rcpts=[FAX_TO])
        assert second.data == (250, "2.0.0 queued as fax jobs 2"), second
        await rig.until(lambda: reported(2), "a report about job 2", timeout=20)
        await rig.settle()
        sends: collections.Counter[str] = collections.Counter(
            str(phone.get("api_id"))
            for request in rig.faxmax.requests
            for phone in request.data.get("params", {}).get("phones", []))
        return SendWindowRound(seed, kill_after, state_at_kill,
                               {1: rig.job_state(1), 2: rig.job_state(2)}, sends,
                               mails_of(rig.relay), rig.crashes)


# --- F3: SIGKILL in webhook handling ---------------------------------------------------------

PUSH_KILLS = ("before-commit", "after-commit", "random")


@dataclass(frozen=True)
class KillPoint:
    """Where an F3 kill landed, as seen from outside right after it."""

    stored: bool  # the fax's row was committed
    acknowledged: bool  # FaxMAX had got a 2xx for the push

    def __str__(self) -> str:
        return (f"{'stored' if self.stored else 'not stored'}, "
                f"{'acknowledged' if self.acknowledged else 'not acknowledged'}")


@dataclass
class PushRound:
    seed: int
    kill_points: dict[str, KillPoint]
    fax_ids: list[str]
    inbound: collections.Counter[str]  # external id -> rows
    expected_ids: dict[str, str]  # fax id -> the Message-ID its email must carry
    delivered: collections.Counter[str]  # Message-ID -> copies at the relay
    acknowledged: int
    crashes: Crashes

    def figures(self) -> Figures:
        lost = sum(1 for f in self.fax_ids
                   if not self.inbound[f] or not self.delivered[self.expected_ids.get(f, "")])
        lost += sum(1 for k in self.kill_points.values() if k.acknowledged and not k.stored)
        return self.crashes.figures(
            acknowledged=self.acknowledged, lost=lost,
            emails_duplicated=sum(n - 1 for n in self.delivered.values() if n > 1),
            faxes_duplicated=sum(n - 1 for n in self.inbound.values() if n > 1))

    def problems(self) -> list[str]:
        found = self.crashes.problems()
        if self.inbound != collections.Counter(self.fax_ids):
            found.append(f"inbound rows per fax id {dict(self.inbound)}, wanted one per fax "
                         f"{self.fax_ids}")
        wanted = collections.Counter(self.expected_ids[f] for f in self.fax_ids
                                     if f in self.expected_ids)
        if self.delivered != wanted:
            found.append(f"emails by Message-ID {dict(self.delivered)}, wanted one per stored "
                         f"fax: {dict(wanted)}")
        for kind, point in self.kill_points.items():
            if point.acknowledged and not point.stored:
                found.append(f"{kind} kill: the push was answered 2xx but not stored")
        before = self.kill_points.get("before-commit")
        if before is None or before.stored:
            found.append(f"the before-commit kill found the fax {before}: it missed its point")
        return found


async def push_round(rng: random.Random, workdir: Path, seed: int) -> PushRound:
    """F3: three INCOMING_FAX pushes, each killed in a different way, each replayed 3 times.

    - before-commit: the test holds the store's write lock, so the handler reads and parses
      the push but waits to commit; SIGKILL 50-100 ms after the push starts.
    - after-commit: SIGKILL as soon as a reader sees the row, about a millisecond after the
      commit (FaxMAX has usually had its 2xx by then, not always).
    - random: SIGKILL at a random instant in the first `PUSH_KILL_WINDOW` seconds after the
      push starts, which spans the handler (read, decode, commit, answer); the email
      comes much later, so the kill tests the webhook, not the mailer (F4 does that).

    After each restart the simulator's own retry, plus 3 replays of the same body, must leave
    one row and, once the outbox drains, one email per fax. Each fax's email has left before
    the next push, so no kill can catch an earlier email mid-delivery.
    """
    kill_points: dict[str, KillPoint] = {}
    fax_ids: list[str] = []
    async with open_rig(workdir) as rig:
        def stored(fax_id: str) -> bool:
            return bool(rig.serve.query("SELECT 1 FROM inbound WHERE external_id = ?",
                                        (fax_id,)))

        async def kill_during(kind: str, fax_id: str, lock: WriteLock | None) -> None:
            """SIGKILL at the `kind` point of the push of `fax_id`, then restart."""
            if kind == "after-commit":
                await rig.until(lambda: stored(fax_id), "the pushed fax committed", poll=0.001)
                await rig.crash()
            elif kind == "random":
                await asyncio.sleep(rng.uniform(0.0, PUSH_KILL_WINDOW))
                await rig.crash()
            else:  # the write lock is held: the push is read and parsed, then waits to commit
                await asyncio.sleep(rng.uniform(0.05, 0.1))
                await rig.crash()
            if lock is not None:
                lock.release()
            kill_points[kind] = KillPoint(stored(fax_id), any(
                p.acknowledged and p.body[0].get("id") == fax_id for p in rig.faxmax.pushes))
            await rig.restart()

        for n, kind in enumerate(PUSH_KILLS):
            event = rig.faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000",
                                              cli=f"9031255500{n:02d}")
            fax_id = str(event["id"])
            fax_ids.append(fax_id)
            lock = WriteLock(rig.serve.db_path) if kind == "before-commit" else None
            pushing = asyncio.create_task(rig.faxmax.push_events([event]))
            try:
                await kill_during(kind, fax_id, lock)
            finally:
                if lock is not None:
                    lock.close()
            await pushing  # FaxMAX's own retry reaches the restarted service
            for _ in range(3):
                await rig.faxmax.push_events([event])
            await rig.until(rig.drained, f"the email of fax {fax_id}", timeout=SETTLE_TIMEOUT)
        await rig.settle()
        inbound = inbound_rows(rig.serve)
        domain = rig.settings.mail_domain
        return PushRound(
            seed, kill_points, fax_ids,
            collections.Counter(f.external_id for f in inbound),
            {f.external_id: fax_message_id(f, domain) for f in inbound},
            rig.message_ids(), rig.faxmax.pushes_acknowledged(), rig.crashes)


# --- F4: SIGKILL in the 秒速FAX poller ----------------------------------------------------------


def titled_pdf(title: str) -> bytes:
    """A one-page PDF whose bytes name the fax, so each email's attachment says which fax it
    carries, independently of its Message-ID."""
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    writer.add_metadata({"/Title": title})
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def attachments(relay: RelaySink) -> list[tuple[bytes, str]]:
    """(attachment bytes, Message-ID) of every email the relay got."""
    out = []
    for received in relay.messages:
        msg = received.message
        for part in msg.iter_attachments():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append((payload, message_id(received)))
    return out


@dataclass
class PollerRound:
    seed: int
    pdf_ids: list[str]
    premises: list[str]  # premise failures: a kill that did not land where it should
    inbound: collections.Counter[str]  # pdfId -> rows
    expected_ids: dict[str, str]  # pdfId -> the Message-ID its email must carry
    copies: dict[str, list[str]]  # pdfId -> Message-IDs of the emails carrying its PDF
    pdf_calls: collections.Counter[str]  # pdfId -> PDF calls the simulator saw
    violations: int
    crashes: Crashes

    def figures(self) -> Figures:
        return self.crashes.figures(
            acknowledged=len(self.pdf_ids),
            lost=sum(1 for p in self.pdf_ids if not self.copies.get(p)),
            emails_duplicated=sum(max(0, len(c) - 1) for c in self.copies.values()),
            faxes_duplicated=sum(n - 1 for n in self.inbound.values() if n > 1),
            extra_pdf_calls=self.extra_pdf_calls, interval_violations=self.violations)

    @property
    def extra_pdf_calls(self) -> int:
        return sum(max(0, n - 1) for n in self.pdf_calls.values())

    def problems(self) -> list[str]:
        found = self.crashes.problems() + self.premises
        if self.inbound != collections.Counter(self.pdf_ids):
            found.append(f"inbound rows per pdfId {dict(self.inbound)}, wanted one each")
        for pdf_id in self.pdf_ids:
            copies = self.copies.get(pdf_id, [])
            if not copies:
                found.append(f"fax {pdf_id} was never mailed")
            elif set(copies) != {self.expected_ids.get(pdf_id)}:
                found.append(f"fax {pdf_id} was mailed as {copies}, wanted every copy to be "
                             f"{self.expected_ids.get(pdf_id)}")
        if self.extra_pdf_calls > self.crashes.kills:
            found.append(f"{self.extra_pdf_calls} extra PDF calls for {self.crashes.kills} "
                         f"kills: {dict(self.pdf_calls)}")
        if self.violations:
            found.append(f"{self.violations} calls broke the provider's interval")
        return found


async def poller_round(rng: random.Random, workdir: Path, seed: int) -> PollerRound:
    """F4: two faxes in the 秒速FAX log, two kills.

    - after download, before commit: the PDF call is answered late (a `stall`); while it is
      held the test takes the store's write lock, so once the PDF is downloaded and written to
      disk the poller waits to commit; SIGKILL then. The restart must fetch it once more.
    - after commit, before the email: the relay defers (421), so the fax is stored and its
      email queued but cannot leave; SIGKILL at a random point of the mailer's backoff; then
      the relay works and the restarted service must mail it.
    """
    premises: list[str] = []
    sim = ByosokuSimulator(log_interval=POLL_INTERVAL, pdf_interval=PDF_INTERVAL)
    await sim.start()
    pdfs: dict[str, bytes] = {}

    def add_fax(n: int) -> str:
        pdf = titled_pdf(f"crash-test fax {seed}.{n}")
        pdf_id = sim.add_fax(fax_number="0368680000", sender=f"031234567{n}", pdf=pdf)
        pdfs[pdf_id] = pdf
        return pdf_id

    byosoku = {"enabled": True, "log_url": sim.log_url, "pdf_url": sim.pdf_url,
               "poll_interval": POLL_INTERVAL, "pdf_interval": PDF_INTERVAL,
               "initial_sync": "deliver"}
    mail = {"retry_base": 2.0, "retry_cap": 2.0}  # retries 1–2 s apart: room for a kill
    try:
        first = add_fax(1)
        sim.pdf_faults.append(ByosokuFault.stall(0.3))
        async with open_rig(workdir, byosoku=byosoku, mail=mail) as rig:
            downloaded = fax_file(rig.settings.data_path / "inbound", "byosoku", first, ".pdf")

            def state(pdf_id: str) -> str | None:
                rows = rig.serve.query("SELECT state FROM inbound WHERE external_id = ?",
                                       (pdf_id,))
                return str(rows[0][0]) if rows else None

            def mailed(pdf_id: str) -> bool:
                return any(data == pdfs[pdf_id] for data, _ in attachments(rig.relay))

            def next_attempt() -> float | None:
                """When the email the relay deferred is tried again (not while it is being
                delivered)."""
                rows = rig.serve.query(
                    "SELECT next_attempt_at FROM outbox WHERE state = 'pending'"
                    " AND last_error != '' AND leased_until IS NULL")
                return float(str(rows[0][0])) if rows else None

            # Kill 1: downloaded, not committed.
            await sim.wait_for_pdf_calls(1, timeout=20)
            lock = WriteLock(rig.serve.db_path)
            try:
                await rig.until(downloaded.exists, "the downloaded PDF on disk", poll=0.002)
                await asyncio.sleep(rng.uniform(0.0, 0.03))
                await rig.crash()
                lock.release()
                if state(first) != "fetching":
                    premises.append(f"kill 1: fax {first} was {state(first)!r}, not fetching")
                await rig.restart()
            finally:
                lock.close()
            await rig.until(lambda: mailed(first), f"the email of fax {first}")

            # Kill 2: committed and queued, the email not yet out.
            rig.relay.refuse_with = DEFERRED
            second = add_fax(2)
            await rig.until(lambda: next_attempt() is not None,
                            "the relay to defer the second fax's email", timeout=20)
            retry_at = next_attempt() or 0.0
            # A random point of the backoff, with room to spare before the next attempt.
            await asyncio.sleep(rng.random() * max(0.0, retry_at - time.time() - 0.3))
            await rig.crash()
            if state(second) != "mailed" or mailed(second):
                premises.append(f"kill 2: fax {second} was {state(second)!r}, mailed: "
                                f"{mailed(second)}; wanted stored and not yet mailed")
            rig.relay.refuse_with = None
            await rig.restart()
            await rig.until(lambda: mailed(second), f"the email of fax {second}")
            await rig.settle()
            domain = rig.settings.mail_domain
            inbound = inbound_rows(rig.serve)
            copies: dict[str, list[str]] = {}
            for data, message_id in attachments(rig.relay):
                for pdf_id, pdf in pdfs.items():
                    if data == pdf:
                        copies.setdefault(pdf_id, []).append(message_id)
            return PollerRound(
                seed, [first, second], premises,
                collections.Counter(f.external_id for f in inbound),
                {f.external_id: fax_message_id(f, domain) for f in inbound}, copies,
                collections.Counter(pdf_id for _, pdf_id, _ in sim.pdf_calls),
                sim.violations, rig.crashes)
    finally:
        await sim.stop()


# --- what the tests and the bench run ------------------------------------------------------

class AnyRound(Protocol):
    """What every round returns: its figures and its verdict."""

    seed: int

    def figures(self) -> Figures: ...

    def problems(self) -> list[str]: ...


RoundFn = Callable[[random.Random, Path, int], Awaitable[AnyRound]]
