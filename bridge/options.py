"""Options per fax: the resolution, paper size and cover page a sender chooses for one fax, and
when it is sent, written as tags after `+` in the address (`02122222525+superfine@fax.local`)
or, by programs, as `X-Fax-*` headers.

Pure, like `bridge.numbers`: it reads what the sender wrote and refuses it in words (a
`Refusal` naming its entry in `bridge.replies`, with what the sender wrote quoted by
`numbers.quote`, so the reply stays one line of ASCII whatever the tag or header held). No
clock and no settings: the tags are read at RCPT (`bridge.ingress.smtp`), the headers in the
sandboxed child that inspects the mail (`bridge.mime.inspect`), since they are text from a
hostile mail; how far ahead a time may be is the SMTP handler's check, on the service's clock.

A tag applies to its recipient and wins over the headers, which apply to every recipient of the
mail; what neither says is the operator's (`faxmax.resolution`, `paper_size`, `cover_page`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Literal, cast

from bridge import replies
from bridge.config import CoverPage, PaperSize, Resolution
from bridge.errors import Refusal
from bridge.limits import DAY
from bridge.numbers import quote

Kind = Literal["resolution", "paper_size", "cover"]


@dataclass(frozen=True)
class Options:
    """What a sender chose for one fax; None: not chosen (the operator's setting applies).
    `cover` is `always` (tag `cover`), `never` (`nocover`) or `auto` (header only)."""

    resolution: Resolution | None = None
    paper_size: PaperSize | None = None
    cover: CoverPage | None = None

    def over(self, other: Options) -> Options:
        """These options where chosen, `other`'s elsewhere: a recipient's tags over the
        mail's headers."""
        return Options(resolution=self.resolution or other.resolution,
                       paper_size=self.paper_size or other.paper_size,
                       cover=self.cover or other.cover)


TAGS: Mapping[str, tuple[Kind, str]] = MappingProxyType({
    "normal": ("resolution", "normal"), "fine": ("resolution", "fine"),
    "superfine": ("resolution", "superfine"),
    "cover": ("cover", "always"), "nocover": ("cover", "never"),
    "a4": ("paper_size", "A4"), "letter": ("paper_size", "letter"),
    "legal": ("paper_size", "legal"),
})
"""Each tag, lower-cased, and what it chooses."""
_KIND_WORDS = {"resolution": "resolution", "paper_size": "paper size",
               "cover": "cover page choice"}
# What may follow a '+' inside a number as people write one ("0212+222 2525" is no tag):
# such a piece is left to the number's own rules, which refuse a '+' inside it in words.
_NUMBER_START = frozenset("0123456789-.()")


def split_tags(local: str) -> tuple[str, tuple[str, ...]]:
    """A local part's number and the tags after it: `02122222525+fine+nocover` is
    (`02122222525`, (`fine`, `nocover`)). A leading `+` is the number's own
    (`+902122222525+fine`)."""
    lead = "+" if local.startswith("+") else ""
    number, *tags = local[len(lead):].split("+")
    if any(tag[:1] in _NUMBER_START for tag in tags if tag):
        return local, ()
    return lead + number, tuple(tags)


def _options(chosen: Mapping[Kind, str]) -> Options:
    return Options(resolution=cast("Resolution | None", chosen.get("resolution")),
                   paper_size=cast("PaperSize | None", chosen.get("paper_size")),
                   cover=cast("CoverPage | None", chosen.get("cover")))


def parse_tags(tags: tuple[str, ...], *, domain: str) -> Options:
    """The options the tags choose, in any case; `Refusal` names an unknown tag, or two that
    choose different values of one kind (`+fine+superfine`). `domain` is the fax domain,
    for the example in the refusal."""
    chosen: dict[Kind, tuple[str, str]] = {}  # kind -> (the tag as written, its value)
    for tag in tags:
        found = TAGS.get(tag.lower())
        if found is None:
            raise Refusal(replies.UNKNOWN_OPTION, tag=quote(tag), domain=domain)
        kind, value = found
        earlier = chosen.setdefault(kind, (tag, value))
        if earlier[1] != value:
            raise Refusal(replies.CONTRADICTING_OPTIONS, first=quote(earlier[0]),
                          second=quote(tag), kind=_KIND_WORDS[kind])
    return _options({kind: value for kind, (_, value) in chosen.items()})


# --- the X-Fax-* headers ---------------------------------------------------------------------

_HEADER_VALUES: Mapping[tuple[str, Kind], Mapping[str, str]] = MappingProxyType({
    ("X-Fax-Resolution", "resolution"): {"normal": "normal", "fine": "fine",
                                         "superfine": "superfine"},
    ("X-Fax-Paper-Size", "paper_size"): {"a4": "A4", "letter": "letter", "legal": "legal"},
    ("X-Fax-Cover", "cover"): {"auto": "auto", "always": "always", "never": "never"},
})
SEND_AT = "X-Fax-Send-At"
# RFC 3339 section 5.6 (a space for the T, as its note allows): the offset is required, since a
# time without one means a different moment to the sender and to the gateway.
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class MailOptions:
    """What a mail's `X-Fax-*` headers chose, for every recipient of the mail."""

    options: Options = Options()
    send_at: float | None = None  # epoch seconds
    send_at_text: str = ""  # as written, quoted: named by a refusal after the inspection


def from_headers(header: Callable[[str], str]) -> MailOptions:
    """The options of a mail whose header `name` reads `header(name)` ("" when absent);
    `Refusal` names the first header with a value it does not know."""
    chosen: dict[Kind, str] = {}
    for (name, kind), allowed in _HEADER_VALUES.items():
        value = header(name)
        if not value:
            continue
        found = allowed.get(value.lower())
        if found is None:
            raise Refusal(replies.BAD_OPTION_HEADER, header=name, value=quote(value),
                          allowed=", ".join(allowed.values()))
        chosen[kind] = found
    text = header(SEND_AT)
    return MailOptions(options=_options(chosen), send_at=parse_send_at(text) if text else None,
                       send_at_text=quote(text) if text else "")


def parse_send_at(text: str) -> float:
    """An RFC 3339 time with its offset, as epoch seconds; `Refusal` if it is not one (no
    offset, a day that does not exist)."""
    if _RFC3339.fullmatch(text):
        try:
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise Refusal(replies.BAD_SEND_AT, value=quote(text))


def scheduled(mail: MailOptions, now: float, *, max_days: int) -> float | None:
    """When the mail's faxes are to be sent: None for at once (no time asked, or one already
    past); `Refusal` when it is more than `max_days` days after `now`."""
    if mail.send_at is None or mail.send_at <= now:
        return None
    if mail.send_at - now > max_days * DAY:
        raise Refusal(replies.SEND_AT_TOO_FAR, value=mail.send_at_text, days=max_days)
    return mail.send_at
