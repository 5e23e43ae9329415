"""The reader's language: which one an email (or a cover page) is written in, and dates and fax
numbers as people who read that language write them.

The templates say everything in words; this module only chooses the language and formats the
values the templates print. Dates have three fixed forms (month names for Turkish, 年月日 for
Japanese), written out here rather than taken from a locale library, since they are fixed and
Babel's Turkish form abbreviates the month ("7 Ara 2026"). Numbers are formatted by
`phonenumbers` (Google's libphonenumber data), which knows each country's national form.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo

import phonenumbers

from bridge.config import Settings
from bridge.numbers import to_international

ENGLISH = "en"
TRANSLATED = ("en", "tr", "ja")
"""The languages the built-in templates are written in; any other falls back to English."""
TAG = re.compile(r"[a-z]{2,3}")
"""What a language setting may hold: an ISO 639 code, which is also a directory's name."""

TR_MONTHS = ("Ocak", "Şubat", "Mart", "Nisan", "Mayıs", "Haziran", "Temmuz", "Ağustos",
             "Eylül", "Ekim", "Kasım", "Aralık")
WITHHELD = {"en": "withheld", "tr": "gizli numara", "ja": "非通知"}


def format_time(ts: float | None, tz: str, language: str = ENGLISH) -> str:
    """`2026-12-07 15:34 +03`, `7 Aralık 2026 15:34`, `2026年12月7日 15:34`; "" for None."""
    if ts is None:
        return ""
    moment = datetime.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(tz))
    if language == "tr":
        return f"{moment.day} {TR_MONTHS[moment.month - 1]} {moment.year} {moment:%H:%M}"
    if language == "ja":
        return f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"
    return moment.strftime("%Y-%m-%d %H:%M %Z")


def written_number(international: str, home_country: str, language: str = ENGLISH) -> str:
    """A number (digits with the country code, as FaxMAX has it) as the reader writes it: the
    national form for a number of the reader's country (`home_country`, a country code such
    as "90"), `(0312) 555 00 00`, `03-6868-0000`; the international one for others,
    `+81 3-6868-0000`; "withheld" in the reader's words for an empty one. A number
    `phonenumbers` cannot read is shown as it came, with its `+`."""
    if not international:
        return WITHHELD.get(language, WITHHELD[ENGLISH])
    try:
        parsed = phonenumbers.parse("+" + international)
    except phonenumbers.NumberParseException:
        return "+" + international
    if not phonenumbers.is_possible_number(parsed):
        return "+" + international
    own = str(parsed.country_code) == home_country
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL if own
                                      else phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def for_sender(settings: Settings, address: str) -> str:
    """A report's language: its sender's `[[smtp.users]].language`, else
    `[mail.sender_languages]` by the address or the longest `@domain` it ends with (senders
    behind a trusted relay have no user), else `mail.language`."""
    wanted = address.lower()
    for user in settings.smtp.users:
        if user.language and wanted in (a.lower() for a in user.own_addresses):
            return user.language
    by_address = {key.lower(): value for key, value in settings.mail.sender_languages.items()}
    if wanted in by_address:
        return by_address[wanted]
    domains = [key for key in by_address if key.startswith("@") and wanted.endswith(key)]
    if domains:
        return by_address[max(domains, key=len)]
    return settings.mail.language


def for_number(settings: Settings, reported: str, country_code: str) -> str:
    """A received fax's language: `[routing.languages]` by the number that received it (a
    key matches in either form, as `[routing.numbers]`'s do, `bridge.routing`), else
    `mail.language`."""
    wanted = to_international(reported, country_code=country_code)
    for key, language in settings.routing.languages.items():
        if key == reported or (wanted and to_international(key, country_code=country_code)
                               == wanted):
            return language
    return settings.mail.language


def languages_in_use(settings: Settings) -> tuple[str, ...]:
    """Every language an email may be rendered in: the built-in ones and any configured."""
    configured = [settings.mail.language, *settings.mail.sender_languages.values(),
                  *settings.routing.languages.values(),
                  *(u.language for u in settings.smtp.users if u.language)]
    return tuple(dict.fromkeys([*TRANSLATED, *configured]))
