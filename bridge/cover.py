"""The sender's own words, for a fax's cover page: a mail's body without the signature, the
quoted reply or the forwarded history, and the visible text of an HTML body when the mail has
no plain-text one; how many pages they fill, within `MAX_COVER_PAGES`; and where a fax's
cover page is kept.

The cover is a page of the fax like any other: it counts against `documents.max_pages` and
the daily page caps. FaxMAX lays it out itself, so its pages are estimated by a fixed rule
(`fit`): a cover page holds `LINES_PER_PAGE` lines of `CHARS_PER_LINE` characters (the
template's 14 pt type on A4); a line of text takes one line per `CHARS_PER_LINE` characters
or part of them (an empty line, one); the heading takes `HEADING_LINES` lines plus the lines of
the From: and Subject: it shows. Text beyond `MAX_COVER_PAGES` pages is cut; the cover
template says so in its last lines (in the sender's language, from `Fitted.left`), and the
sender's report lists what was left out.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

COVER_FILE = "cover.json"  # next to the fax's PDF: its cover page, as a JSON string


def cover_file(document_path: str | Path) -> Path:
    """Where the cover page of the fax at `document_path` is kept, when it has one (made by
    `workers.converter.make_cover`, sent by `providers.faxmax`)."""
    return Path(document_path).with_name(COVER_FILE)


LINES_PER_PAGE = 40
CHARS_PER_LINE = 70
HEADING_LINES = 4  # the "Fax" title (two lines' height), the rule below the table, a margin
NOTE_LINES = 3  # a blank line and the template's note that the cover was shortened
MAX_COVER_PAGES = 3  # a letter's worth; more is the rest of a thread, or an attempt on the caps


class _TextOf(HTMLParser):
    """Visible text of an HTML body, for a cover page when the mail has no plain-text part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    return html.unescape("".join(parser.out))


_REPLY_MARKERS = re.compile(
    r"^(-----\s*Original Message\s*-----|_{20,}|On .{0,200}wrote:|.{0,200} yazdı:|"
    r"From: .+|Gönderen: .+|差出人: .+|.{0,100}のメッセージ:|.{0,100}wrote:)\s*$",
    re.IGNORECASE,
)


def cover_text(body: str) -> str:
    """The sender's own words: the body without signature, quoted reply or forwarded history."""
    kept: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        stripped = line.rstrip()
        if stripped in ("-- ", "--") or _REPLY_MARKERS.match(stripped.strip()):
            break
        if stripped.lstrip().startswith(">"):
            continue
        kept.append(stripped)
    return "\n".join(kept).strip()


@dataclass(frozen=True)
class Fitted:
    """The cover's text as it is faxed, the pages it fills, and what was cut (a line for the
    report's list of what was left out, "" when nothing was; `left` characters of it)."""

    text: str
    pages: int
    cut: str
    left: int = 0


def _lines(text: str) -> int:
    return sum(max(1, math.ceil(len(line) / CHARS_PER_LINE)) for line in text.split("\n"))


def fit(text: str, *heading: str, max_pages: int = MAX_COVER_PAGES) -> Fitted:
    """`text` on a cover whose heading shows `heading` (the From: and Subject: values), cut to
    `max_pages` pages (see the module's docstring for the rule)."""
    used = HEADING_LINES + sum(_lines(value) for value in heading if value)
    if used + _lines(text) <= max_pages * LINES_PER_PAGE:
        return Fitted(text, max(1, math.ceil((used + _lines(text)) / LINES_PER_PAGE)), "")
    kept: list[str] = []
    room = max_pages * LINES_PER_PAGE - used - NOTE_LINES
    for line in text.split("\n"):
        need = max(1, math.ceil(len(line) / CHARS_PER_LINE))
        if need > room:
            if room > 0:
                kept.append(line[:room * CHARS_PER_LINE])
            break
        kept.append(line)
        room -= need
    shown = "\n".join(kept)
    left = len(text) - len(shown)
    return Fitted(shown, max_pages,
                  f"the end of the mail's text ({left:,} characters): the cover page holds at "
                  f"most {max_pages} pages", left)
