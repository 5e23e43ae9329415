"""The store's own contract, apart from any worker: how it opens and closes, how it reads rows
written by other versions, and how it tells a full disk from other errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.store import JobState, NewMessage, Store, is_disk_full
from tests.settings import RULES
from tests.sql import migrate_to

MAIL = NewMessage(mail_from="alice@example.com", header_from="", subject="s",
                  message_id="<m@example.com>", refs="", spool_path="", raw=b"x")


async def test_async_with_opens_and_closes_the_store(tmp_path: Path) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path) as store:
        [job_id] = await store.jobs.accept(MAIL, [("0212@fax.local", "90212")], 1.0)
        installation = store.installation
    assert len(installation) == 12
    with pytest.raises(RuntimeError, match="after shutdown"):  # the writer's thread is gone
        await store.writer.run(lambda db: db.execute("SELECT 1"))
    async with Store.open(path) as again:  # the same database, the same installation
        assert again.installation == installation
        job = await again.jobs.get(job_id)
        assert job is not None and job.state is JobState.QUEUED


async def test_a_column_added_by_a_later_version_breaks_no_read(tmp_path: Path) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path) as store:
        [job_id] = await store.jobs.accept(MAIL, [("0212@fax.local", "90212")], 1.0)
        def widen(db: sqlite3.Connection) -> None:
            for table in ("jobs", "messages", "outbox", "inbound", "quarantine"):
                db.execute(f"ALTER TABLE {table} ADD COLUMN later TEXT")

        await store.writer.transaction(widen)
        job = await store.jobs.get(job_id)
        assert job is not None and job.id == job_id
        [message] = await store.jobs.to_convert()
        assert message.raw == b"x" and message.subject == "s"
        assert await store.outbox.latest() == [] and await store.inbound.all() == []


async def test_an_unknown_state_word_fails_naming_the_table_the_row_and_the_word(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path) as store:
        [job_id] = await store.jobs.accept(MAIL, [("0212@fax.local", "90212")], 1.0)
        await store.writer.transaction(lambda db: db.execute(
            "UPDATE jobs SET state = 'redialling' WHERE id = ?", (job_id,)))
        with pytest.raises(StoreError) as raised:
            await store.jobs.get(job_id)
    assert str(raised.value) == (
        f"jobs row {job_id}: state 'redialling' is not known to this version of fax-bridge "
        "(was the database written by a newer one?)")


async def test_a_newer_schema_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match=r"written by a newer fax-bridge \(schema 99;"):
        await Store.open(path)


async def test_a_full_database_is_known_by_its_sqlite_code_not_its_words(tmp_path: Path) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    async with Store.open(path) as store:
        pages = await store.writer.run(
            lambda db: db.execute("PRAGMA page_count").fetchone()[0])
        await store.writer.run(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))
        big = NewMessage(**{**MAIL.__dict__, "raw": b"x" * 200_000})
        with pytest.raises(sqlite3.OperationalError) as raised:
            await store.jobs.accept(big, [("0212@fax.local", "90212")], 1.0)
    assert is_disk_full(raised.value)
    assert is_disk_full(OSError(28, "No space left on device"))
    worded = sqlite3.OperationalError("database or disk is full")  # words, but no code
    assert not is_disk_full(worded)
    assert not is_disk_full(sqlite3.OperationalError("table full_names has no column x"))


async def test_an_upgrade_keeps_each_quarantined_body_once_counting_its_repeats(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    with sqlite3.connect(path) as db:  # a store as version 7 left it
        migrate_to(db, 7)
        db.executemany(
            "INSERT INTO quarantine (source, reason, body, received_at, replayed_at)"
            " VALUES ('faxmax-push', 'not JSON', ?, ?, ?)",
            [(b"{x", 1.0, 5.0), (b"{x", 2.0, None), (b"42", 3.0, None), (b"{x", 4.0, 6.0)])
    async with Store.open(path) as store:
        kept = await store.inbound.quarantined()
        # the earliest copy stays, not replayed since one of its copies was not
        assert [(q.id, q.body, q.repeats, q.replayed_at) for q in kept] == [
            (1, b"{x", 2, None), (3, b"42", 0, None)]
        _, _, again = await store.inbound.record_push(
            source="faxmax-push", events=[], faxes=[], bad=[(b"42", "not JSON")], now=7.0,
            rules=RULES)
        assert again == [(3, False)]
