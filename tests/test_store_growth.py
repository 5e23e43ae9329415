"""A gateway keeps the jobs of every mail it ever received. The work of taking in and converting
one more mail must not grow with that history: a statement that scans the jobs table costs a
little on a new installation and milliseconds per mail, under the write lock, on one that has
run for years. Counted here in SQLite's own steps, which do not depend on the machine's speed."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.store import NewMessage, Store


async def history(path: Path, mails: int) -> Store:
    """A store holding `mails` received mails with one queued job each (written in one
    transaction, as years of intake would have left them)."""
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO messages (id, state, mail_from, header_from, subject, message_id, refs,"
            " spool_path, received_at) VALUES (?, 'received', 'a@example.com', '', 's', ?, '',"
            " '', ?)", [(i, f"<{i}@example.com>", 1000.0 + i) for i in range(1, mails + 1)])
        db.executemany(
            "INSERT INTO jobs (message, number, recipient, sender, state, next_attempt_at,"
            " created_at, updated_at) VALUES (?, '0312345678', '0312345678@fax.local',"
            " 'a@example.com', 'queued', 0, ?, 0)", [(i, 1000.0 + i) for i in range(1, mails + 1)])
    db.close()
    return await Store.open(path)


async def steps(store: Store, work: Callable[[], Awaitable[object]]) -> int:
    """SQLite virtual-machine instructions `work` ran on the store's two connections (the
    writer and the reader), triggers included."""
    counted = {"writer": 0, "reader": 0}  # each counted on its own connection's thread

    def counter(connection: str) -> Callable[[], int]:
        def count() -> int:
            counted[connection] += 1
            return 0  # go on
        return count

    await store.writer.run(lambda db: db.set_progress_handler(counter("writer"), 1))
    await store.reader.connection.set_progress_handler(counter("reader"), 1)  # every VM instruction
    try:
        await work()
    finally:
        await store.writer.run(lambda db: db.set_progress_handler(None, 1))
        await store.reader.connection.set_progress_handler(None, 1)  # type: ignore[arg-type]  # clears
    return counted["writer"] + counted["reader"]


async def work_of_one_more_mail(path: Path, mails: int) -> dict[str, int]:
    store = await history(path, mails)
    try:
        mail = NewMessage(mail_from="a@example.com", header_from="a@example.com", subject="s",
                          message_id="<new@example.com>", refs="", spool_path="", raw=b"x")
        accepted: list[list[int]] = []

        async def accept() -> None:
            accepted.append(await store.jobs.accept(
                mail, [("0312345678@fax.local", "0312345678")], 5000.0))

        taken = await steps(store, accept)
        job = await store.jobs.get(accepted[0][0])
        assert job is not None
        message_id = job.message
        looked_up = await steps(store, lambda: store.jobs.of_message(message_id))
        converted = await steps(store, lambda: store.jobs.converted(
            message_id, document_path="fax.pdf", pages=3, cover_html=None, left_out=()))
        return {"accept": taken, "jobs of the mail": looked_up, "mark converted": converted}
    finally:
        await store.close()


async def test_one_more_mail_costs_the_same_after_thousands(tmp_path: Path) -> None:
    few = await work_of_one_more_mail(tmp_path / "few.sqlite3", 20)
    many = await work_of_one_more_mail(tmp_path / "many.sqlite3", 5000)
    for what in few:
        # By index the same (151 and 151 instructions to mark a mail converted, 36 and 36 to
        # look up its jobs); a scan of the jobs grows 250-fold here (94 → 15 034).
        assert many[what] <= 2 * few[what], (what, few[what], many[what])
