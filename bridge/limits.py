"""Daily page caps: per sender (toll-fraud damage control) and for the whole gateway (a spend
cap). Pages are counted in any 24 hours, from the store."""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86_400.0


@dataclass(frozen=True)
class PageCaps:
    per_sender: int
    total: int
