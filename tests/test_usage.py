"""The hourly fax limit and the daily page caps read per-minute usage counts that triggers keep.
Whatever happens to the faxes (converted, refused, sent, failed before or after FaxMAX took
them, requeued), the counts must say what the faxes themselves say."""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.limits import DAY
from bridge.store import JobState, NewMessage, Store, Usage
from tests.settings import RULES
from tests.sql import migrate_to, query

SENDERS = ("a@example.com", "B@example.com", "c@example.com")


def claim(db: sqlite3.Connection, job_id: int) -> None:
    """What the sender's claim does to a job, without the claim's own choice of job."""
    db.execute("UPDATE jobs SET state = 'sending' WHERE id = ?", (job_id,))


def mail(sender: str, n: int) -> NewMessage:
    return NewMessage(mail_from=sender, header_from="", subject=f"mail {n}",
                      message_id=f"<{n}@example.com>", refs="", spool_path="", raw=b"x")


async def recounted(store: Store, sender: str, now: float) -> Usage:
    """The same figures, counted from the jobs the slow way (the oldest minute whole)."""
    hour, day = (now - 3600) // 60 * 60, (now - DAY) // 60 * 60
    # A fax sent without its cover is charged without the cover's pages; one FaxMAX never
    # took (failed before it, or cancelled) costs none.
    charged = ("SELECT COALESCE(SUM(m.pages - CASE WHEN j.cover_sent = 0 THEN m.cover_pages"
               " ELSE 0 END), 0) FROM jobs j JOIN messages m ON m.id = j.message"
               " WHERE j.created_at >= ?"
               " AND NOT (j.state IN ('failed', 'cancelled') AND j.fax_id IS NULL)")
    [[faxes]] = await query(store.path,
        "SELECT COUNT(*) FROM jobs WHERE sender = ? AND created_at >= ?", (sender.lower(), hour))
    [[pages]] = await query(store.path, charged + " AND j.sender = ?", (day, sender.lower()))
    [[total]] = await query(store.path, charged, (day,))
    [[all_faxes]] = await query(store.path, "SELECT COUNT(*) FROM jobs WHERE created_at >= ?",
                                (hour,))
    return Usage(faxes_last_hour=faxes, sender_pages=pages, total_pages=total,
                 total_faxes_last_hour=all_faxes)


step = st.tuples(
    st.sampled_from(["mail", "ready", "refused", "sent", "failed", "lost", "requeue",
                     "cancel"]),
    st.integers(0, 50),  # which mail or job, modulo how many there are
    st.integers(1, 9),  # pages, or recipients
    st.floats(0, 4 * 3600),  # seconds that pass first
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_usage_counts_always_match_the_faxes(tmp_path_factory: object, steps: list[
        tuple[str, int, int, float]]) -> None:
    assert hasattr(tmp_path_factory, "mktemp")
    path = tmp_path_factory.mktemp("usage") / "fax-bridge.sqlite3"

    async def run() -> None:
        store = await Store.open(path)
        now, mails, fax = 1_000_000.0, 0, 0
        try:
            for action, which, count, wait in steps:
                now += wait
                jobs = await store.jobs.latest(limit=10_000)
                job = jobs[which % len(jobs)] if jobs else None
                if action == "mail" or job is None:
                    mails += 1
                    await store.jobs.accept(
                        mail(SENDERS[which % 3], mails),
                        [(f"{n}@fax.local", f"9021255500{n}") for n in range(count % 3 + 1)],
                        now)
                elif action == "ready":  # some of its faxes with the cover, some without
                    await store.jobs.converted(
                        job.message, document_path="/d.pdf", pages=count, cover_html=None,
                        left_out=(), cover_pages=which % count,
                        cover_sent={j.id: (j.id + which) % 2 == 0 for j in jobs
                                    if j.message == job.message})
                elif action == "refused":
                    await store.jobs.not_convertible(job.message, "refused", now)
                elif action == "sent" and job.state is JobState.QUEUED:
                    fax += 1
                    await store.writer.transaction(partial(claim, job_id=job.id))
                    await store.jobs.submitted(job.id, f"F{fax}", now, RULES)
                elif action == "failed":  # after FaxMAX took it (charged) or before (not)
                    await store.jobs.finish(job.id, JobState.FAILED, detail="busy", now=now)
                elif action == "lost":
                    await store.jobs.expire(now + 1, now)
                elif action == "requeue":
                    await store.jobs.requeue(job.id, now)
                elif action == "cancel":
                    await store.jobs.cancel(job.id, now)
                for sender in SENDERS:
                    used = await store.jobs.usage(sender, hour_since=now - 3600,
                                                  day_since=now - DAY)
                    assert used == await recounted(store, sender, now), (action, sender)
            await store.jobs.forget_usage(now - DAY)  # what the day's windows need is kept
            [[older]] = await query(store.path, "SELECT COUNT(*) FROM usage WHERE minute < ?",
                                         (int((now - DAY) // 60),))
            assert older == 0
            for sender in SENDERS:
                assert (await store.jobs.usage(sender, hour_since=now - 3600, day_since=now - DAY)
                        == await recounted(store, sender, now))
        finally:
            await store.close()

    asyncio.run(run())


async def test_an_upgraded_store_counts_the_faxes_it_already_had(tmp_path: Path) -> None:
    path = tmp_path / "fax-bridge.sqlite3"
    with sqlite3.connect(path) as db:  # a store as version 4 left it
        migrate_to(db, 4)
        for n, (sender, pages, state, fax_id) in enumerate([
                ("a@example.com", 2, "delivered", "F1"), ("a@example.com", 3, "failed", None),
                ("a@example.com", 4, "failed", "F2"), ("b@example.com", 5, "queued", None)]):
            db.execute("INSERT INTO messages (id, state, mail_from, header_from, subject,"
                       " message_id, refs, spool_path, pages, received_at)"
                       " VALUES (?, 'ready', ?, '', '', '', '', '', ?, ?)",
                       (n + 1, sender, pages, 5000.0 + n))
            db.execute("INSERT INTO jobs (message, number, recipient, sender, state,"
                       " next_attempt_at, created_at, updated_at, fax_id)"
                       " VALUES (?, '90212', 'x@fax.local', ?, ?, 0, ?, 0, ?)",
                       (n + 1, sender, state, 5000.0 + n, fax_id))
    store = await Store.open(path)
    try:
        used = await store.jobs.usage("A@example.com", hour_since=4000, day_since=4000)
        assert used == Usage(faxes_last_hour=3, sender_pages=2 + 4, total_pages=2 + 4 + 5,
                             total_faxes_last_hour=4)
        assert used == await recounted(store, "a@example.com", 4000 + 3600)
    finally:
        await store.close()
