"""Options per fax (issue 20): address tags after `+` and the `X-Fax-*` headers, checked in the
SMTP dialogue, carried per job to FaxMAX's send call, and echoed in the sender's report. The
real service, a real SMTP client, the FaxMAX simulator and the relay sink."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import options
from bridge.errors import Refusal
from bridge.replies import render
from bridge.simulators import FaxMaxSimulator
from bridge.simulators.faxmax import AcceptedFax
from bridge.store import JobState
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state

PDF = ("offer.pdf", "application/pdf", make_pdf(2))
TAGGED = "902122222525"
PLAIN = "903122222222"
BODY = "Please find our offer attached.\n"


def by_phone(faxmax: FaxMaxSimulator) -> dict[str, AcceptedFax]:
    return {fax.phone: fax for fax in faxmax.faxes}


def sent_as(fax: AcceptedFax) -> tuple[str, str, bool, int]:
    """What FaxMAX was asked for: resolution, paper size, whether a cover page came, pages."""
    return fax.resolution, fax.paper_size, fax.cover, fax.pages


@pytest.mark.parametrize(("tags", "body", "wanted"), [
    ("+superfine", BODY, ("superfine", "A4", True, 3)),
    ("+normal", BODY, ("normal", "A4", True, 3)),
    ("+fine", BODY, ("fine", "A4", True, 3)),
    ("+letter", BODY, ("fine", "letter", True, 3)),
    ("+legal", BODY, ("fine", "legal", True, 3)),
    ("+a4", BODY, ("fine", "A4", True, 3)),
    ("+nocover", BODY, ("fine", "A4", False, 2)),
    ("+cover", "", ("fine", "A4", True, 3)),  # always: even with no words of the sender's own
    ("+SuperFine+NoCover+Legal", BODY, ("superfine", "legal", False, 2)),  # several, any case
])
async def test_address_tags_reach_faxmax_for_that_recipient_only(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tags: str, body: str,
    wanted: tuple[str, str, bool, int],
) -> None:
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF, body=body),
                             rcpts=[f"02122222525{tags}@fax.local", "03122222222@fax.local"])
    assert result.rcpts[0] == (250, f"2.1.5 <02122222525{tags}@fax.local>: will be faxed to "
                                    f"+{TAGGED}")
    assert result.data == (250, "2.0.0 queued as fax jobs 1, 2")
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    faxes = by_phone(faxmax)
    assert sent_as(faxes[TAGGED]) == wanted
    # The other recipient of the same mail gets the operator's defaults.
    assert sent_as(faxes[PLAIN]) == ("fine", "A4", bool(body), 3 if body else 2)


@pytest.mark.parametrize(("tags", "first", "second", "kind"), [
    ("+fine+superfine", "fine", "superfine", "resolution"),
    ("+cover+NOCOVER", "cover", "NOCOVER", "cover page choice"),
    ("+a4+letter", "a4", "letter", "paper size"),
])
async def test_contradicting_tags_are_refused_at_rcpt(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tags: str, first: str, second: str,
    kind: str,
) -> None:
    bridge = await make_bridge()
    address = f"02122222525{tags}@fax.local"
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=[address])
    assert result.rcpts == [(550, f"5.1.3 <{address}>: '{first}' and '{second}' contradict "
                                  f"each other: give one {kind} per number")]
    assert result.data is None
    assert await query(bridge.store.path, "SELECT COUNT(*) FROM jobs") == [(0,)]


@pytest.mark.parametrize(("tag", "named"), [
    ("urgent", "'urgent'"),
    ("fine!x", "'fine!x'"),  # a routing character after the '+' is no way out either
    ("", "''"),
])
async def test_an_unknown_tag_is_refused_at_rcpt_naming_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tag: str, named: str,
) -> None:
    bridge = await make_bridge()
    address = f"02122222525+fine+{tag}@fax.local"
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF),
                             rcpts=[address, "03122222222@fax.local"])
    assert result.rcpts[0] == (550, f"5.1.3 <{address}>: {named} is not a fax option: after "
                                    "'+' write normal, fine, superfine, cover, nocover, a4, "
                                    "letter or legal, as NUMBER+fine@fax.local")
    assert result.data == (250, "2.0.0 queued as fax jobs 1")  # the other recipient only
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert faxmax.sent_numbers() == [PLAIN]


@pytest.mark.parametrize(("tag", "named"), [
    ("s\u00fcperfine", "'s\\xfcperfine'"),  # the original's spelling, not an address tag
    ("\u81f3\u6025", "'\\u81f3\\u6025'"),  # "urgent" in Japanese
])
async def test_a_non_ascii_tag_is_refused_in_ascii(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, tag: str, named: str,
) -> None:
    """Without SMTPUTF8, aiosmtpd refuses a non-ASCII address before the handler sees it
    (a 5xx of its own, in ASCII); should one reach the handler, its refusal names the tag
    in ASCII all the same."""
    bridge = await make_bridge()
    address = f"02122222525+{tag}@fax.local"
    result = await smtp_send(bridge.smtp_port, fax_mail(PDF), rcpts=[address],
                             encoding="utf-8")
    assert result.rcpts == [(500, "Error: strict ASCII mode")]
    assert result.data is None and faxmax.calls == 0
    with pytest.raises(Refusal) as refused:
        bridge.pipeline.smtp_handler._recipient(address)  # type: ignore[union-attr]
    line = render(refused.value.entry, address, **refused.value.slots)
    assert line.startswith("550 5.1.3 <02122222525+")
    assert line.endswith(f"@fax.local>: {named} is not a fax option: after '+' write normal, "
                         "fine, superfine, cover, nocover, a4, letter or legal, as "
                         "NUMBER+fine@fax.local")
    assert line.isascii() and line.isprintable()


def test_a_tag_that_is_digits_is_the_plus_inside_a_number_as_before() -> None:
    assert options.split_tags("0212+2222525") == ("0212+2222525", ())
    assert options.split_tags("+902122222525+fine") == ("+902122222525", ("fine",))


@settings(max_examples=200, deadline=None)
@given(tag=st.text(st.characters(exclude_categories=["Cs"]), max_size=30))
def test_any_tag_is_accepted_or_refused_with_a_5xx_line_of_ascii(tag: str) -> None:
    try:
        options.parse_tags((tag,), domain="fax.local")
    except Refusal as refusal:
        line = render(refusal.entry, "x@fax.local", **refusal.slots)
        assert line.startswith("550 5.1.3 ") and line.isascii() and line.isprintable()
    else:
        assert tag.lower() in options.TAGS


@pytest.mark.parametrize(("header", "value", "wanted"), [
    ("X-Fax-Resolution", "superfine", ("superfine", "A4", True, 3)),
    ("X-Fax-Resolution", "Normal", ("normal", "A4", True, 3)),
    ("X-Fax-Paper-Size", "letter", ("fine", "letter", True, 3)),
    ("X-Fax-Paper-Size", "LEGAL", ("fine", "legal", True, 3)),
    ("X-Fax-Paper-Size", "a4", ("fine", "A4", True, 3)),
    ("X-Fax-Cover", "never", ("fine", "A4", False, 2)),
    ("X-Fax-Cover", "auto", ("fine", "A4", True, 3)),
])
async def test_each_header_reaches_faxmax_for_every_recipient(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, header: str, value: str,
    wanted: tuple[str, str, bool, int],
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(PDF, body=BODY)
    mail[header] = value
    result = await smtp_send(bridge.smtp_port, mail,
                             rcpts=["02122222525@fax.local", "03122222222@fax.local"])
    assert result.data == (250, "2.0.0 queued as fax jobs 1, 2")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    faxes = by_phone(faxmax)
    assert sent_as(faxes[TAGGED]) == sent_as(faxes[PLAIN]) == wanted


async def test_x_fax_cover_always_sends_a_cover_with_no_words_of_the_senders(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge(faxmax={"cover_page": "never"})
    mail = fax_mail(PDF)
    mail["X-Fax-Cover"] = "always"
    await smtp_send(bridge.smtp_port, mail)
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    assert sent_as(faxmax.faxes[0]) == ("fine", "A4", True, 3)


@pytest.mark.parametrize(("header", "value", "words"), [
    ("X-Fax-Resolution", "ultra", "the header X-Fax-Resolution: 'ultra' is not one of "
                                  "normal, fine, superfine"),
    ("X-Fax-Resolution", "s\u00fcperfine", "the header X-Fax-Resolution: 's\\xfcperfine' is not "
                                           "one of normal, fine, superfine"),
    ("X-Fax-Paper-Size", "A3", "the header X-Fax-Paper-Size: 'A3' is not one of A4, letter, "
                               "legal"),
    ("X-Fax-Cover", "yes", "the header X-Fax-Cover: 'yes' is not one of auto, always, never"),
    ("X-Fax-Send-At", "2026-12-08T09:00:00", "the header X-Fax-Send-At: "
     "'2026-12-08T09:00:00' is not a time with its offset from UTC (RFC 3339), like "
     "2026-12-08T09:00:00+09:00"),
    ("X-Fax-Send-At", "tomorrow 9am", "the header X-Fax-Send-At: 'tomorrow 9am' is not a time "
     "with its offset from UTC (RFC 3339), like 2026-12-08T09:00:00+09:00"),
    ("X-Fax-Send-At", "2026-02-30T09:00:00+03:00", "the header X-Fax-Send-At: "
     "'2026-02-30T09:00:00+03:00' is not a time with its offset from UTC (RFC 3339), like "
     "2026-12-08T09:00:00+09:00"),
])
async def test_a_bad_header_value_is_refused_at_the_end_of_data_naming_it(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, header: str, value: str, words: str,
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(PDF)
    mail[header] = value
    result = await smtp_send(bridge.smtp_port, mail)
    assert result.rcpts == [(250, "2.1.5 <02122222525@fax.local>: will be faxed to "
                                  "+902122222525")]
    assert result.data == (554, f"5.6.0 {words}")
    assert result.data[1].isascii()
    assert await query(bridge.store.path, "SELECT COUNT(*) FROM jobs") == [(0,)]
    assert faxmax.calls == 0


async def test_a_tag_beats_the_header_for_its_recipient_only(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(PDF, body=BODY)
    mail["X-Fax-Resolution"] = "normal"
    mail["X-Fax-Paper-Size"] = "letter"
    mail["X-Fax-Cover"] = "never"
    await smtp_send(bridge.smtp_port, mail,
                    rcpts=["02122222525+superfine+cover@fax.local", "03122222222@fax.local"])
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await wait_for_state(bridge, 2, JobState.DELIVERED)
    faxes = by_phone(faxmax)
    assert sent_as(faxes[TAGGED]) == ("superfine", "letter", True, 3)
    assert sent_as(faxes[PLAIN]) == ("normal", "letter", False, 2)


async def test_the_report_states_the_options_the_fax_went_with(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    bridge = await make_bridge()
    mail = fax_mail(PDF, body=BODY)
    mail["X-Fax-Paper-Size"] = "legal"
    await smtp_send(bridge.smtp_port, mail,
                    rcpts=["02122222525+superfine+nocover@fax.local", "03122222222@fax.local"])
    reports = await relay.wait_for(2)
    texts = {}
    for report in reports:
        msg = report.message
        number = msg["Subject"].split(" to ", 1)[1].split(":", 1)[0]
        plain = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        html = re.sub(r' style="[^"]*"', "", html)  # the cells' layout, not their words
        texts[number] = (plain.replace("\r\n", "\n"), html)
    tagged, _ = texts["(0212) 222 25 25"]
    assert "  Pages:       2\n" in tagged
    assert "  Resolution:  superfine\n" in tagged
    assert "  Paper size:  legal\n" in tagged
    assert "  Cover page:  not sent\n" in tagged
    assert "Scheduled" not in tagged
    plain, html = texts["(0312) 222 22 22"]
    assert "  Pages:       3\n" in plain
    assert "  Resolution:  fine\n" in plain
    assert "  Cover page:  sent (1 page(s))\n" in plain
    assert "<tr><td>Resolution</td><td>fine</td></tr>" in html
    assert "<tr><td>Cover page</td><td>sent (1 page(s))</td></tr>" in html

