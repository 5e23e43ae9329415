"""The mail's own text as the fax, when nothing is attached to fax (`documents.body = "auto"`).

A short note ("please call back", an order confirmation) is faxed as what its sender wrote:
the HTML part when there is one (it keeps the layout and the pictures pasted into the text),
else the plain text. What was not written for the recipient is left out, as on the cover page
(`bridge.cover`): the signature and the quoted reply. In plain text `cover.cover_text` finds
them by their lines; in HTML, by the containers mail clients put them in (`own_html`, with the
standard library's parser: the page is parsed, never matched with patterns):
- a quoted reply: `<blockquote type="cite">` (Apple Mail, Thunderbird), Gmail's
  `gmail_quote` (and the older `gmail_extra` around it), Thunderbird's `moz-cite-prefix`
  ("On ... wrote:"), Yahoo's `yahoo_quoted`;
- a signature: Gmail's `gmail_signature` and the "-- " before it, Thunderbird's
  `moz-signature`, Outlook on the web's `<div id="Signature">`;
- Outlook quotes nothing: the old mail follows the new one, from `<div id="appendonsend">` or
  `<div id="divRplyFwdMsg">` on, and that is where the page ends (with the rule above it).

The text becomes one more document for LibreOffice (`write_input`), named "the text of the mail"
in refusals; HTML is made safe by `bridge.office.inputs.clean_html` (nothing that runs, nothing
remote), and the mail's pictures it shows by `cid:` are put in the page itself, as `data:`
addresses: LibreOffice's profile blocks every picture a page links to, a file beside it too.
Before `250`, `has_words` tells cheaply whether anything is left to fax.
"""

from __future__ import annotations

import base64
import html
import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from bridge import cover, replies
from bridge.errors import Refusal
from bridge.files import write_atomic
from bridge.filetypes import Kind, sniff
from bridge.office.inputs import Input, clean_html

NAME = "the text of the mail"
How = Literal["html", "text"]
SCAN_LIMIT = 256 * 1024  # bytes of a body looked through for words before `250`
_CHUNK = 8192  # characters fed to the parser at a time before `250`, to stop at the first word

QUOTE_CLASSES = frozenset({"gmail_quote", "gmail_extra", "gmail_signature",
                           "gmail_signature_prefix", "moz-cite-prefix", "moz-signature",
                           "yahoo_quoted"})
QUOTE_IDS = frozenset({"signature"})
END_IDS = frozenset({"appendonsend", "divrplyfwdmsg"})  # Outlook: the old mail follows
HIDDEN = frozenset({"script", "style", "title"})  # their text is never on the page
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "source", "track", "wbr"})
GIF = (b"GIF87a", b"GIF89a")
PICTURE_TYPES = {Kind.PNG: "image/png", Kind.JPEG: "image/jpeg"}
_CID = re.compile(r"cid:([^\"'\s>)]+)", re.IGNORECASE)


class TextPart(Protocol):
    """A text part of the mail (`bridge.mime.Part`), by its type."""

    @property
    def ctype(self) -> str: ...


P = TypeVar("P", bound=TextPart)
PREFERRED: tuple[tuple[How, str], ...] = (("html", "text/html"), ("text", "text/plain"))


def faxed_part(bodies: Sequence[P]) -> tuple[How, P] | None:
    """Which of a mail's text parts is faxed: the HTML one (it has the layout and the
    pictures), else the plain text."""
    for how, ctype in PREFERRED:
        for part in bodies:
            if part.ctype == ctype:
                return how, part
    return None


def shown_cids(markup: str) -> set[str]:
    """The content ids (lowercase) an HTML body refers to by `cid:`: its inline pictures."""
    return {found.lower() for found in _CID.findall(markup)}


def not_shown(pictures: Iterable[str], faxed: bool) -> list[str]:
    """What the report lists of the mail's inline pictures (by name): nothing when the text
    that shows them is `faxed` (the pictures its signature shows are listed after `250`,
    `write_input`); each of them when only a cover page carries the mail's words."""
    return [] if faxed else [f"{name} (an image shown inside the message text)"
                             for name in pictures]


def picture_type(head: bytes) -> str | None:
    """The MIME type of a picture LibreOffice can show in a page, by its first bytes: PNG,
    JPEG and GIF (mail clients still write signature logos and pasted pictures as GIF)."""
    if head.startswith(GIF):
        return "image/gif"
    kind = sniff(head)
    return PICTURE_TYPES.get(kind) if kind is not None else None


def _visible(text: str) -> bool:
    """Whether `text` shows something: not only spaces (`&nbsp;` too) and invisible format
    characters (the zero-width spaces Outlook leaves)."""
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)


class _Own(HTMLParser):
    """The markup of an HTML body without its signature and quoted reply (see the module's
    docstring); `words` once anything visible is kept, `cids` the mail's pictures it shows."""

    def __init__(self, pictures: Collection[str], keep: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.pictures = pictures
        self.keep = keep  # keep the markup (after `250`), or only look for words (before)
        self.out: list[str] = []
        self.words = False
        self.cids: set[str] = set()
        self.ended = False
        self._dropping: str | None = None  # the tag of the container being left out
        self._depth = 0  # of that tag, nested inside the container
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.ended:
            return
        if self._dropping is not None:
            if tag == self._dropping:
                self._depth += 1
            return
        found = {name: (value or "").strip().lower() for name, value in attrs}
        if found.get("id") in END_IDS:
            self.ended = True
            while self.out and not self.out[-1].strip():  # the rule Outlook puts above it
                self.out.pop()
            if self.out and self.out[-1].lower().startswith("<hr"):
                self.out.pop()
            return
        quoted = ((tag == "blockquote" and found.get("type") == "cite")
                  or not QUOTE_CLASSES.isdisjoint(found.get("class", "").split())
                  or found.get("id") in QUOTE_IDS)
        if quoted:
            if tag not in VOID:
                self._dropping, self._depth = tag, 1
            return
        if tag in HIDDEN:
            self._hidden += 1
        src = found.get("src", "")
        cid = src[4:] if tag == "img" and src.startswith("cid:") else ""
        if cid and cid in self.pictures:
            self.cids.add(cid)
            self.words = True
        if self.keep:
            self.out.append(self.get_starttag_text() or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)  # `<br/>` has no end tag to write

    def handle_endtag(self, tag: str) -> None:
        if self.ended:
            return
        if self._dropping is not None:
            if tag == self._dropping:
                self._depth -= 1
                if not self._depth:
                    self._dropping = None
            return
        if tag in HIDDEN and self._hidden:
            self._hidden -= 1
        if self.keep:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.ended or self._dropping is not None:
            return
        if not self._hidden and not self.words and _visible(data):
            self.words = True
        if self.keep:
            self.out.append(html.escape(data, quote=False))


@dataclass(frozen=True)
class Own:
    """What `own_html` kept: the markup, whether it shows anything, and which pictures."""

    markup: str
    words: bool
    cids: frozenset[str]


def own_html(markup: str, pictures: Collection[str] = ()) -> Own:
    """`markup` without the signature and the quoted reply; `pictures`: the content ids
    (lowercase) of the mail's pictures, which count as something to fax where it shows them."""
    parser = _Own(pictures, keep=True)
    parser.feed(markup)
    parser.close()
    return Own("".join(parser.out), parser.words, frozenset(parser.cids))


def has_words(how: How, start: str, cut: bool, pictures: Collection[str] = ()) -> bool:
    """Whether a body shows anything once signature and quote are left out, from its `start`
    (its first `SCAN_LIMIT` bytes; `cut`: there is more). What the start does not settle is
    taken as words: the conversion after `250` reads all of it, and refuses it then."""
    if how == "text":
        return _visible(cover.cover_text(start)) or cut
    parser = _Own(pictures, keep=False)
    for offset in range(0, len(start), _CHUNK):
        parser.feed(start[offset:offset + _CHUNK])
        if parser.words or parser.ended:
            return parser.words
    if cut:
        return True
    parser.close()  # the last words, held back in case they continued
    return parser.words


def check(how: How, start: str, cut: bool, pictures: Collection[str]) -> None:
    """Before `250`: refuse a mail whose text, the only thing to fax, shows nothing once its
    signature and quoted reply are left out (see `has_words`)."""
    if not has_words(how, start, cut, pictures):
        raise Refusal(replies.NOTHING_TO_FAX)


@dataclass(frozen=True)
class Picture:
    """An inline picture of the mail: its content id (lowercase), file name and bytes."""

    cid: str
    name: str
    data: bytes


@dataclass(frozen=True)
class Body:
    """The text of a mail that is to be faxed: as written, decoded, with its pictures."""

    how: How
    text: str
    pictures: tuple[Picture, ...] = ()


def write_input(found: Body, work: Path, index: int) -> tuple[Input, tuple[str, ...]]:
    """The body as LibreOffice's input in `work`, and what the report lists as not faxed (the
    pictures of the signature and the quoted reply). Refused when nothing is left to fax."""
    if found.how == "text":
        text = cover.cover_text(found.text)
        if not _visible(text):
            raise Refusal(replies.NOTHING_TO_FAX)
        source = work / f"part-{index}.txt"
        write_atomic(source, text.encode())
        return Input(NAME, str(source), str(work / f"part-{index}.pdf"), "text"), ()
    own = own_html(found.text, {p.cid for p in found.pictures})
    if not own.words:
        raise Refusal(replies.NOTHING_TO_FAX)
    shown: dict[str, str] = {}
    for picture in found.pictures:
        kind = picture_type(picture.data[:16])
        if picture.cid in own.cids and picture.cid not in shown and kind is not None:
            shown[picture.cid] = f"data:{kind};base64,{base64.b64encode(picture.data).decode()}"
    source = work / f"part-{index}.html"
    write_atomic(source, clean_html(own.markup, shown).encode())
    left_out = tuple(f"{p.name} (an image in the signature or the quoted reply)"
                     if p.cid not in own.cids else f"{p.name} (an image a page cannot show)"
                     for p in found.pictures if p.cid not in shown)
    return Input(NAME, str(source), str(work / f"part-{index}.pdf"), "html"), left_out
