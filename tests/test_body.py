"""A mail with nothing attached is faxed as its own text (`documents.body = "auto"`), end to
end through a real LibreOffice: a real SMTP client, the service, the FaxMAX simulator. The
signature and the quoted reply are not faxed, in plain text as on the cover page and in HTML
as each mail client marks them (`bridge.body`)."""

from __future__ import annotations

import io
from email.message import EmailMessage

import pypdf
import pytest

from bridge import body, cover
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_gif, make_png
from tests.officedocs import JAPANESE, TURKISH, texts
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

pytestmark = pytest.mark.timeout(180)
OFFICE_ON = {"office": "auto"}
NOTHING_TO_FAX = (554, "5.6.0 there is nothing to fax: the mail has no attachment and no text "
                       "of its own (a signature or a quoted reply is not faxed); attach a "
                       "document, or write the text to fax in the mail")
ATTACHMENTS_ONLY = (554, "5.6.0 there is nothing to fax: this fax gateway faxes attachments "
                         "only, not the text of a mail; attach the document to fax (a PDF, for "
                         "example)")
# What no page may show: the signature and the quoted reply.
NOT_FAXED = ("SIGNATURE", "QUOTED", "wrote")


def mail(subject: str = "Teklif") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "02122222525@fax.local"
    msg["Subject"] = subject
    msg["Message-ID"] = "<body-1@example.com>"
    return msg


def text_mail(text: str, charset: str) -> EmailMessage:
    """A plain-text mail in `charset`, as a client in Istanbul or Tokyo writes it: the bytes of
    that charset, declared in the Content-Type."""
    msg = mail()
    msg.set_content(text.encode(charset), maintype="text", subtype="plain",
                    cte="7bit" if charset == "iso-2022-jp" else "base64")
    msg.set_param("charset", charset)
    return msg


def html_mail(markup: str) -> EmailMessage:
    msg = mail()
    msg.set_content(markup, subtype="html")
    return msg


def all_text(document: bytes) -> str:
    return " ".join(texts(document))


# --- which parts of an HTML body are the sender's own words ---------------------------------

GMAIL = (
    '<div dir="ltr"><div>NEW TEXT</div><div><br></div><span class="gmail_signature_prefix">-- '
    '</span><br><div dir="ltr" class="gmail_signature" data-smartmail="gmail_signature"><div '
    'dir="ltr">Alice SIGNATURE<br><img src="cid:logo@example.com"></div></div></div><br><div '
    'class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">On Mon, 7 Dec '
    '2026 at 09:00, Bob &lt;bob@example.com&gt; wrote:<br></div><blockquote class="gmail_quote" '
    'style="margin:0px 0px 0px 0.8ex"><div dir="ltr">QUOTED older text</div></blockquote></div>')
OUTLOOK = (
    '<html><head><style type="text/css" style="display:none;"> P {margin-top:0;} </style></head>'
    '<body dir="ltr"><div class="elementToProof">NEW TEXT</div><div id="Signature"><p>Alice '
    'SIGNATURE</p></div><div id="appendonsend"></div><hr style="display:inline-block;width:98%" '
    'tabindex="-1"><div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Bob<br>'
    '<b>Subject:</b> Teklif</font><div>&nbsp;</div></div><div>QUOTED older text</div></body>'
    '</html>')
OUTLOOK_NO_APPEND = (  # Outlook for Mac writes the rule and divRplyFwdMsg alone
    '<div>NEW TEXT</div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Bob</div><div>QUOTED older text</div>')
APPLE_MAIL = (
    '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>'
    '<body style="overflow-wrap: break-word;">NEW TEXT<br id="lineBreakAtBeginningOfMessage">'
    '<div><br><blockquote type="cite"><div>On 7 Dec 2026, at 09:00, Bob &lt;bob@example.com&gt; '
    'wrote:</div><br class="Apple-interchange-newline"><div><div>QUOTED older text</div></div>'
    '</blockquote></div><br></body></html>')
THUNDERBIRD = (
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>'
    '<body><p>NEW TEXT</p><div class="moz-cite-prefix">On 07.12.2026 09:00, Bob wrote:<br>'
    '</div><blockquote type="cite" cite="mid:x@example.com">QUOTED <blockquote type="cite">'
    'nested</blockquote> older text</blockquote><br><pre class="moz-signature" cols="72">-- \n'
    'Alice SIGNATURE</pre></body></html>')


@pytest.mark.parametrize("markup", [GMAIL, OUTLOOK, OUTLOOK_NO_APPEND, APPLE_MAIL, THUNDERBIRD],
                         ids=["gmail", "outlook", "outlook-mac", "apple-mail", "thunderbird"])
def test_html_keeps_the_senders_words_without_signature_or_quoted_reply(markup: str) -> None:
    own = body.own_html(markup)
    words = " ".join(cover.html_to_text(own.markup).split())
    assert words == "NEW TEXT" and own.words
    assert "<hr" not in own.markup  # Outlook's rule above the reply goes with it


def test_html_with_only_a_signature_or_a_quote_has_no_words() -> None:
    signature = ('<div><br></div>&nbsp;\u200b<span class="gmail_signature_prefix">-- </span>'
                 '<div class="gmail_signature">Alice<img src="cid:logo@example.com"></div>')
    assert not body.own_html(signature, pictures={"logo@example.com"}).words
    assert not body.own_html(APPLE_MAIL.replace("NEW TEXT", "")).words
    assert not body.own_html("<style>p { color: red }</style><title>Teklif</title>").words
    # A picture of the mail, shown in the sender's own part, is something to fax.
    assert body.own_html('<img src="cid:Scan@example.com">', pictures={"scan@example.com"}).words


def test_before_250_only_the_start_of_a_body_is_read_and_what_it_leaves_open_is_taken() -> None:
    """`has_words` reads the first `SCAN_LIMIT` bytes: no words there, and more beyond, is
    accepted (the conversion reads it all); Outlook's old mail, once begun, settles it."""
    blank = "<div>&nbsp;</div>" * 1000
    assert not body.has_words("html", blank, cut=False)
    assert body.has_words("html", blank, cut=True)
    assert not body.has_words("html", OUTLOOK.replace("NEW TEXT", "") + blank, cut=True)
    assert body.has_words("html", blank + "<p>late words</p>", cut=False)
    assert not body.has_words("text", "\n\n-- \nAlice\n", cut=False)
    assert body.has_words("text", "> quoted\n" * 100, cut=True)


# --- through the service ----------------------------------------------------------------------

BODY = "{words}\nLütfen geri arayın.\n\n> QUOTED older text\n\nthanks\n-- \nAlice SIGNATURE\n"


@pytest.mark.parametrize(("charset", "words"), [
    ("windows-1254", TURKISH), ("iso-8859-9", TURKISH),
    ("iso-2022-jp", JAPANESE), ("shift_jis", JAPANESE),
])
async def test_a_text_only_mail_is_faxed_as_its_text_without_signature_or_quote(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, charset: str, words: str,
) -> None:
    """And with no cover page, though `faxmax.cover_page` is "auto" and the mail has words of
    its own: the text is the fax."""
    bridge = await make_bridge(documents=OFFICE_ON)
    text = BODY.format(words=words)
    if charset in ("iso-2022-jp", "shift_jis"):
        text = text.replace("Lütfen geri arayın.", "よろしくお願いします。")
    result = await smtp_send(bridge.smtp_port, text_mail(text, charset))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    [request] = faxmax.requests
    found = all_text(request.document)
    assert words in found and "thanks" in found
    assert not any(gone in found for gone in NOT_FAXED), found
    assert "cover_html" not in request.data["params"]


async def test_an_html_only_mail_is_faxed_as_its_page_without_signature_or_quote(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    """Even with `cover_page = "always"`, no cover page: the mail's page is the fax."""
    bridge = await make_bridge(documents=OFFICE_ON, faxmax={"cover_page": "always"})
    markup = GMAIL.replace("NEW TEXT", f"Merhaba, {TURKISH}</div><div>{JAPANESE}")
    result = await smtp_send(bridge.smtp_port, html_mail(markup))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    [request] = faxmax.requests
    found = all_text(request.document)
    assert TURKISH in found and JAPANESE in found
    assert not any(gone in found for gone in NOT_FAXED), found
    assert "cover_html" not in request.data["params"]


@pytest.mark.parametrize("picture", [make_png(300, 120), make_gif(300, 120)], ids=["png", "gif"])
async def test_the_pictures_an_html_mail_shows_are_on_its_fax_and_its_signatures_are_not(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, picture: bytes,
) -> None:
    """Outlook and Gmail send a picture pasted into the text as a part of multipart/related
    that the HTML shows by `cid:`; the plain-text alternative cannot show it, so the HTML is
    faxed. The signature's logo goes with the signature, and the report says so."""
    subtype = "png" if picture.startswith(b"\x89PNG") else "gif"
    msg = mail()
    msg.set_content(f"{TURKISH}\n[image: scan]\n")
    msg.add_alternative(GMAIL.replace("NEW TEXT", f'{TURKISH}<br><img src="cid:scan@example.com"'
                                                  ' width="300" height="120">'), subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(picture, maintype="image", subtype=subtype,
                          cid="<scan@example.com>", filename=f"scan.{subtype}",
                          disposition="inline")
    html_part.add_related(make_png(60, 20), maintype="image", subtype="png",
                          cid="<logo@example.com>", filename="logo.png", disposition="inline")
    bridge = await make_bridge(documents=OFFICE_ON)
    result = await smtp_send(bridge.smtp_port, msg)
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    [page] = pypdf.PdfReader(io.BytesIO(faxmax.requests[0].document)).pages
    assert TURKISH in " ".join(page.extract_text().split())
    assert len(page.images) == 1  # the scan; not the logo
    [report] = await relay.wait_for(1)
    text = report.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "logo.png" in text and f"scan.{subtype}" not in text


async def test_what_an_html_body_links_to_is_never_fetched(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, listener: tuple[int, list[bytes]],
) -> None:
    port, seen = listener
    url = f"http://127.0.0.1:{port}/x.png"
    bridge = await make_bridge(documents=OFFICE_ON)
    markup = (f'<html><head><link rel="stylesheet" href="{url}.css"><style>body {{ background: '
              f'url({url}?style) }}</style></head><body><p>{TURKISH}</p><img src="{url}">'
              f'<div style="background-image: url({url}?inline)">x</div>'
              f'<img srcset="{url}?set 2x"></body></html>')
    result = await smtp_send(bridge.smtp_port, html_mail(markup))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED, timeout=60)
    assert TURKISH in all_text(faxmax.requests[0].document)
    assert seen == []


async def test_a_mail_with_no_words_of_its_own_is_refused_saying_what_to_do(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator,
) -> None:
    bridge = await make_bridge(documents=OFFICE_ON)
    signature_only = mail()
    signature_only.set_content("\n\n-- \nAlice Example\nACME Ltd.\n")
    quote_only = html_mail(OUTLOOK.replace("NEW TEXT", "&nbsp;"))
    gmail_signature_only = html_mail(GMAIL.replace("NEW TEXT", "<br>"))
    empty = mail()
    empty.set_content("\n \n")
    for msg in (signature_only, quote_only, gmail_signature_only, empty):
        result = await smtp_send(bridge.smtp_port, msg)
        assert result.data == NOTHING_TO_FAX, msg.get_body().get_content()  # type: ignore
    assert await bridge.store.jobs.counts() == {}
    assert faxmax.requests == []


@pytest.mark.parametrize("documents", [{"office": "auto", "body": "refuse"}, {"office": "off"}],
                         ids=["body-refuse", "no-libreoffice"])
async def test_the_text_of_a_mail_is_not_faxed_when_refused_or_without_libreoffice(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, documents: dict[str, str],
) -> None:
    bridge = await make_bridge(documents=documents)
    result = await smtp_send(bridge.smtp_port, text_mail(BODY.format(words=TURKISH), "utf-8"))
    assert result.data == ATTACHMENTS_ONLY
    assert await bridge.store.jobs.counts() == {}
    assert faxmax.requests == []
