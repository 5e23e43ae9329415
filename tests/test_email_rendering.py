"""Every kind of email the service sends, as a mail client shows it: a real headless Chromium
(tests/browser.py) opens each HTML part, its `cid:` pictures resolved, at a phone's width
(375 px) and a desktop's (1024 px). Nothing may be wider than the window, every picture must
load, nothing remote may be asked for; the screenshots are kept in build/screenshots (or
$FAX_BRIDGE_SCREENSHOTS) for a reviewer.

The emails are made by the real service, in English, Turkish and Japanese: a fax delivered
after a busy line, one that broke off after some pages, one of unknown outcome, one cancelled
before its time, a received fax, and an alert to the admin.

The test plan: docs/RELIABILITY.md R3.
"""

from __future__ import annotations

import collections
import html.parser
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from bridge.clock import FakeClock
from bridge.simulators import Fault, FaxMaxSimulator, Outcome
from bridge.store import JobState
from tests.browser import Browser, chromium
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.rigs import ADMIN, ROUTED
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

ROUTING: dict[str, Any] = {"numbers": ROUTED, "default": ("frontdesk@example.com",),
                           "admin": ADMIN}
PDF = ("invoice.pdf", "application/pdf", make_pdf(3))
LONG_SUBJECT = ("Invoice 2026-4711 for the maintenance contract of the third quarter, with the "
                "list of every visit and part")


ATTRIBUTES = {"alt", "border", "cellpadding", "cellspacing", "dir", "height", "lang", "role",
              "src", "style", "width"}
"""Every attribute the templates write. An attribute outside it is a quote that closed a
`style` early (`"Noto Sans CJK JP"` inside `style="…"`), which a browser forgives silently."""


class Attributes(html.parser.HTMLParser):
    """Each tag's attributes, and each `style` declaration that is not `property: value`."""

    def __init__(self) -> None:
        super().__init__()
        self.unknown: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name not in ATTRIBUTES:
                self.unknown.append(f"<{tag} {name}>")
            for declaration in (value or "").split(";") if name == "style" else ():
                if declaration.strip() and ":" not in declaration:
                    self.unknown.append(f"<{tag} style> {declaration.strip()!r}")


def badly_written(html_part: str) -> list[str]:
    parser = Attributes()
    parser.feed(html_part)
    return parser.unknown


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium")) as b:
        yield b


async def every_kind(make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
                     clock: FakeClock, lang: str) -> dict[str, EmailMessage]:
    """One email of each kind, in `lang` (`mail.language`), by what it is."""
    faxmax.outcomes["902122222525"] = collections.deque([Outcome.busy(), Outcome("SUCCESS")])
    faxmax.outcomes["903125550000"] = collections.deque([Outcome.cut_off(2)])
    bridge = await make_bridge(clock=clock, routing=ROUTING, mail={"language": lang})
    await smtp_send(bridge.smtp_port, fax_mail(PDF, subject=LONG_SUBJECT))
    await smtp_send(bridge.smtp_port, fax_mail(PDF, to="03125550000@fax.local"),
                    rcpts=["03125550000@fax.local"])
    await wait_for_state(bridge, 2, JobState.FAILED)
    await wait_for_state(bridge, 1, JobState.QUEUED)  # dialled again after the busy line
    clock.advance(120)
    bridge.wake()
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    faxmax.faults.append(Fault.http(500))
    await smtp_send(bridge.smtp_port, fax_mail(PDF, to="02163334444@fax.local"),
                    rcpts=["02163334444@fax.local"])
    await wait_for_state(bridge, 3, JobState.UNKNOWN)
    scheduled = fax_mail(PDF, to="02124445566@fax.local")
    scheduled["X-Fax-Send-At"] = datetime.fromtimestamp(clock.now() + 3600, UTC).isoformat()
    await smtp_send(bridge.smtp_port, scheduled, rcpts=["02124445566@fax.local"])
    await wait_for_state(bridge, 4, JobState.SCHEDULED)
    assert await bridge.store.jobs.cancel(4, clock.now()) is None
    bridge.wake()  # as `fax-bridge cancel` tells the running service
    await faxmax.push_incoming(tiff=make_tiff(2), cld="902121110000", cli="903125550000",
                               remote_station_id="ACME LTD")
    bad = faxmax.incoming_event(tiff=make_tiff(1), cld="902121110000", cli="903125550000")
    await faxmax.push_events([dict(bad, id="bad-1", content="not base64 at all!")])
    mails = await relay.wait_for(6)
    by_kind: dict[str, EmailMessage] = {}
    for mail in mails:
        message_id = mail.message["Message-ID"]
        kind = ("alert" if mail.rcpt_tos == [ADMIN] else
                "fax" if "istanbul@example.com" in mail.rcpt_tos else
                next((s for s in ("delivered", "failed", "unknown", "cancelled")
                      if f".{s}@" in message_id), "other"))
        by_kind[kind] = mail.message
    assert set(by_kind) == {"delivered", "failed", "unknown", "cancelled", "fax", "alert"}
    return by_kind


@pytest.mark.parametrize("lang", ["en", "tr", "ja"])
async def test_every_email_fits_a_phone_and_a_desktop_with_every_picture_loaded(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, clock: FakeClock,
    browser: Browser, tmp_path: Path, lang: str,
) -> None:
    emails = await every_kind(make_bridge, faxmax, relay, clock, lang)
    problems: list[str] = []
    for kind, message in sorted(emails.items()):
        assert message.get_body(("plain",)) is not None, f"{kind}: no plain-text part"
        html = message.get_body(("html",))
        assert html is not None
        if lang != "en":
            assert f'lang="{lang}"' in str(html.get_content()), f"{kind}: not in {lang}"
        problems.extend(f"{kind}: {bad}" for bad in badly_written(str(html.get_content())))
        for look in browser.look(message, f"{lang}-{kind}", tmp_path / kind):
            if look.overflows:
                problems.append(f"{kind} at {look.width} px is {look.page_width} px wide")
            if look.broken:
                problems.append(f"{kind} at {look.width} px: pictures not loaded {look.broken}")
            if look.remote:
                problems.append(f"{kind} at {look.width} px asked for {look.remote}")
            assert look.screenshot.stat().st_size > 1000
    assert problems == []
