"""Recipient local parts -> fax numbers, and the destination policy that guards against toll fraud.

A mail to ``NUMBER@fax.local`` makes us dial NUMBER at our expense, so this module is where a
stolen password or an open relay would turn into an international revenue-share bill. Everything
here is therefore strict and pure: a local part is accepted only when it is unmistakably a phone
number written with ASCII digits, it is normalised to FaxMAX's form (country code and national
number, digits only, no ``+``: ``902122222525``), and the policy then decides whether the gateway
may dial it. A refusal is a ``NumberError`` naming its entry in the reply catalogue
(``bridge.replies``), so the SMTP handler can refuse at RCPT without interpreting anything.

What a sender typed is shown quoted and escaped (``quote``), so the words are plain ASCII on one
line however hostile the local part: a CR or LF would end the reply line early.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from bridge import replies
from bridge.errors import NumberError

__all__ = [
    "BUILTIN_DENY",
    "MAX_DIGITS",
    "MIN_DIGITS",
    "NumberError",
    "NumberPolicy",
    "check_policy",
    "parse_local_part",
    "to_international",
]

# E.164 caps an international number at 15 digits. Below 7 digits nothing is a fax line anywhere we
# send to; what is that short is an emergency or service code (112, 110, 119, 118xx), which must
# never be dialled by a robot, so the length rule is also our general short-code guard.
MIN_DIGITS = 7
MAX_DIGITS = 15

_ASCII_DIGITS = frozenset("0123456789")
# Written between digit groups by people ("0212-222-2525", "0212.222.2525", "(0212)2222525").
_SEPARATORS = frozenset("-.()")
# Characters that turn a local part into a route through, or out of, this host: "%" hacks
# (a%b@gw), bang paths (b!a), a second "@", and the ":" and "," of RFC 5321 source routes.
_ROUTING = frozenset("@%!:,")
# RFC 5322 specials that cannot appear in an unquoted local part at all.
_SPECIALS = frozenset('"\\;<>[]')
_ESCAPES = {"\\": "\\\\", "'": "\\'", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_QUOTE_LIMIT = 40

# Example numbers shown to senders, in the national and the international way of writing them.
_EXAMPLES = {
    "90": ("02122222525", "+902122222525"),
    "81": ("0368680000", "+81368680000"),
}
_COUNTRY_NAMES = {
    "1": "the North American Numbering Plan area",
    "33": "France",
    "44": "the United Kingdom",
    "49": "Germany",
    "81": "Japan",
    "82": "South Korea",
    "86": "China",
    "90": "Turkey",
}


# --------------------------------------------------------------------------------------------
# Parsing a recipient local part


def parse_local_part(local: str, *, default_country_code: str) -> str:
    """Turn the local part of ``NUMBER@fax.local`` into FaxMAX's form, or refuse it in words.

    Accepted (unquoted) forms, for ``default_country_code="90"``: ``+902122222525``,
    ``00902122222525``, ``02122222525`` (national: the single leading 0 is replaced by the
    country code), ``0212-222-2525``, ``0212.222.2525``, ``(0212)2222525`` and the bare
    ``902122222525`` that FaxMAX itself uses. The result has 7 to 15 ASCII digits and never starts
    with 0, so feeding it back in returns it unchanged: it can be stored, compared and re-checked
    without drifting.

    Only ASCII 0-9 count as digits. ``str.isdigit()`` is true for full-width, Arabic-Indic and
    many other digits, which a phone network cannot dial and which would let a number slip past
    prefix checks written in ASCII, so they are refused with a reason instead of being converted.

    Raises ``NumberError``: 550 5.1.3 for syntax (empty, quoted, routing characters, spaces or
    control characters, non-ASCII digits, a misplaced ``+``, unbalanced parentheses, a 0 right
    after ``+`` or ``00``), 550 5.1.1 for what is not a fax number (letters and other symbols, too
    short, too long). ``ValueError`` (not ``NumberError``) for a bad ``default_country_code``,
    which is the operator's mistake, not the sender's.
    """
    country = _check_country_code(default_country_code, "default_country_code")
    example = _example(country)

    def refused(entry: replies.Reply, **slots: object) -> NumberError:
        return NumberError(entry, local=quote(local), example=example, **slots)

    if not local:
        raise refused(replies.EMPTY_NUMBER)
    if local.startswith('"'):
        raise refused(replies.QUOTED_NUMBER)
    if any(_is_space_or_control(ch) for ch in local):
        raise refused(replies.SPACE_IN_NUMBER)
    routing = next((ch for ch in local if ch in _ROUTING), None)
    if routing is not None:
        raise refused(replies.ROUTING_IN_NUMBER, char=routing)
    special = next((ch for ch in local if ch in _SPECIALS), None)
    if special is not None:
        raise refused(replies.SPECIAL_IN_NUMBER, char=quote(special))
    foreign_digit = next((ch for ch in local if _is_non_ascii_digit(ch)), None)
    if foreign_digit is not None:
        raise refused(replies.FOREIGN_DIGIT, char=_describe(foreign_digit))
    if any(ch not in _ASCII_DIGITS and ch not in _SEPARATORS and ch != "+" for ch in local):
        raise refused(replies.NOT_A_NUMBER)
    if "+" in local[1:]:
        raise refused(replies.PLUS_INSIDE)
    if not _parentheses_balanced(local):
        raise refused(replies.UNBALANCED)

    digits = "".join(ch for ch in local if ch in _ASCII_DIGITS)
    if not digits:
        raise refused(replies.NOT_A_NUMBER)

    if local.startswith("+"):
        if digits.startswith("0"):
            raise refused(replies.ZERO_AFTER_PLUS)
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
        if number.startswith("0"):
            raise refused(replies.ZERO_AFTER_00)
    elif digits.startswith("0"):
        number = country + digits[1:]
    else:
        number = digits

    if len(number) < MIN_DIGITS:
        raise refused(replies.TOO_SHORT)
    if len(number) > MAX_DIGITS:
        raise refused(replies.TOO_LONG, max_digits=MAX_DIGITS)
    return number


def _is_space_or_control(ch: str) -> bool:
    # Z*: every kind of space and line/paragraph separator. C*: controls (CR, LF, NUL, DEL, C1),
    # format characters (zero-width joiners, bidi overrides, BOM), surrogates, private use and
    # unassigned code points: nothing a person meant as part of a fax number.
    return unicodedata.category(ch)[0] in "ZC"


def _is_non_ascii_digit(ch: str) -> bool:
    # isnumeric() is the widest of the three: Nd (full-width, Arabic-Indic, Devanagari ...),
    # Nl and No (superscripts, circled digits, CJK numerals such as U+4E09).
    return ch not in _ASCII_DIGITS and (ch.isdecimal() or ch.isdigit() or ch.isnumeric())


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    code = f"U+{ord(ch):04X}"
    return f"{code} {name}" if name else code


def _parentheses_balanced(text: str) -> bool:
    """One level of parentheses around an area code; no nesting, no stray ``)`` or ``(``."""
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > 1:
                return False
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """Show untrusted text to a person in a reply line: quoted, ASCII-only, one line, bounded.

    Like ``ascii(text)``, but always in single quotes and cut at ``limit`` characters of output,
    so neither a CR/LF (reply injection) nor a kilobyte of junk can reach the wire.
    """
    pieces: list[str] = []
    used = 0
    for ch in text:
        piece = _escape_char(ch)
        if used + len(piece) > limit:
            pieces.append("...")
            break
        pieces.append(piece)
        used += len(piece)
    return "'" + "".join(pieces) + "'"


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if " " <= ch <= "~":
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _example(country: str) -> str:
    national, international = _EXAMPLES.get(country, ("", ""))
    if national:
        return f"like {national} or {international}"
    return f"like +{country} and the number, or the national number with its leading 0"


def _check_country_code(value: str, what: str) -> str:
    """A country calling code is 1 to 3 ASCII digits and never starts with 0 (ITU-T E.164)."""
    if not (1 <= len(value) <= 3 and all(ch in _ASCII_DIGITS for ch in value)) or value[0] == "0":
        raise ValueError(
            f"{what}: {quote(value)} is not a country calling code: "
            'use 1 to 3 digits not starting with 0, like "90"'
        )
    return value


# --------------------------------------------------------------------------------------------
# Built-in deny lists
#
# Prefixes are in international form (country code first, as parse_local_part returns numbers).
# Each entry names the class a sender is told about and the form people in that country write
# it in. Broad entries ("901", "810") are used only where libphonenumber's patterns for the
# country's geographic and mobile numbers cannot collide with them.
#
# Turkey (+90); national significant numbers are 10 digits, except 444 xxxx. Sources:
# libphonenumber's TR metadata (premium rate (?:8[89]8|900)\d{7}; UAN 444\d{4}; general pattern
# with no national number starting with 0 or 1) and BTK's national numbering plan (1XY short
# codes, 10XY carrier-select codes). Not listed on purpose: 0800 and 0811 (free to the caller),
# 0850 (non-geographic numbers many businesses fax from), 0822 (old dial-up data; not confirmed).
_TURKEY = (
    ("90900", "premium-rate", "0900"),  # katma degerli servisler: premium-rate services
    ("90898", "premium-rate", "0898"),  # premium rate, adult-content services
    ("90888", "premium-rate", "0888"),  # premium rate in libphonenumber; formerly personal/UPT
    # 444 xxxx: 7-digit national call-centre numbers, dialled without 0 or area code inside
    # Turkey; "0444 1234" and "+90 444 1234" both normalise to 904441234.
    ("90444", "national short", "444 xxxx"),
    # "+90 1...": 1XY short/emergency codes (112, 155, 118xy) and 10XY carrier selection.
    ("901", "short-code or carrier-select", "1XY or 10XY after +90"),
    ("900", "malformed", "a 0 after +90"),  # "+90 0212...": the national 0 kept after +90
)
# Japan (+81). Sources: libphonenumber's JP metadata (premium rate 990, UAN 570, pager 20; no
# geographic or mobile number starts with 0; the only national numbers that do are carrier
# services such as 0037/0077/0088 that cannot be dialled from abroad) and docs/RELIABILITY.md A15
# (010 international prefix, 00XY carrier selection, 0180 televoting). The 1XY specials
# (110 police, 118 coast guard, 119 fire/ambulance, 117 time, 104 directory, 171 disaster
# message) are not listed as prefixes: "+81 11..." is also Sapporo (011) and "+81 17..." Aomori
# (017), so they are refused by length instead (110, 0110 and +81110 have fewer than 7 digits).
_JAPAN = (
    ("8110", "international-prefix", "010"),  # "010 44 ..." dialled as a national number
    ("81010", "international-prefix", "010 after +81"),
    # "00XY" carrier selection (0033, 0041, 0061, 001, ...) written after +81. Written alone,
    # "0033..." is read as the international prefix 00 and lands outside Japan (refused there).
    ("8100", "carrier-select", "00XY after +81"),
    ("810", "malformed", "a 0 after +81"),  # "+81 03-...": the national 0 kept after +81
    ("81570", "Navi Dial", "0570"),  # shared-cost, caller pays by distance and time
    ("81180", "televoting", "0180"),
    ("81990", "premium-rate", "0990 Dial Q2"),
    ("8120", "pager or M2M", "020"),
)

_BUILTIN = {"90": _TURKEY, "81": _JAPAN}

#: Country code -> ((international prefix, human class name), ...): what no default policy dials.
BUILTIN_DENY: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType(
    {cc: tuple((prefix, cls) for prefix, cls, _ in rows) for cc, rows in _BUILTIN.items()}
)
_NATIONAL_FORM = {prefix: national for rows in _BUILTIN.values() for prefix, _, national in rows}


# --------------------------------------------------------------------------------------------
# Destination policy


@dataclass(frozen=True)
class NumberPolicy:
    """Which normalised numbers this gateway may dial.

    ``home_country`` is the calling code whose numbers are allowed by default; ``allow`` widens
    and ``deny`` narrows, both as prefixes of normalised numbers (``"44"``, ``"90212"``). Built
    with ``from_config`` from operator input; constructing it directly demands normalised
    prefixes and refuses anything else, so a ``"+44"`` typed in code cannot silently never match.
    """

    home_country: str
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_country_code(self.home_country, "numbers.home_country")
        for key, entries in (("numbers.allow", self.allow), ("numbers.deny", self.deny)):
            for entry in entries:
                if not _is_prefix(entry):
                    raise ValueError(
                        f"{key}: {quote(entry)} is not a normalised prefix: "
                        "use NumberPolicy.from_config for operator input"
                    )

    @classmethod
    def from_config(
        cls, *, home_country: str, allow: Sequence[str], deny: Sequence[str]
    ) -> NumberPolicy:
        """Normalise operator prefixes (``"+44"``, ``"+90 212"``, ``"0090-212"`` -> digits).

        Raises ``ValueError`` naming the list and the entry when an entry is not a prefix in
        international form: a typo in a toll-fraud list must stop the service at start-up, not
        quietly match nothing. A national form such as ``"0212"`` is refused too, because
        normalised numbers never start with 0 and it would never match.
        """
        home = _check_country_code(_strip_prefix(home_country), "numbers.default_country_code")
        return cls(
            home_country=home,
            allow=_normalise_prefixes(allow, "numbers.allow"),
            deny=_normalise_prefixes(deny, "numbers.deny"),
        )


def check_policy(number: str, policy: NumberPolicy) -> None:
    """Refuse ``number`` (as returned by ``parse_local_part``) unless the policy lets us dial it.

    Order of decision, first match wins:

    1. an operator ``deny`` prefix matches: refused (deny always beats allow);
    2. an operator ``allow`` prefix matches: accepted, unless a built-in deny prefix that is more
       specific than the allow prefix also matches. Allowing ``"81"`` (all of Japan) therefore
       does not unblock Japan's premium-rate ``81990``; allowing ``"81990"`` itself does;
    3. a built-in deny prefix of any country matches: refused, naming the class;
    4. the number is in ``home_country``: accepted;
    5. anything else is abroad: refused.

    Raises ``NumberError`` with ``550 5.7.1``. Raises ``ValueError`` when ``number`` is not a
    normalised number: checking raw input would let ``"+90900..."`` dodge every prefix.
    """
    if not _is_prefix(number):
        raise ValueError(f"check_policy needs a normalised number, got {quote(number)}")
    shown = quote("+" + number)

    if _longest_match(number, policy.deny):
        raise NumberError(replies.DENY_LISTED, number=shown)

    allowed_by = _longest_match(number, policy.allow)
    builtin = _builtin_match(number)
    if allowed_by and (builtin is None or len(allowed_by) >= len(builtin[0])):
        return
    if builtin is not None:
        prefix, cls = builtin
        article = "an" if cls[0].lower() in "aeiou" else "a"
        raise NumberError(replies.SPECIAL_NUMBER, number=shown, article=article, kind=cls,
                          national=_NATIONAL_FORM[prefix])
    if number.startswith(policy.home_country):
        return
    country = _COUNTRY_NAMES.get(policy.home_country, "this gateway's home country")
    raise NumberError(replies.ABROAD, number=shown, country=country,
                      country_code=policy.home_country)


def _is_prefix(text: str) -> bool:
    return bool(text) and text[0] != "0" and all(ch in _ASCII_DIGITS for ch in text)


def _longest_match(number: str, prefixes: Sequence[str]) -> str:
    return max((p for p in prefixes if number.startswith(p)), key=len, default="")


def _builtin_match(number: str) -> tuple[str, str] | None:
    """The most specific built-in deny entry of any country that matches ``number``."""
    best: tuple[str, str] | None = None
    for entries in BUILTIN_DENY.values():
        for prefix, cls in entries:
            if number.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, cls)
    return best


def _strip_prefix(entry: str) -> str:
    text = "".join(ch for ch in entry if not (ch.isspace() or ch in "-.()"))
    if text.startswith("+"):
        return text[1:]
    if text.startswith("00"):
        return text[2:]
    return text


def _normalise_prefixes(entries: Sequence[str], key: str) -> tuple[str, ...]:
    if isinstance(entries, str):  # a bare string is a Sequence[str] of characters
        raise ValueError(f"{key}: expected a list of prefixes, got the string {quote(entries)}")
    result: list[str] = []
    for entry in entries:
        prefix = _strip_prefix(entry)
        if not _is_prefix(prefix):
            raise ValueError(
                f"{key}: {quote(entry)} is not a number prefix: use digits in international "
                'form, like "44" or "+44" (a national form such as "0212" never matches)'
            )
        if prefix not in result:
            result.append(prefix)
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Numbers reported by providers


def to_international(raw: str, *, country_code: str) -> str:
    """Best-effort international form of a number a provider reported, for routing and display.

    ``"0368680000"``, ``"+81 3-6868-0000"``, ``"0081368680000"`` and ``"81368680000"`` all give
    ``"81368680000"`` with ``country_code="81"``. Lenient where ``parse_local_part`` is strict:
    this input is not a request to dial anything, and a received fax must be delivered even when
    the provider's number field is odd. Full-width digits and ``+`` are folded to ASCII (NFKC);
    every other non-digit is dropped; ``""`` (number withheld) and garbage without digits give
    ``""``. Never raises, and applying it twice changes nothing, so routing keys in either form
    compare equal after one pass.
    """
    try:
        text = unicodedata.normalize("NFKC", raw)
    except TypeError:
        return ""
    digits = "".join(ch for ch in text if ch in _ASCII_DIGITS)
    if not digits:
        return ""
    plus = text.find("+")
    if plus != -1 and plus < text.find(digits[0]):
        return digits.lstrip("0")
    if digits.startswith("00"):
        return digits[2:].lstrip("0")
    if digits.startswith("0"):
        national = digits[1:]
        if not national:
            return ""
        country = "".join(ch for ch in str(country_code) if ch in _ASCII_DIGITS).lstrip("0")
        return country + national
    return digits
