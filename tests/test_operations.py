"""Running it unattended: stopping, a full disk, backups, retention and the operator's commands,
against the real `fax-bridge serve` process wherever a process is what matters."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import aiohttp
import pytest

from bridge.app import serve
from bridge.clock import FakeClock
from bridge.errors import BridgeError
from bridge.limits import DAY
from bridge.simulators import Fault, FaxMaxSimulator
from bridge.store import JobState, MailState, OutgoingMail, Store
from bridge.workers.retention import Retention
from bridge.workers.sender import store_refused
from tests.cli_runner import run_cli
from tests.crash_rounds import SessionLog, smtp_client
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.process import ServeProcess, job_states, start
from tests.relay import RelaySink
from tests.settings import MakeBridge, settings_for
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state, wait_until

PDF = ("invoice.pdf", "application/pdf", make_pdf(1))


class Session:
    """One SMTP connection spoken line by line, so a test can stop half-way through DATA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Session:
        session = cls(*await asyncio.open_connection("127.0.0.1", port))
        assert (await session.reply()).startswith("220")
        assert (await session.command("EHLO client.example")).startswith("250")
        return session

    async def reply(self) -> str:
        """The whole (possibly multi-line) reply, or "" when the server closed."""
        lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            if not line:
                return "\n".join(lines)
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    async def command(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    def close(self) -> None:
        self.writer.close()


# --- the serving process ------------------------------------------------------------------


class _Node:
    """A reference cycle: only the garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_serving_leaves_what_startup_built_out_of_full_collections(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """A full collection walks every object of the oldest generation: ~30 ms for a started
    service, landing on whichever mail is being answered (bench/RESULTS.md). What startup built
    is frozen; garbage made afterwards is still collected."""
    settings = settings_for(tmp_path, faxmax.url, relay.port)
    assert gc.is_tracked(settings) and gc.get_freeze_count() == 0
    service = asyncio.create_task(serve(settings))
    try:
        deadline = time.monotonic() + 20
        while not gc.get_freeze_count():
            assert not service.done(), service.exception()
            assert time.monotonic() < deadline, "startup was never frozen"
            await asyncio.sleep(0.02)
        assert not any(o is settings for o in gc.get_objects()), "a full pass would walk it"
        later = weakref.ref(_Node())
        gc.collect()
        assert later() is None
    finally:
        if not service.done():
            os.kill(os.getpid(), signal.SIGTERM)  # to serve()'s own handler: an orderly stop
        await asyncio.wait_for(service, 30)
        gc.unfreeze()


# --- graceful shutdown ----------------------------------------------------------------------


async def test_sigterm_lets_a_mail_being_sent_finish_and_turns_idle_sessions_away(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.pause()  # nothing reaches FaxMAX: this test is about SMTP alone
    process = await start(serve, tmp_path, faxmax, relay)
    busy, idle = await Session.open(process.smtp_port), await Session.open(process.smtp_port)
    assert (await busy.command("MAIL FROM:<alice@example.com>")).startswith("250")
    assert (await busy.command("RCPT TO:<02122222525@fax.local>")).startswith("250")
    assert (await busy.command("DATA")).startswith("354")
    body = fax_mail(PDF).as_bytes().replace(b"\n", b"\r\n")
    busy.writer.write(body[: len(body) // 2])
    await busy.writer.drain()

    process.signal(signal.SIGTERM)
    assert await idle.reply() == ("421 4.3.2 The fax gateway is restarting; please try again "
                                  "in a minute")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", process.smtp_port)
    busy.writer.write(body[len(body) // 2:] + b"\r\n.\r\n")
    assert await busy.reply() == "250 2.0.0 queued as fax jobs 1"
    assert (await busy.reply()).startswith("421 4.3.2")  # and then it is closed
    assert await process.wait() == 0
    busy.close()
    idle.close()
    assert job_states(process) == ["queued"]
    assert "fax-bridge stopped cleanly" in process.log()


async def test_sigterm_waits_for_the_faxmax_call_in_flight_and_records_its_answer(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.faults.append(Fault.stall(1.5))
    process = await start(serve, tmp_path, faxmax, relay)
    await smtp_send(process.smtp_port, fax_mail(PDF))
    await faxmax.wait_for_requests(1, timeout=15)
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    assert job_states(process) == ["submitted"]  # FaxMAX's answer was recorded
    assert "fax-bridge stopped cleanly" in process.log()
    # FaxMAX's status push could not be delivered while we were down; it retries.
    await process.start()
    faxmax.push_url = process.push_url
    await wait_until(lambda: asyncio.to_thread(job_states, process), ["delivered"], 15)
    assert len(faxmax.requests) == 1


async def test_sigterm_lets_a_push_being_stored_finish_and_answers_it(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    process = await start(serve, tmp_path, faxmax, relay)
    push = json.dumps([faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000")])
    blocker = sqlite3.connect(process.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the push will wait for the database's write lock
    async with aiohttp.ClientSession() as http:
        posting = asyncio.create_task(http.post(process.push_url, data=push))
        await asyncio.sleep(0.5)
        process.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert not posting.done()
        blocker.execute("ROLLBACK")
        blocker.close()
        response = await posting
        assert response.status == 200
        response.release()
    assert await process.wait() == 0
    assert process.query("SELECT state FROM inbound") == [("received",)]
    assert "fax-bridge stopped cleanly" in process.log()


async def test_sigterm_waits_for_a_faxmax_answer_past_shutdown_timeout_within_its_own(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    """`shutdown_timeout` bounds the rest of the work; a FaxMAX call in flight has until its own
    `faxmax.timeout`: cut off, its fax may have gone out and its job would become unknown."""
    faxmax.faults.append(Fault.stall(3))
    process = await start(serve, tmp_path, faxmax, relay, faxmax={"timeout": 10},
                          shutdown_timeout=0.5)
    await smtp_send(process.smtp_port, fax_mail(PDF))
    await faxmax.wait_for_requests(1, timeout=15)
    process.signal(signal.SIGTERM)
    assert await process.wait() == 0
    assert job_states(process) == ["submitted"]
    assert process.query("SELECT fax_id FROM jobs") == [(faxmax.faxes[0].fax_id,)]
    assert "fax-bridge stopped cleanly" in process.log()


async def test_work_cut_off_at_shutdown_is_the_crash_case_at_the_next_start(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.faults.append(Fault.stall(6))
    process = await start(serve, tmp_path, faxmax, relay, faxmax={"timeout": 30},
                          shutdown_timeout=60)
    await smtp_send(process.smtp_port, fax_mail(PDF))
    await faxmax.wait_for_requests(1, timeout=15)
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    process.signal(signal.SIGTERM)  # an operator who will not wait
    assert await process.wait() == 0
    assert time.monotonic() - started < 4  # not the 6 s FaxMAX takes, nor 30 s
    assert "fax-bridge stopped with work cut off" in process.log()
    assert job_states(process) == ["sending"]  # cut off: the next start decides

    await process.start()
    assert job_states(process) == ["unknown"]
    [report] = await relay.wait_for(1, timeout=15)
    assert report.message["Subject"] == "Fax to (0212) 222 25 25: outcome unknown: Invoice 42"
    assert len(faxmax.requests) == 1  # never resent on its own


# --- disk full (F8) -------------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, megabytes: int) -> Iterator[None]:
    """A tmpfs of its own for the data directory, so that filling it up touches nothing else."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem says ENOSPC; deleting it gives the space back."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"x")
    assert full.value.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_defers_mail_and_pushes_and_service_resumes_by_itself(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    data = tmp_path / "data"
    with small_filesystem(data, 24):
        process = await start(serve, tmp_path, faxmax, relay,
                              routing={"default": ("frontdesk@example.com",)})
        first = await smtp_send(process.smtp_port, fax_mail(PDF))
        assert first.data == (250, "2.0.0 queued as fax jobs 1")
        filler = await asyncio.to_thread(fill, data)

        refused = await smtp_send(process.smtp_port, fax_mail(PDF))
        assert refused.data == (452, "4.3.1 The fax gateway is out of storage; please try "
                                     "again later")
        push = json.dumps([faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000",
                                                 fax_id="fax-on-a-full-disk")])
        async with aiohttp.ClientSession() as http:
            async with http.post(process.push_url, data=push) as response:
                assert response.status == 503  # FaxMAX keeps it and pushes again
            assert process.running()
            assert process.query("SELECT COUNT(*) FROM messages") == [(1,)]
            assert process.query("SELECT COUNT(*) FROM inbound") == [(0,)]
            # Nothing half-written stays: no temporary files, once the first mail's conversion,
            # which may be writing one as the disk fills, has failed or finished.
            async def temporaries() -> list[str]:
                return [p.name for p in data.rglob("*.tmp")]

            await wait_until(temporaries, [], 5)

            filler.unlink()  # space returns; no restart
            again = await smtp_send(process.smtp_port, fax_mail(PDF))
            assert again.data == (250, "2.0.0 queued as fax jobs 2")
            async with http.post(process.push_url, data=push) as response:
                assert response.status == 200
        await wait_until(lambda: asyncio.to_thread(job_states, process),
                         ["delivered", "delivered"], 20)
        mails = await relay.wait_for(3, timeout=20)  # two delivery reports and the fax
        assert sorted(m.rcpt_tos[0] for m in mails) == [
            "alice@example.com", "alice@example.com", "frontdesk@example.com"]
        assert process.integrity() == "ok"
        await process.stop()


def test_only_a_store_that_cannot_commit_now_has_an_answer_recorded_again() -> None:
    """A full or locked store may take the write later; a bug (a missing column) never will,
    so it is not retried for ever: the job stays `sending`, to be `unknown` at the next start."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    with pytest.raises(sqlite3.OperationalError) as bug:
        db.execute("SELECT nope FROM t")
    assert store_refused(full.value) and store_refused(OSError(28, "No space left on device"))
    assert not store_refused(bug.value)


async def test_a_full_disk_when_faxmax_answers_keeps_the_answer_until_it_is_recorded(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    """The fax went out: FaxMAX's answer (its fax id) is recorded once there is space again,
    without a second call, instead of the job staying `sending` until a restart calls it
    unknown."""
    data = tmp_path / "data"
    faxmax.faults.append(Fault.stall(3))  # the disk fills while FaxMAX takes the fax
    with small_filesystem(data, 24):
        process = await start(serve, tmp_path, faxmax, relay,
                              routing={"admin": "admin@example.com"})
        faxmax.push_url = None  # no status push: the job is to end `submitted`
        await smtp_send(process.smtp_port, fax_mail(PDF))
        await faxmax.wait_for_requests(1, timeout=15)
        with contextlib.closing(sqlite3.connect(process.db_path, timeout=10)) as db:
            # an empty write-ahead log: the next commit needs space of its own
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        filler = await asyncio.to_thread(fill, data)
        fax_id = faxmax.faxes[0].fax_id

        async def tries() -> int:
            refused = f"job 1: accepted by FaxMAX as fax {fax_id}, but recording it failed"
            return min(3, process.log().count(refused))

        await wait_until(tries, 3, 15)  # one line per attempt, then it lasted: worth an alert
        assert job_states(process) == ["sending"]
        filler.unlink()  # space returns; no restart
        await wait_until(lambda: asyncio.to_thread(job_states, process), ["submitted"], 15)
        assert process.query("SELECT fax_id FROM jobs") == [(fax_id,)]
        assert len(faxmax.requests) == 1
        [alert] = await relay.wait_for(1, timeout=15)
        assert alert.message["Subject"].strip() == (
            "[fax-bridge] FaxMAX's answer was recorded late: the store refused writes")
        await process.stop()


# --- backup, and the operator's commands while the service runs ------------------------------


async def test_a_backup_taken_under_load_is_consistent_and_complete(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.pause()
    process = await start(serve, tmp_path, faxmax, relay,
                          numbers={"max_faxes_per_sender_per_hour": 100_000})
    template = fax_mail(PDF, message_id="<PLACEHOLDER>").as_bytes(policy=SMTP_POLICY)
    sender, stop = SessionLog(), threading.Event()
    client = asyncio.create_task(asyncio.to_thread(
        smtp_client, process.smtp_port, "backup", template, stop, threading.Event(), sender))
    await wait_until(lambda: asyncio.sleep(0, len(sender.acknowledged) >= 20), True)
    before = set(sender.acknowledged)
    target = tmp_path / "backup.sqlite3"
    result = await asyncio.to_thread(run_cli, "backup", str(target), "--data-dir",
                                     process.settings.data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backup of ")
    await wait_until(lambda: asyncio.sleep(0, len(sender.acknowledged) > len(before) + 5), True)
    stop.set()
    await client
    assert sender.refused == []

    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        in_copy = {row[0] for row in copy.execute("SELECT message_id FROM messages")}
        jobs = copy.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        copy.close()
    assert before <= in_copy  # everything acknowledged before the backup is in it
    assert in_copy <= set(sender.acknowledged)  # and it holds nothing that was not stored
    assert jobs == len(in_copy)  # consistent: each mail with its job, no half transaction
    again = await asyncio.to_thread(run_cli, "backup", str(target), "--data-dir",
                                    process.settings.data_dir)
    assert again.returncode == 1
    assert again.stderr == f"fax-bridge: {target} exists; name a new file\n"


async def test_operator_commands_are_safe_while_the_service_runs(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    faxmax.faults.append(Fault.stall(2))
    # The stalled fax is pushed as delivered; that push must not settle the job here (it would,
    # by number and time: tests/test_reconcile.py), so that the operator is the one to decide.
    process = await start(serve, tmp_path, faxmax, relay,
                          faxmax={"timeout": 0.5, "match_window": 0})
    data_dir = process.settings.data_dir
    await smtp_send(process.smtp_port, fax_mail(PDF))
    await wait_until(lambda: asyncio.to_thread(job_states, process), ["unknown"], 15)

    listed = await asyncio.to_thread(run_cli, "list", "--state", "unknown", "--json",
                                     "--data-dir", data_dir)
    [job] = json.loads(listed.stdout)
    assert (job["id"], job["state"], job["number"]) == (1, "unknown", "902122222525")
    assert "FaxMAX did not answer within 0.5 seconds" in job["detail"]

    second = await asyncio.to_thread(run_cli, "serve", "-c", str(process.config_path),
                                     env=process.env)
    assert second.returncode == 1
    assert "another fax-bridge (pid " in second.stderr
    assert "is already running on" in second.stderr

    retried = await asyncio.to_thread(run_cli, "retry", "1", "--data-dir", data_dir)
    assert retried.stdout == ("job 1 queued again; the running service was told and sends "
                              "it now\n")
    await wait_until(lambda: asyncio.to_thread(job_states, process), ["delivered"], 10)
    assert len(faxmax.requests) == 2  # the operator decided; the service did not
    refused = await asyncio.to_thread(run_cli, "retry", "1", "--data-dir", data_dir)
    assert refused.returncode == 1
    assert refused.stderr == ("fax-bridge: job 1 is delivered; only unknown or failed jobs are "
                              "resent; nothing resent\n")
    assert process.integrity() == "ok"
    await process.stop()


async def test_a_retried_job_that_fails_again_is_reported_again(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink, serve: list[ServeProcess]
) -> None:
    """Each round of attempts an operator starts with `retry` ends in a report of its own, even
    when it ends as the round before did."""
    faxmax.rejected_numbers.add("902122222525")
    process = await start(serve, tmp_path, faxmax, relay)
    await smtp_send(process.smtp_port, fax_mail(PDF))
    [first] = await relay.wait_for(1, timeout=15)
    assert job_states(process) == ["failed"]

    retried = await asyncio.to_thread(run_cli, "retry", "1", "--data-dir",
                                      process.settings.data_dir)
    assert retried.returncode == 0, retried.stderr
    await faxmax.wait_for_requests(2, timeout=15)
    [_, second] = await relay.wait_for(2, timeout=15)
    subject = "Fax NOT delivered to (0212) 222 25 25: Invoice 42"
    assert [first.message["Subject"], second.message["Subject"]] == [subject, subject]
    assert first.message["Message-ID"] != second.message["Message-ID"]
    assert ".job-1.round-2.failed@" in second.message["Message-ID"]
    assert process.query("SELECT state, reported FROM jobs") == [("failed", "failed")]
    # The relay has the second report a moment before the mailer records it as sent.
    await wait_until(lambda: asyncio.to_thread(process.query,
                                               "SELECT state FROM outbox ORDER BY id"),
                     [("sent",), ("sent",)], 10)
    await process.stop()


async def test_an_older_version_refuses_a_database_written_by_a_newer_one(
    tmp_path: Path,
) -> None:
    """After a downgrade the schema would not match what the code writes: refuse, in words."""
    db = tmp_path / "fax-bridge.sqlite3"
    store = await Store.open(db)
    await store.close()
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(BridgeError, match=r"written by a newer fax-bridge \(schema 99; this "
                                          r"version knows up to \d+\): run the newer version"):
        await Store.open(db)


async def test_retry_mail_sends_a_waiting_email_now_after_the_relay_is_fixed(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = await Store.open(tmp_path / "fax-bridge.sqlite3")
    try:
        await store.outbox.enqueue(OutgoingMail(
            message_id="<m@x>", mail_from="", recipients=("a@example.com",), body=b"x"),
            clock.now())
        claimed = await store.outbox.claim(clock.now(), lease=300)
        assert claimed is not None
        assert not await store.outbox.requeue(claimed.id, clock.now())  # being delivered: no
        await store.outbox.finish(claimed.id, MailState.PENDING, error="relay down",
                              retry_at=clock.now() + 3600, now=clock.now())
        assert await store.outbox.next_due() == clock.now() + 3600
        assert await store.outbox.requeue(claimed.id, clock.now())
        assert await store.outbox.next_due() == clock.now()
    finally:
        await store.close()

# --- retention ------------------------------------------------------------------------------


def exist(*paths: Path) -> list[bool]:
    return [path.exists() for path in paths]


async def test_retention_deletes_the_fax_images_of_finished_faxes_and_keeps_the_record(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge(routing={"default": ("frontdesk@example.com",)})
    store = bridge.store
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await faxmax.push_incoming(tiff=make_tiff(2), cld="902121110000", fax_id="in-1")
    await relay.wait_for(2)
    await wait_until(store.outbox.counts, {"sent": 2})
    faxmax.pause()  # the next fax is still in flight when the purge runs
    await smtp_send(bridge.smtp_port, fax_mail(PDF, message_id="<later@example.com>"))
    await faxmax.wait_for_paused_calls(1)

    [sent, pending] = sorted(await store.jobs.latest(), key=lambda j: j.id)
    sent_message = await store.jobs.message(sent.message)
    pending_message = await store.jobs.message(pending.message)
    assert sent_message and pending_message and sent_message.document_path
    files = [Path(sent_message.document_path)]
    assert exist(*files) == [True]

    async def kept() -> list[tuple[int, ...]]:
        """Which mails and received faxes still have their images in their rows."""
        rows = await query(store.path, "SELECT raw IS NOT NULL FROM messages ORDER BY id")
        rows += await query(store.path, "SELECT document IS NOT NULL FROM inbound ORDER BY id")
        return [tuple(row) for row in rows]

    assert await kept() == [(1,), (1,), (1,)]
    clock = FakeClock(start=bridge.clock.now() + 1 * DAY)
    assert await Retention(store, clock, days=2).run_once() is False
    assert exist(*files) == [True]  # one day old: kept
    assert await kept() == [(1,), (1,), (1,)]
    clock.advance(2 * DAY)
    await Retention(store, clock, days=2).run_once()
    assert exist(*files, Path(sent_message.document_path).parent) == [False] * 2
    assert await kept() == [(0,), (1,), (0,)]  # the pending mail is not finished: kept

    job = await store.jobs.get(sent.id)
    assert job is not None and (job.state, job.number, job.sender) == (
        JobState.DELIVERED, "902122222525", "alice@example.com")
    [received] = await store.inbound.all()
    assert (received.document_path, received.pages, received.receiving_number) == (
        None, 2, "902121110000")
    bodies = await query(store.path, "SELECT state, length(body) FROM outbox ORDER BY id")
    assert [tuple(row) for row in bodies] == [("sent", 0), ("sent", 0)]
    # Should a late push fail it now, it can no longer be resent:
    await store.jobs.finish(sent.id, JobState.FAILED, detail="late failure", now=clock.now())
    assert await store.jobs.requeue(sent.id, clock.now()) == (
        f"job {sent.id} cannot be resent: its document was deleted after "
        "documents.retention_days")
    faxmax.resume()


async def test_retention_keeps_a_received_fax_nobody_could_be_given(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    """A received fax that failed (no recipient, or given up) was never delivered: its image in
    the store is the only copy, and stays until an operator takes it out (README)."""
    bridge = await make_bridge()  # no routing.default, no routing.admin
    tiff = make_tiff(1)
    await faxmax.push_incoming(tiff=tiff, cld="902121110000", fax_id="nobodys")
    store = bridge.store

    async def states() -> list[tuple[str, str]]:
        return [(f.state, f.detail) for f in await store.inbound.all()]

    await wait_until(states, [("failed", "no recipient: routing.default and routing.admin "
                                         "are empty")])
    clock = FakeClock(start=bridge.clock.now() + 365 * DAY)
    await Retention(store, clock, days=2).run_once()
    rows = await query(store.path, "SELECT document FROM inbound")
    assert [bytes(document) for (document,) in rows] == [tiff]
