"""Group commit: mails and pushes arriving together share one transaction and one fsync, each is
answered only once its own data is committed, and one that fails is rolled back alone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bridge.store import NewInbound, NewMessage, Store
from tests.settings import RULES


def mail(n: int) -> NewMessage:
    return NewMessage(mail_from=f"sender{n}@example.com", header_from="", subject=f"mail {n}",
                      message_id=f"<{n}@example.com>", refs="", spool_path=f"/spool/{n}")


async def trace(store: Store, callback: Callable[[str], object] | None) -> None:
    """Every statement the writer runs, as SQLite traces it (on the writer's thread)."""
    await store.writer.run(lambda db: db.set_trace_callback(callback))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "fax-bridge.sqlite3")
    yield opened
    await opened.close()


async def test_twenty_mails_at_once_are_committed_in_a_few_transactions(store: Store) -> None:
    statements: list[str] = []
    await trace(store, statements.append)
    ids = await asyncio.gather(*(store.jobs.accept(mail(n), [(f"{n}@fax.local", "90212")],
                                                      1.0) for n in range(20)))
    await trace(store, None)
    commits = sum(1 for s in statements if s.strip().upper() == "COMMIT")
    assert 1 <= commits <= 3, commits  # the first alone, then the rest together
    assert sorted(i for [i] in ids) == list(range(1, 21))
    counts = await store.jobs.counts()
    assert counts == {"queued": 20}


async def test_a_failing_write_is_rolled_back_alone_and_only_its_caller_hears(
    store: Store,
) -> None:
    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES ('half', 'written')")
        raise ValueError("this one fails half-way")

    statements: list[str] = []
    await trace(store, statements.append)
    results = await asyncio.gather(
        store.jobs.accept(mail(1), [("1@fax.local", "90212")], 1.0),
        store.writer.grouped(broken),
        store.jobs.accept(mail(2), [("2@fax.local", "90212")], 1.0),
        return_exceptions=True)
    await trace(store, None)
    assert results[0] == [1] and results[2] == [2]
    assert isinstance(results[1], ValueError)
    assert await store.upkeep.meta("half") is None  # its own write was undone
    assert await store.jobs.counts() == {"queued": 2}
    # No savepoints (two trips each): the group is rolled back and the others run again.
    assert not any("SAVEPOINT" in s for s in statements)
    verbs = [s.split()[0].upper() for s in statements]
    assert verbs.count("ROLLBACK") == 1 and verbs.count("COMMIT") == 1, verbs


async def test_a_failing_write_alone_in_its_group_is_rolled_back_and_its_caller_hears(
    store: Store,
) -> None:
    """Failing, a work alone undoes the whole transaction and is not tried again."""
    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO meta (key, value) VALUES ('half', 'written')")
        raise ValueError("this one fails half-way")

    statements: list[str] = []
    await trace(store, statements.append)
    with pytest.raises(ValueError, match="fails half-way"):
        await store.writer.grouped(broken)
    await trace(store, None)
    assert not any("SAVEPOINT" in s for s in statements)
    assert await store.upkeep.meta("half") is None
    assert not store.writer.in_transaction
    assert await store.jobs.accept(mail(1), [("1@fax.local", "90212")], 1.0) == [1]


async def test_writers_cancelled_at_any_moment_leave_the_store_usable(store: Store) -> None:
    """A shutdown that cancels a worker mid-write must not leave a transaction open for the
    next writer ("cannot start a transaction within a transaction")."""

    def meta(n: int) -> Awaitable[object]:
        return store.upkeep.set_meta({"k": str(n)})

    def accept(n: int) -> Awaitable[object]:
        return store.jobs.accept(mail(n), [(f"{n}@fax.local", "90212")], 1.0)

    def convert(n: int) -> Awaitable[object]:  # not durable: sets the sync level and back
        return store.jobs.converted(1, document_path=f"/documents/{n}.pdf", pages=1,
                                        cover_html=None, left_out=())

    await accept(100)
    for n, steps in enumerate(range(6)):
        for write in (meta, accept, convert):
            task = asyncio.ensure_future(write(n))
            for _ in range(steps):  # cancel it after this many turns of the loop
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await store.upkeep.set_meta({"after": str(n)})
    assert await store.upkeep.meta("after") == "5"
    assert not store.writer.in_transaction
    assert await synchronous_level(store) == 2  # FULL: acknowledged writes are durable


async def test_a_workers_own_transaction_gets_its_turn_during_a_stream_of_mails(
    store: Store
) -> None:
    """Mails that keep arriving while a group commits form the next group; a worker's own
    transaction queued meanwhile (a conversion finished, a fax to mark sent) must not wait for
    a lull."""
    arriving = True
    accepted: list[asyncio.Task[list[int]]] = []

    async def stream() -> None:
        n = 0
        while arriving:
            accepted.append(asyncio.create_task(store.jobs.accept(
                mail(n), [(f"{n}@fax.local", "90212")], 1.0)))
            n += 1
            await asyncio.sleep(0.0005)

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(0.1)
    async with asyncio.timeout(10):
        await store.writer.transaction(lambda db: db.execute(
            "INSERT INTO meta (key, value) VALUES ('worker', 'had its turn')"))
    mails_before = len(accepted)
    await asyncio.sleep(0.1)
    arriving = False
    await streaming
    await asyncio.gather(*accepted)
    assert len(accepted) > mails_before  # the stream was still flowing when the worker wrote
    assert await store.upkeep.meta("worker") == "had its turn"


async def test_a_conversion_finishing_while_mail_arrives_shares_the_mails_commit(
    store: Store,
) -> None:
    [job_id] = await store.jobs.accept(mail(0), [("0@fax.local", "90212")], 1.0)
    job = await store.jobs.get(job_id)
    assert job is not None
    message = job.message
    statements: list[str] = []
    await trace(store, statements.append)
    await asyncio.gather(
        store.jobs.converted(message, document_path="/documents/fax.pdf", pages=1,
                                 cover_html=None, left_out=()),
        *(store.jobs.accept(mail(n), [(f"{n}@fax.local", "90212")], 1.0)
          for n in range(1, 6)))
    await trace(store, None)
    assert sum(1 for s in statements if s.strip().upper() == "COMMIT") == 1
    assert not any("synchronous=NORMAL" in s for s in statements)  # durable, for the mails
    ready = await store.jobs.message(message)
    assert ready is not None and ready.pages == 1 and ready.document_path == "/documents/fax.pdf"
    assert await store.jobs.counts() == {"queued": 6}


async def synchronous_level(store: Store) -> int:
    return int(await store.writer.run(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]))


async def test_a_conversion_alone_does_not_wait_for_the_disk_but_the_next_mail_does(
    store: Store,
) -> None:
    """A finished conversion can be redone after a power cut, so alone it commits without an
    fsync (`synchronous=NORMAL`), then sets FULL back itself; the mail after it, and the claim
    of its fax, commit durably (and with them the conversion) and pay nothing for it."""
    [job_id] = await store.jobs.accept(mail(0), [("0@fax.local", "90212")], 1.0)
    job = await store.jobs.get(job_id)
    assert job is not None
    statements: list[str] = []
    await trace(store, statements.append)
    await store.jobs.converted(job.message, document_path="/documents/fax.pdf", pages=1,
                                   cover_html=None, left_out=())
    converted = list(statements)
    statements.clear()
    assert await store.jobs.accept(mail(1), [("1@fax.local", "90212")], 1.0) == [2]
    claimed = await store.jobs.claim(2.0)
    await trace(store, None)
    assert claimed is not None and claimed[0].id == job_id
    assert [s for s in converted if s.startswith(("PRAGMA", "BEGIN", "COMMIT"))] == [
        "PRAGMA synchronous=NORMAL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous=FULL"]
    assert not any(s.startswith("PRAGMA") for s in statements)
    assert await synchronous_level(store) == 2  # FULL, for the mail and the claim


async def test_pushes_arriving_together_write_the_time_of_the_last_push_once(
        store: Store) -> None:
    statements: list[str] = []
    await trace(store, statements.append)

    async def push(n: int) -> None:
        fax = NewInbound(provider="faxmax", external_id=f"pdf-{n}", receiving_number="0312345678",
                         sender_number="0398765432", received_at=100.0, document=b"II*\x00")
        await store.inbound.record_push(source="faxmax", events=[], faxes=[fax], bad=[],
                                now=1000.0 + n, rules=RULES)

    await asyncio.gather(*(push(n) for n in range(20)))
    await trace(store, None)
    inserts = [s for s in statements if s.startswith("INSERT INTO inbound")]
    meta = [s for s in statements if s.startswith("INSERT INTO meta")]
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    assert len(inserts) == 20
    assert 1 <= len(meta) == len(commits) <= 3  # once per transaction, not once per push
    assert (await store.upkeep.snapshot(2000.0)).last_push == 1019.0  # the latest
