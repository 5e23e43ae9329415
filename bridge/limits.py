"""The limits against toll fraud and runaway spend: who a mail is charged to, the hourly fax
limits (per sender and for the whole gateway), and the daily page caps (per sender, and for the
gateway: a spend cap). Faxes are counted in any hour and pages in any 24 hours, from the store,
plus the recipients of mails still in the SMTP dialogue (`Reservations`).

Who is charged (`account`): a limit per envelope address would be no limit, since a client
writes whatever MAIL FROM it likes. So the per-sender limits count the identity the gateway
checked: the user who logged in; else the `smtp.allowed_senders` entry that let the sender in
(an address listed on its own is its own account, every other address of a listed `@domain`
shares the domain's); else, with no allowlist, the envelope address itself, which is then
the client's to vary: the gateway-wide caps are the backstop.
"""

from __future__ import annotations

import datetime
import math
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bridge.store import Usage

DAY = 86_400.0
HOUR = 3_600.0

Cap = Literal["per_sender", "total"]


@dataclass(frozen=True)
class PageCaps:
    per_sender: int
    total: int


@dataclass(frozen=True)
class FaxCaps:
    """Faxes (jobs) in any hour: per account, and for the whole gateway."""

    per_sender: int
    total: int


class HourlyCapReached(Exception):
    """Raised by `store.jobs.accept` when storing the mail would pass an hourly cap; nothing
    was stored. `frees_at`: when the oldest fax counted against the cap leaves the window."""

    def __init__(self, cap: Cap, frees_at: float) -> None:
        super().__init__(f"the {cap} hourly fax cap is reached")
        self.cap: Cap = cap
        self.frees_at = frees_at


def account(*, user: str | None, address: str, allowed: tuple[str, ...]) -> str:
    """The key the per-sender limits count a mail under (stored as `jobs.sender`): `user:NAME`
    for a user who logged in; else the allowlist entry that admits `address` (the address
    itself when it is listed, else its `@domain`); else the address. Lower case."""
    if user is not None:
        return f"user:{user}".lower()
    address = address.lower()
    entries = {entry.lower() for entry in allowed}
    if not entries or address in entries:
        return address
    domain = "@" + address.rpartition("@")[2]
    return domain if domain in entries else address


def who(key: str) -> str:
    """An account in words, as a refusal names it: "<alice@example.com>", "user alice", "mail
    from @example.com (all its senders together)"."""
    if key.startswith("user:"):
        return f"user {key[5:]}"
    if key.startswith("@"):
        return f"mail from {key} (all its senders together)"
    return f"<{key}>"


def frees_at(minutes: Sequence[tuple[int, int]], excess: int, window: float) -> float | None:
    """When enough of what a window counts has left it: `minutes` are the window's counts per
    minute (faxes or pages), oldest first, and `excess` how many must leave (what is used, plus
    what is asked for, minus the cap). The oldest minute counts whole, as `store.jobs.usage`
    counts it, so a minute leaves the window `window` seconds after its end. None when what
    is stored cannot free enough: the rest is held by mails still in the dialogue, or more is
    asked for than the cap allows at all."""
    for minute, count in minutes:
        excess -= count
        if excess <= 0:
            return (minute + 1) * 60 + window
    return None


def try_again(at: float, now: float, tz: str) -> dict[str, str]:
    """The `time` and `wait` slots of a reply that says when to try again: the minute from
    which a new try can pass, in the service's time zone (`mail.timezone`, as the reports show
    times), with the date when it is not today's ("14:06 +03", "2026-12-08 09:00 +03"); and
    how long that is from now, rounded up ("1 minute", "23 minutes", "2 hours 5 minutes").
    A time between two minutes is shown as the next one, so that a try at the time shown is
    never refused again."""
    zone = zoneinfo.ZoneInfo(tz)
    moment = datetime.datetime.fromtimestamp(math.ceil(at / 60) * 60, zone)
    same_day = moment.date() == datetime.datetime.fromtimestamp(now, zone).date()
    shown = moment.strftime("%H:%M %Z" if same_day else "%Y-%m-%d %H:%M %Z")
    minutes = max(1, math.ceil((at - now) / 60))
    hours, rest = divmod(minutes, 60)
    parts = [f"{n} {unit}{'' if n == 1 else 's'}"
             for n, unit in ((hours, "hour"), (rest, "minute")) if n]
    return {"time": shown, "wait": " ".join(parts)}


class Reservations:
    """Recipients accepted at RCPT in transactions not yet committed, per account and in all.

    Without them, parallel sessions each pass RCPT against the same stored count before any of
    their DATA commits (20 sessions of 20 numbers against a limit of 60). A session holds what
    it accepted until its transaction ends (`release`: RSET, a new EHLO, the end of DATA
    whether stored or refused, a dropped connection); once stored, its jobs count instead."""

    def __init__(self) -> None:
        self._held: dict[object, tuple[str, int]] = {}
        self._by_account: Counter[str] = Counter()
        self.total = 0

    def of(self, key: str) -> int:
        return self._by_account[key]

    def hold(self, session: object, key: str) -> None:
        """One more recipient for `session`'s transaction, charged to `key`."""
        held_key, n = self._held.get(session, (key, 0))
        if held_key != key:  # a transaction has one sender; a new one starts afresh
            self.release(session)
            n = 0
        self._held[session] = (key, n + 1)
        self._by_account[key] += 1
        self.total += 1

    def release(self, session: object) -> None:
        key, n = self._held.pop(session, ("", 0))
        if n:
            self._by_account[key] -= n
            if self._by_account[key] <= 0:
                del self._by_account[key]
            self.total -= n


def broken_cap(used: Usage, caps: PageCaps, pages: int) -> Cap | None:
    """The cap a fax of `pages` more pages would break, the sender's before the gateway's, or
    None. At RCPT the pages are not known yet, but a fax has at least one: it is refused there
    once a cap is reached (`pages=1`); after conversion, once it would be passed."""
    if used.sender_pages + pages > caps.per_sender:
        return "per_sender"
    if used.total_pages + pages > caps.total:
        return "total"
    return None
