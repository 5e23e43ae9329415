"""Daily page caps: per sender (toll-fraud damage control) and for the whole gateway (a spend
cap). Pages are counted in any 24 hours, from the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from bridge.store import Usage

DAY = 86_400.0


@dataclass(frozen=True)
class PageCaps:
    per_sender: int
    total: int


def broken_cap(used: Usage, caps: PageCaps, pages: int) -> Literal["per_sender", "total"] | None:
    """The cap a fax of `pages` more pages would break, the sender's before the gateway's, or
    None. At RCPT the pages are not known yet, but a fax has at least one: it is refused there
    once a cap is reached (`pages=1`); after conversion, once it would be passed."""
    if used.sender_pages + pages > caps.per_sender:
        return "per_sender"
    if used.total_pages + pages > caps.total:
        return "total"
    return None
