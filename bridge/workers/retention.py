"""Deletes fax images once they are no longer needed, keeping the record of each fax.

Sent and received faxes are personal data (KVKK in Turkey, APPI in Japan): a gateway should
not become an archive nobody asked for. `documents.retention_days` after a fax is finished, its
images (the spooled mail, the converted PDF, the received TIFF/PDF, the body of the delivered
email) are deleted; who sent what to which number, when, with how many pages and what outcome
stays in the store. Runs once an hour; 0 days keeps everything. Each run also forgets the
per-minute usage counts older than a day, past every limit that reads them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from bridge.clock import Clock
from bridge.limits import DAY
from bridge.store import Store
from bridge.workers.base import Worker

log = logging.getLogger(__name__)

INTERVAL = 3600.0


def remove_files(paths: list[str]) -> None:
    """Delete each file; a converted fax lives in its own `message-N` folder, which goes too,
    and a received TIFF may have its PDF rendering beside it."""
    for name in paths:
        path = Path(name)
        path.unlink(missing_ok=True)
        if path.suffix == ".tif":
            path.with_suffix(".pdf").unlink(missing_ok=True)
        if path.parent.name.startswith("message-"):
            shutil.rmtree(path.parent, ignore_errors=True)


class Retention(Worker):
    name = "retention"

    def __init__(self, store: Store, clock: Clock, days: int) -> None:
        super().__init__(clock)
        self.store = store
        self.days = days
        self._next_at = clock.now()

    async def next_due(self) -> float | None:
        return self._next_at

    async def run_once(self) -> bool:
        now = self.clock.now()
        if now < self._next_at:
            return False
        self._next_at = now + INTERVAL
        await self.store.jobs.forget_usage(now - DAY)
        if not self.days:
            return False
        purged = await self.store.upkeep.purge(now - self.days * DAY, remove_files)
        if any((purged.messages, purged.inbound, purged.emails, purged.quarantined)):
            log.info("retention: deleted the fax images of %d sent and %d received fax(es) and "
                     "the bodies of %d delivered email(s) and %d replayed push(es), older than "
                     "%d day(s)", purged.messages, purged.inbound, purged.emails,
                     purged.quarantined, self.days)
        return False
