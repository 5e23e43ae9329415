"""The sender's own words, for a fax's cover page: a mail's body without the signature, the
quoted reply or the forwarded history, and the visible text of an HTML body when the mail has
no plain-text one; and where a fax's cover page is kept.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

COVER_FILE = "cover.json"  # next to the fax's PDF: its cover page, as a JSON string


def cover_file(document_path: str | Path) -> Path:
    """Where the cover page of the fax at `document_path` is kept, when it has one (made by
    `workers.converter.make_cover`, sent by `providers.faxmax`)."""
    return Path(document_path).with_name(COVER_FILE)


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
