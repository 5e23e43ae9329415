"""Every `4xx` for a limit says when to try again, and the time is right (issue: "say when").

On a fake clock that starts at 11:00:00 in the tests' time zone (Europe/Istanbul, +03), with
the faxes already counted stored at known minutes: the real SMTP server of the service's own
pipeline answers RCPT (faxes per hour, per sender and for the gateway; pages per day, the
same), and the converter words the daily caps found after `250`. At the time a reply names,
the next fax gets through: the limits count per minute, the oldest minute whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from bridge.clock import FakeClock
from bridge.ingress.connections import SmtpServer
from bridge.ingress.smtp import start_smtp_server
from bridge.limits import DAY, HOUR, frees_at, try_again
from bridge.pipeline import Pipeline
from bridge.store import NewMessage, Store
from tests.docfactory import make_pdf
from tests.rigs import MakePipeline
from tests.settings import settings_for

T0 = 1_800_000_000.0  # 2027-01-15 11:00:00 +03, the start of `FakeClock`
MINUTE = 60.0


class Service:
    """The pipeline's SMTP handler on a real server, its store, and the clock they read."""

    def __init__(self, pipeline: Pipeline, store: Store, server: SmtpServer,
                 clock: FakeClock, tmp_path: Path) -> None:
        self.pipeline, self.store, self.server, self.clock = pipeline, store, server, clock
        self.tmp_path = tmp_path
        self.sent = 0

    async def stored(self, sender: str, *, at: float, pages: int | None = 1) -> int:
        """A fax from `sender` stored at `at` and converted to `pages` pages (None: waiting
        for its conversion); its message's id."""
        self.sent += 1
        document = self.tmp_path / f"{self.sent}.pdf"
        document.write_bytes(make_pdf(1))
        [job_id] = await self.store.jobs.accept(
            NewMessage(mail_from=sender, header_from=sender, subject="", refs="",
                       message_id=f"<{self.sent}@example.com>", spool_path="", raw=b"x"),
            [("02122222525@fax.local", "902122222525")], at)
        job = await self.store.jobs.get(job_id)
        assert job is not None
        if pages is not None:
            await self.store.jobs.converted(job.message, document_path=str(document),
                                            pages=pages, cover_html=None, left_out=[])
        return job.message

    async def rcpt(self, sender: str) -> tuple[int, str]:
        """The answer to one RCPT from `sender`, at the clock's time."""
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.server.port,
                                   timeout=10) as client:
            await client.mail(sender)
            answer = await client.execute_command(b"RCPT", b"TO:<02122222525@fax.local>")
            return answer.code, answer.message

    def at(self, when: float) -> None:
        self.clock.advance(when - self.clock.now())


@pytest.fixture
async def make_service(tmp_path: Path, clock: FakeClock, make_pipeline: MakePipeline
                       ) -> AsyncIterator[Any]:
    opened: list[tuple[Store, SmtpServer]] = []

    async def make(**numbers: int) -> Service:
        settings = settings_for(tmp_path, "http://127.0.0.1:9/unused", numbers=numbers)
        store = await Store.open(tmp_path / "fax-bridge.sqlite3")
        pipeline = make_pipeline(settings, store, clock)
        server = await start_smtp_server(pipeline.smtp_handler, "127.0.0.1", 0)
        opened.append((store, server))
        return Service(pipeline, store, server, clock, tmp_path)

    yield make
    for store, server in opened:
        await server.drain()
        await store.close()


def test_the_time_is_the_next_whole_minute_in_the_services_zone_and_the_wait_rounded_up(
) -> None:
    tz = "Europe/Istanbul"
    assert try_again(T0 + 23 * MINUTE, T0, tz) == {"time": "11:23 +03", "wait": "23 minutes"}
    assert try_again(T0 + 30, T0, tz) == {"time": "11:01 +03", "wait": "1 minute"}
    # Between two minutes: the next one, so that a try at the time shown passes.
    assert try_again(T0 + 61, T0, tz) == {"time": "11:02 +03", "wait": "2 minutes"}
    assert try_again(T0 + HOUR, T0, tz) == {"time": "12:00 +03", "wait": "1 hour"}
    assert try_again(T0 + DAY + 60, T0 + 12 * HOUR, tz) == {
        "time": "2027-01-16 11:01 +03", "wait": "12 hours 1 minute"}
    assert try_again(T0 + 2 * HOUR + 5 * MINUTE, T0, "Asia/Tokyo") == {
        "time": "19:05 JST", "wait": "2 hours 5 minutes"}


def test_a_window_frees_once_enough_of_its_oldest_minutes_have_left() -> None:
    minutes = [(100, 1), (130, 4), (200, 2)]
    assert frees_at(minutes, 1, HOUR) == 101 * 60 + HOUR
    assert frees_at(minutes, 2, DAY) == 131 * 60 + DAY  # the first minute alone is not enough
    assert frees_at(minutes, 7, HOUR) == 201 * 60 + HOUR
    assert frees_at(minutes, 8, HOUR) is None  # held by what is not stored
    assert frees_at([], 1, HOUR) is None


async def test_a_sender_over_the_hourly_limit_is_told_the_minute_its_oldest_fax_leaves(
    make_service: Any,
) -> None:
    service: Service = await make_service(max_faxes_per_sender_per_hour=2)
    await service.stored("alice@example.com", at=T0 + 10)  # 11:00:10
    await service.stored("alice@example.com", at=T0 + 30 * MINUTE)
    service.at(T0 + 45 * MINUTE + 20)  # 11:45:20
    assert await service.rcpt("alice@example.com") == (
        450, "4.7.1 <alice@example.com> has reached the limit of 2 faxes per hour; please try "
             "again after 12:01 +03 (in 16 minutes)")
    assert (await service.rcpt("bob@example.com"))[0] == 250  # his own limit
    service.at(T0 + HOUR + 30)  # 12:00:30
    assert (await service.rcpt("alice@example.com"))[1].endswith(
        "please try again after 12:01 +03 (in 1 minute)")
    service.at(T0 + HOUR + MINUTE)  # 12:01, as the reply said
    assert (await service.rcpt("alice@example.com"))[0] == 250


async def test_the_gateways_hourly_limit_says_when_it_frees(make_service: Any) -> None:
    service: Service = await make_service(max_faxes_per_hour=3)
    for n, sender in enumerate(("alice", "bob", "carol")):
        await service.stored(f"{sender}@example.com", at=T0 + 10 + n * 20 * MINUTE)
    service.at(T0 + 59 * MINUTE + 30)  # 11:59:30
    assert await service.rcpt("dave@example.com") == (
        451, "4.7.1 The fax gateway has reached its limit of 3 faxes per hour; please try "
             "again after 12:01 +03 (in 2 minutes)")
    service.at(T0 + HOUR + MINUTE)
    assert (await service.rcpt("dave@example.com"))[0] == 250


async def test_a_sender_over_the_daily_pages_is_told_the_day_and_minute(
    make_service: Any,
) -> None:
    service: Service = await make_service(max_pages_per_sender_per_day=5)
    await service.stored("alice@example.com", at=T0 + 10, pages=1)  # 11:00
    await service.stored("alice@example.com", at=T0 + 4 * HOUR, pages=4)  # 15:00
    service.at(T0 + 9 * HOUR)  # 20:00
    assert await service.rcpt("alice@example.com") == (
        450, "4.7.1 <alice@example.com> has reached the limit of 5 pages per day; please try "
             "again after 2027-01-16 11:01 +03 (in 15 hours 1 minute)")
    service.at(T0 + DAY + MINUTE)
    assert (await service.rcpt("alice@example.com"))[0] == 250


async def test_the_gateways_daily_pages_say_when_they_free(make_service: Any) -> None:
    service: Service = await make_service(max_pages_per_day=6)
    await service.stored("alice@example.com", at=T0 + 2 * HOUR, pages=2)  # 13:00
    await service.stored("bob@example.com", at=T0 + 3 * HOUR, pages=4)
    service.at(T0 + 10 * HOUR + 30)  # 21:00:30
    assert await service.rcpt("carol@example.com") == (
        451, "4.7.1 The fax gateway has reached its daily page limit; please try again after "
             "2027-01-16 13:01 +03 (in 16 hours 1 minute)")


async def test_after_250_the_daily_caps_say_when_to_send_the_fax_again(
    make_service: Any,
) -> None:
    """Found once the pages are counted: the words go into the job's failure and the report.
    A fax of 3 pages against 1 + 4 pages of 5 must wait for both minutes to leave."""
    service: Service = await make_service(max_pages_per_sender_per_day=5,
                                          max_pages_per_day=8)
    await service.stored("alice@example.com", at=T0 + 10, pages=1)  # 11:00
    await service.stored("alice@example.com", at=T0 + HOUR, pages=4)  # 12:00
    await service.stored("bob@example.com", at=T0 + 2 * HOUR, pages=3)  # 13:00
    service.at(T0 + 3 * HOUR)  # 14:00
    converter = service.pipeline.converter

    async def over(sender: str, pages: int, cost: int, numbers: int) -> str | None:
        message = await service.store.jobs.message(
            await service.stored(sender, at=service.clock.now(), pages=None))
        assert message is not None
        return await converter.over_page_caps(message, pages, cost, numbers)

    assert await over("alice@example.com", 1, 1, 1) == (
        "this fax has 1 page(s) for 1 number(s); with it <alice@example.com> would send more "
        "than 5 pages in 24 hours (5 already); please send it again after 2027-01-16 11:01 +03 "
        "(in 21 hours 1 minute)")
    assert await over("alice@example.com", 3, 3, 1) == (
        "this fax has 3 page(s) for 1 number(s); with it <alice@example.com> would send more "
        "than 5 pages in 24 hours (5 already); please send it again after 2027-01-16 12:01 +03 "
        "(in 22 hours 1 minute)")
    assert await over("alice@example.com", 3, 6, 2) == (
        "this fax has 3 page(s) for 2 number(s), 6 pages in all: more than the limit of 5 "
        "pages per day for <alice@example.com>, so it cannot be sent as it is; send it to "
        "fewer numbers at a time, or in parts")
    assert await over("carol@example.com", 1, 1, 1) == (
        "the fax gateway has reached its daily page limit; please send it again after "
        "2027-01-16 11:01 +03 (in 21 hours 1 minute)")
    assert await over("carol@example.com", 1, 0, 1) is None  # a fax of no cost passes
