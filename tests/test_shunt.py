"""An item that keeps failing for a reason no rule classifies is given up after MAX_FAILURES
tries: it goes to its failed state, the admin hears of it once, and the queue behind it moves
on. Before, the same head item was retried forever and every report behind it waited."""

from __future__ import annotations

import asyncio
import email
import errno
from collections.abc import AsyncIterator
from dataclasses import replace
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from bridge.clock import FakeClock
from bridge.config import Settings
from bridge.mail import Envelope, MaildirTransport
from bridge.sandbox import Limits, Sandbox, _Child
from bridge.store import (
    InboundState,
    JobState,
    MailState,
    NewInbound,
    NewMessage,
    OutgoingMail,
    Store,
)
from bridge.workers.base import MAX_FAILURES, ItemFailed, Shunt
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.rigs import MakePipeline
from tests.sql import query

ADMIN = "admin@example.com"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "fax-bridge.sqlite3") as opened:
        yield opened


def settings(tmp_path: Path, templates_dir: Path | None = None) -> Settings:
    base = Settings()
    return replace(base, data_dir=str(tmp_path),
                   routing=replace(base.routing, admin=ADMIN),
                   mail=replace(base.mail, templates_dir=str(templates_dir or "")))


def parsed(body: bytes) -> EmailMessage:
    msg = email.message_from_bytes(body, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    return msg


async def outbox_mails(store: Store) -> list[EmailMessage]:
    rows = await query(store.path, "SELECT body FROM outbox ORDER BY id")
    return [parsed(bytes(body)) for (body,) in rows]


async def failed_job(store: Store, subject: str, now: float) -> int:
    [job_id] = await store.jobs.accept(
        NewMessage(mail_from="alice@example.com", header_from="", subject=subject,
                   message_id=f"<{subject.replace(' ', '-')}@example.com>", refs="",
                   spool_path=""),
        [("02122222525@fax.local", "902122222525")], now)
    await store.jobs.finish(job_id, JobState.FAILED, detail="busy", now=now)
    return job_id


async def test_a_report_that_cannot_be_rendered_is_given_up_and_the_reports_behind_it_go_out(
    tmp_path: Path, store: Store, make_pipeline: MakePipeline,
) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "report.subject.j2").write_text(  # an operator's override with a bug
        '{% if subject == "poison" %}{{ nosuch.attribute }}{% endif %}Fax: {{ subject }}\n')
    clock = FakeClock()
    reporter = make_pipeline(settings(tmp_path, overrides), store, clock).reporter
    first, poison, last = [await failed_job(store, subject, clock.now())
                           for subject in ("first", "poison", "last")]

    for count in range(1, MAX_FAILURES):
        with pytest.raises(ItemFailed) as failed:
            await reporter.run_once()
        assert (failed.value.item, failed.value.count) == (poison, count)
        clock.advance(5)
    assert await reporter.run_once()  # the fifth failure gives it up; the last goes out

    mails = await outbox_mails(store)
    # (a subject this long is folded before its first word: the space it leaves is not ours)
    assert [m["Subject"].strip() for m in mails] == [
        "Fax: first", f"[fax-bridge] job {poison} was given up after {MAX_FAILURES} "
        "unexpected errors in the report queue", "Fax: last"]
    alert = mails[1]
    assert alert["To"] == ADMIN
    text = alert.get_body(("plain",))
    assert text is not None and "UndefinedError: 'nosuch' is undefined" in text.get_content()
    for job_id, state in ((first, "failed"), (poison, "failed"), (last, "failed")):
        job = await store.jobs.get(job_id)
        assert job is not None and job.reported == state
    assert await query(store.path, "SELECT * FROM failures") == []
    assert not await reporter.run_once()  # nothing left: the queue is not stuck


async def test_failures_are_counted_across_restarts_and_forgotten_after_a_success(
    store: Store,
) -> None:
    clock = FakeClock()
    given_up: list[str] = []

    async def broken() -> None:
        raise RuntimeError("a bug")

    async def fine() -> None:
        pass

    async def give_up(words: str) -> None:
        given_up.append(words)

    before = Shunt(store, clock, "email", "mail", alert=None)
    for _ in range(2):
        with pytest.raises(ItemFailed):
            await before.attempt(7, broken, give_up=give_up)
    after = Shunt(store, clock, "email", "mail", alert=None)  # a restart: the count is in the store
    for _ in range(MAX_FAILURES - 3):
        with pytest.raises(ItemFailed):
            await after.attempt(7, broken, give_up=give_up)
    await after.attempt(7, broken, give_up=give_up)
    assert given_up == ["RuntimeError: a bug"]
    assert await query(store.path, "SELECT * FROM failures") == []

    with pytest.raises(ItemFailed):
        await after.attempt(8, broken, give_up=give_up)
    await after.attempt(8, fine, give_up=give_up)  # it came right: its count starts afresh
    assert await query(store.path, "SELECT * FROM failures") == []


class BrokenForOne(MaildirTransport):
    """A transport with a bug that only one email triggers (not a DeliveryError: unforeseen)."""

    def __init__(self, path: Path, poison: str) -> None:
        super().__init__(path)
        self.poison = poison
        self.delivered: list[tuple[str, ...]] = []

    async def deliver(self, envelope: Envelope) -> str:
        if self.poison in envelope.recipients:
            raise KeyError(self.poison)
        self.delivered.append(envelope.recipients)
        return "ok"


async def test_an_email_that_keeps_crashing_the_transport_becomes_a_dead_letter(
    tmp_path: Path, store: Store, make_pipeline: MakePipeline,
) -> None:
    clock = FakeClock()
    transport = BrokenForOne(tmp_path / "maildir", "poison@example.com")
    mailer = make_pipeline(settings(tmp_path), store, clock, transport=transport).mailer
    for n, to in enumerate(("poison@example.com", "fine@example.com")):
        await store.outbox.enqueue(OutgoingMail(message_id=f"<{n}@x>", mail_from="",
                                                recipients=(to,), body=b"Subject: x\r\n\r\n"),
                                   clock.now())
    failures = 0
    while await store.outbox.counts() != {"sent": 2, "failed": 1}:
        try:
            await mailer.run_once()
        except ItemFailed:
            failures += 1
            clock.advance(mailer.lease)  # it is handed out again once its lease runs out
    assert failures == MAX_FAILURES - 1
    assert transport.delivered == [("fine@example.com",), (ADMIN,)]  # the alert went out too
    [dead] = await store.outbox.latest(MailState.FAILED)
    assert dead.recipients == ("poison@example.com",)
    assert dead.last_error == "internal error: KeyError: 'poison@example.com'"


async def test_a_received_fax_that_keeps_failing_is_marked_failed_and_the_admin_told(
    tmp_path: Path, store: Store, make_pipeline: MakePipeline,
) -> None:
    clock = FakeClock()
    inbox = make_pipeline(settings(tmp_path), store, clock).inbox
    gone = tmp_path / "inbound" / "deleted-by-hand.pdf"  # its file is gone: no rule for that
    await store.inbound.record_poll(
        [NewInbound(provider="byosoku", external_id="P1", receiving_number="0368680000",
                    sender_number="0312345678", received_at=clock.now(),
                    document_path=str(gone))], InboundState.RECEIVED, {}, clock.now())
    for _ in range(MAX_FAILURES):
        assert await inbox.run_once()
        clock.advance(60)
    assert not await inbox.run_once()
    [fax] = await store.inbound.all()
    assert fax.state is InboundState.FAILED
    assert fax.detail.startswith("internal error: FileNotFoundError:")
    [alert] = await outbox_mails(store)
    assert alert["Subject"].strip() == (f"[fax-bridge] fax {fax.id} was given up after "
                                f"{MAX_FAILURES} unexpected errors in the inbound queue")


# --- the sandbox failing, not the mail -------------------------------------------------------


class ForkRefused(Sandbox):
    """A machine out of processes: the first `refusals` starts of a child fail as `fork`
    does then (EAGAIN)."""

    def __init__(self, refusals: int) -> None:
        super().__init__(Limits(), size=1)
        self.refusals = refusals

    async def _launch(self) -> _Child:
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return await super()._launch()


class ChildDiesWhileIdle(Sandbox):
    """The first child handed a job died after the pool last looked at it (the kernel's OOM
    killer, an operator's kill): the job is sent into a closed pipe."""

    def __init__(self) -> None:
        super().__init__(Limits(), size=1)
        self.killed = False

    async def _take(self) -> _Child:
        child = await super()._take()
        if not self.killed:
            self.killed = True
            child.process.kill()
            await asyncio.to_thread(child.process.join)
        return child


async def queue_mail(store: Store, now: float) -> int:
    raw = fax_mail(("invoice.pdf", "application/pdf", make_pdf(1))).as_bytes()
    [job_id] = await store.jobs.accept(
        NewMessage(mail_from="alice@example.com", header_from="alice@example.com",
                   subject="Invoice 42", message_id="<original-1@example.com>", refs="",
                   spool_path="", raw=raw), [("02122222525@fax.local", "902122222525")], now)
    return job_id


@pytest.mark.parametrize("sandbox", [pytest.param(lambda: ForkRefused(2), id="fork-EAGAIN"),
                                     pytest.param(ChildDiesWhileIdle, id="child-died-idle")])
async def test_a_sandbox_failing_for_the_machine_keeps_the_mail_queued_and_converts_it_later(
    tmp_path: Path, store: Store, make_pipeline: MakePipeline, sandbox: type[Sandbox],
) -> None:
    clock = FakeClock()
    pool = sandbox()
    try:
        converter = make_pipeline(settings(tmp_path), store, clock, sandbox=pool).converter
        job_id = await queue_mail(store, clock.now())
        pauses = []
        while await store.jobs.to_convert():
            if not await converter.run_once():
                due = await converter.next_due()
                assert due is not None and due > clock.now()
                pauses.append(due - clock.now())
                converter.wake()  # a new mail arriving does not cut the pause short
                assert not await converter.run_once()
                clock.advance(due - clock.now())
        job = await store.jobs.get(job_id)
        assert job is not None
        message = await store.jobs.message(job.message)
        assert message is not None and (message.state, message.pages) == ("ready", 1)
        assert job.state is JobState.QUEUED
        assert pauses == ([10.0, 20.0] if isinstance(pool, ForkRefused) else [10.0])
    finally:
        await pool.close()


async def test_a_sandbox_that_never_recovers_fails_the_mail_after_the_shunts_count(
    tmp_path: Path, store: Store, make_pipeline: MakePipeline,
) -> None:
    clock = FakeClock()
    pool = ForkRefused(refusals=1_000)
    try:
        converter = make_pipeline(settings(tmp_path), store, clock, sandbox=pool).converter
        job_id = await queue_mail(store, clock.now())
        tries = 0
        while await store.jobs.to_convert():
            tries += 1
            await converter.run_once()
            due = await converter.next_due()
            if due is not None:
                clock.advance(due - clock.now())
        assert tries == MAX_FAILURES
        job = await store.jobs.get(job_id)
        assert job is not None and job.state is JobState.FAILED
        assert job.detail.startswith("fax-bridge could not convert the attachments")
        [alert] = await outbox_mails(store)
        assert "was given up after 5 unexpected errors in the convert queue" in (
            alert["Subject"])
    finally:
        await pool.close()
