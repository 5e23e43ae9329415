"""Limits that hold (issue 19, items 1 and 2), against the real service.

- The cover page is a page: it counts against `documents.max_pages` and the daily page caps,
  and its text is cut to `cover.MAX_COVER_PAGES` pages, which the cover and the report say.
- The per-sender limits count what the gateway checked (the `allowed_senders` entry that let a
  sender in, or the user who logged in), not whatever address a client writes in MAIL FROM;
  recipients of mails still in the dialogue count too (parallel sessions see each other), and
  the accepting transaction checks again; `numbers.max_faxes_per_hour` caps the whole gateway.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest

from bridge import cover
from bridge.app import Bridge
from bridge.limits import DAY, FaxCaps, HourlyCapReached
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState, NewMessage, Store
from tests.docfactory import make_pdf
from tests.limit_words import says_when
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import SmtpResult, smtp_send
from tests.sql import query
from tests.waits import wait_for_state, wait_until

PDF = ("a.pdf", "application/pdf", make_pdf(1))
TWO_PAGES = ("two.pdf", "application/pdf", make_pdf(2))
NUMBERS = [f"0212222252{n}@fax.local" for n in range(10)]


async def reservations(bridge: Bridge) -> int:
    """Recipients the SMTP side holds for transactions still open."""
    assert bridge.pipeline is not None
    return bridge.pipeline.smtp_handler.reservations.total


def stored(sender: str, n: int = 1) -> NewMessage:
    return NewMessage(mail_from=sender, header_from=sender, subject="", message_id=f"<{n}@x>",
                      refs="", spool_path="", raw=b"x")


# --- item 1: the cover page is a page -------------------------------------------------------


async def test_a_5_mb_body_makes_a_cover_of_a_few_pages_which_every_cap_counts(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    bridge = await make_bridge()
    body = "\n".join(f"{i:07d} and this is what the sender wrote on this line" for i in
                     range(5_000_000 // 50))
    assert len(body) >= 5_000_000
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF, body=body), rcpts=NUMBERS[:2])
    assert result.data == (250, "2.0.0 queued as fax jobs 1, 2")
    for job_id in (1, 2):
        await wait_for_state(bridge, job_id, JobState.DELIVERED, timeout=30)
    cover_pages = cover.MAX_COVER_PAGES
    [[pages]] = await query(bridge.store.path, "SELECT pages FROM messages")
    assert pages == 1 + cover_pages  # the recorded page count, which the caps read
    now = time.time()
    used = await bridge.store.jobs.usage("alice@example.com", hour_since=now - 3600,
                                         day_since=now - DAY)
    assert used.sender_pages == used.total_pages == 2 * (1 + cover_pages)
    sent = faxmax.requests[0].data["params"]["cover_html"]
    assert len(sent) < 20_000  # a few pages' worth, not 5 MB
    assert "0000000 and this is what the sender wrote" in sent
    assert "fax-bridge shortened this cover page" in sent
    reports = await relay.wait_for(2)
    plain = reports[0].message.get_body(("plain",))
    assert plain is not None
    text = plain.get_content()
    assert "These parts of your mail were not faxed:" in text
    assert f"the cover page holds at most {cover_pages} pages" in text


async def test_the_cover_counts_against_max_pages(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(documents={"max_pages": 2})
    result = await smtp_send(bridge.smtp_port, fax_mail(TWO_PAGES, body="Please sign both."))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.FAILED)
    job = await bridge.store.jobs.get(1)
    assert job is not None and job.detail == (
        "with its cover page (1 page(s)) this fax would have 3 pages, more than 2, the most "
        "fax-bridge sends in one fax; send fewer pages or write less in the mail")
    fits = await smtp_send(bridge.smtp_port, fax_mail(TWO_PAGES))  # no text: no cover
    assert fits.data == (250, "2.0.0 queued as fax jobs 2")
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    assert faxmax.sent_numbers() == ["902122222525"]


async def test_the_daily_page_cap_counts_the_cover(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(numbers={"max_pages_per_sender_per_day": 3})
    first = await smtp_send(bridge.smtp_port, fax_mail(TWO_PAGES, body="Here is the form."))
    assert first.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    second = await smtp_send(bridge.smtp_port, fax_mail(PDF, body="And one more page."))
    [refused] = second.rcpts
    assert says_when(refused, 450, "4.7.1 <alice@example.com> has reached the limit of 3 pages "
                                   "per day"), refused
    assert len(faxmax.requests) == 1


# --- item 2: who the per-sender limits count, and the gateway's backstop --------------------


async def test_senders_of_one_allowed_domain_share_its_allowance(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    """Behind a relay that may send for `@example.com`, a new address is not a new allowance;
    a mailbox listed on its own has its own."""
    bridge = await make_bridge(
        smtp={"allowed_senders": ("@example.com", "boss@example.com")},
        numbers={"max_faxes_per_sender_per_hour": 5})
    results = [await smtp_send(bridge.smtp_port, fax_mail(PDF, sender=sender),
                               mail_from=sender, rcpts=NUMBERS[2 * i:2 * i + 2])
               for i, sender in enumerate(("alice@example.com", "bob@example.com",
                                           "carol@example.com"))]
    assert [r.rcpts[0][0] for r in results] == [250, 250, 250]
    assert says_when(results[2].rcpts[1], 450, "4.7.1 mail from @example.com (all its senders "
                     "together) has reached the limit of 5 faxes per hour"), results[2].rcpts
    assert [r.data for r in results] == [(250, "2.0.0 queued as fax jobs 1, 2"),
                                         (250, "2.0.0 queued as fax jobs 3, 4"),
                                         (250, "2.0.0 queued as fax jobs 5")]
    boss = await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="boss@example.com"),
                           mail_from="boss@example.com", rcpts=NUMBERS[6:8])
    assert boss.data == (250, "2.0.0 queued as fax jobs 6, 7")
    assert await query(bridge.store.path, "SELECT sender, COUNT(*) FROM jobs GROUP BY 1") == [
        ("@example.com", 5), ("boss@example.com", 2)]


async def test_ten_parallel_sessions_against_a_limit_of_five_queue_five_faxes(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(numbers={"max_faxes_per_sender_per_hour": 5})
    all_answered = asyncio.Barrier(10)  # every session has its RCPT answered before any DATA

    async def session(n: int) -> SmtpResult:
        return await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=[NUMBERS[n]],
                               before_data=all_answered.wait)

    results = await asyncio.gather(*(session(n) for n in range(10)))
    assert sorted(r.rcpts[0][0] for r in results) == [250] * 5 + [450] * 5
    assert sum(r.data is not None and r.data[0] == 250 for r in results) == 5
    assert await query(bridge.store.path, "SELECT COUNT(*) FROM jobs") == [(5,)]
    # The held recipients were given back when the sessions ended: the count is the jobs'.
    assert await reservations(bridge) == 0


async def test_a_transaction_that_ends_without_a_mail_gives_its_recipients_back(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    """RSET, and a client that drops the connection, end the transaction: what it held at
    RCPT no longer counts against the sender."""
    bridge = await make_bridge(numbers={"max_faxes_per_sender_per_hour": 1})
    for leave in ("rset", "drop"):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.smtp_port, timeout=10)
        await client.connect()
        await client.ehlo()
        await client.mail("alice@example.com")
        assert (await client.rcpt("02122222525@fax.local")).code == 250
        blocked = await smtp_send(bridge.smtp_port, fax_mail(PDF))
        assert blocked.rcpts[0][0] == 450  # held by the open transaction
        if leave == "rset":
            await client.rset()
        else:
            client.close()
            await wait_until(lambda: reservations(bridge), 0)
        assert await reservations(bridge) == 0
        if leave == "rset":
            await client.quit()
    sent = await smtp_send(bridge.smtp_port, fax_mail(PDF))
    assert sent.data == (250, "2.0.0 queued as fax jobs 1")


async def test_the_accepting_transaction_checks_the_limit_again(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    """A fax stored between a mail's RCPT and its DATA (another session, another process on
    the same store) is counted at the accept: the mail gets a 450, nothing is stored."""
    bridge = await make_bridge(numbers={"max_faxes_per_sender_per_hour": 1})

    async def meanwhile() -> None:
        await bridge.store.jobs.accept(stored("alice@example.com"),
                                       [("x@fax.local", "902122222529")], time.time())

    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), before_data=meanwhile)
    assert result.rcpts == [(250, "2.1.5 <02122222525@fax.local>: will be faxed to "
                                  "+902122222525")]
    assert says_when(result.data, 450, "4.7.1 <alice@example.com> has reached the limit of 1 "
                                       "faxes per hour"), result.data
    assert await query(bridge.store.path, "SELECT COUNT(*) FROM jobs") == [(1,)]


async def test_the_gateway_wide_hourly_fax_cap_says_when_it_frees_up(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(numbers={"max_faxes_per_hour": 3})
    alice = await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=NUMBERS[:2])
    assert alice.data == (250, "2.0.0 queued as fax jobs 1, 2")
    bob = await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="bob@example.com"),
                          mail_from="bob@example.com", rcpts=NUMBERS[2:4])
    assert bob.rcpts[0][0] == 250 and bob.data == (250, "2.0.0 queued as fax jobs 3")
    [[first]] = await query(bridge.store.path, "SELECT MIN(created_at) FROM jobs")
    frees = (int(first // 60) + 1) * 60 + 3600  # when the oldest counted minute leaves
    at = datetime.fromtimestamp(frees, ZoneInfo("Europe/Istanbul")).strftime("%H:%M")
    assert says_when(bob.rcpts[1], 451, "4.7.1 The fax gateway has reached its limit of 3 "
                                        "faxes per hour"), bob.rcpts
    assert f"{at} +03 (in 1 hour" in bob.rcpts[1][1]
    carol = await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="carol@example.com"),
                            mail_from="carol@example.com")
    assert carol.rcpts[0] == bob.rcpts[1] and carol.data is None


async def test_the_store_refuses_a_mail_over_an_hourly_cap_and_stores_nothing(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "fax-bridge.sqlite3")
    try:
        now = 1_000_000.0
        await store.jobs.accept(stored("a@example.com"), [("1@fax.local", "9021")], now)
        await store.jobs.accept(stored("b@example.com", 2), [("1@fax.local", "9021")], now + 60)
        mine = [("2@fax.local", "9022")]
        with pytest.raises(HourlyCapReached) as sender:
            await store.jobs.accept(stored("a@example.com", 3), mine, now + 61,
                                    hourly=FaxCaps(per_sender=1, total=10))
        assert sender.value.cap == "per_sender"
        with pytest.raises(HourlyCapReached) as gateway:
            await store.jobs.accept(stored("c@example.com", 4), mine, now + 61,
                                    hourly=FaxCaps(per_sender=10, total=2))
        assert gateway.value.cap == "total"
        assert gateway.value.frees_at == (now // 60 + 1) * 60 + 3600
        assert await store.jobs.accept(stored("c@example.com", 5), mine, now + 61,
                                       hourly=FaxCaps(per_sender=1, total=3)) == [3]
    finally:
        await store.close()


def test_the_cover_page_rule_counts_lines_of_70_characters_40_to_a_page() -> None:
    heading = ("alice@example.com", "Invoice 42")  # 4 + 1 + 1 lines
    assert cover.fit("", *heading) == cover.Fitted("", 1, "")
    assert cover.fit("\n".join(["x" * 70] * 34), *heading).pages == 1
    assert cover.fit("\n".join(["x" * 70] * 35), *heading).pages == 2
    assert cover.fit("x" * 141 + "\n" * 31, *heading).pages == 1  # 3 lines, 31 empty ones
    assert cover.fit("x" * 141 + "\n" * 32, *heading).pages == 2
    cut = cover.fit("y" * 10_000, *heading)
    assert cut.pages == cover.MAX_COVER_PAGES and cut.text.startswith("y" * 7000)
    assert cut.cut == ("the end of the mail's text (2,230 characters): the cover page holds at "
                       "most 3 pages")
