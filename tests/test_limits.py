"""Limits that hold (issue 19), against the real service.

- The cover page is a page: it counts against `documents.max_pages` and the daily page caps,
  and its text is cut to `cover.MAX_COVER_PAGES` pages, which the cover and the report say.
"""

from __future__ import annotations

import time

from bridge import cover
from bridge.limits import DAY
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state

PDF = ("a.pdf", "application/pdf", make_pdf(1))
TWO_PAGES = ("two.pdf", "application/pdf", make_pdf(2))
NUMBERS = [f"0212222252{n}@fax.local" for n in range(10)]


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
    assert second.rcpts == [(450, "4.7.1 <alice@example.com> has reached the limit of 3 pages "
                                  "per day; please try again tomorrow")]
    assert len(faxmax.requests) == 1


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
