"""What a FaxMAX push does to the store, shared by the webhook and `replay-quarantine`.

Received fax images are written to disk first (under a name derived from the fax id, so a
replayed push rewrites the same file), then every event of the push is committed in one
transaction; only then may the caller answer 2xx. Events that cannot be understood are kept raw
in quarantine and reported to the admin, never dropped: FaxMAX would retry a non-2xx forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.files import write_atomic
from bridge.providers.faxmax import PROVIDER, parse_push
from bridge.store import JobState, NewInbound, Store

log = logging.getLogger(__name__)
SOURCE = "faxmax-push"


@dataclass(frozen=True)
class PushOutcome:
    status_events: int
    new_status_events: int
    faxes: int
    new_fax_ids: tuple[int, ...]
    quarantined: tuple[int, ...]
    not_understood: tuple[str, ...]


def fax_file(inbound_dir: Path, provider: str, external_id: str, suffix: str) -> Path:
    digest = hashlib.sha256(external_id.encode()).hexdigest()[:32]
    return inbound_dir / f"{provider}-{digest}{suffix}"


class PushProcessor:
    def __init__(
        self, store: Store, clock: Clock, *, inbound_dir: Path,
        classify: Callable[[str], JobState | None], alerter: Alerter,
        on_status: Callable[[], None], on_fax: Callable[[], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self.inbound_dir = inbound_dir
        self.classify = classify
        self.alerter = alerter
        self.on_status = on_status
        self.on_fax = on_fax

    async def process(self, body: bytes, *, quarantine: bool = True) -> PushOutcome:
        """Store a push. With `quarantine=False` (a replay) what still cannot be understood is
        only reported back, not kept a second time."""
        batch = parse_push(body)
        now = self.clock.now()
        faxes = []
        for fax in batch.incoming:
            path = fax_file(self.inbound_dir, PROVIDER, fax.fax_id, ".tif")
            await asyncio.to_thread(write_atomic, path, fax.tiff)
            faxes.append(NewInbound(
                provider=PROVIDER, external_id=fax.fax_id,
                receiving_number=fax.receiving_number, sender_number=fax.sender_number,
                remote_station=fax.remote_station, received_at=now, pages=fax.pages,
                document_path=str(path)))
        new_events, fax_ids, kept = await self.store.record_push(
            source=SOURCE, events=batch.status_events, faxes=faxes,
            bad=batch.bad if quarantine else (), now=now, classify=self.classify,
            replay=not quarantine)
        for event in batch.status_events:
            log.info("push: fax %s status %s", event.fax_id, event.status)
        for fax in batch.incoming:
            log.info("push: received fax %s to %s from %s", fax.fax_id, fax.receiving_number,
                     fax.sender_number or "withheld")
        if len(fax_ids) < len(faxes):
            log.info("push: %d repeated incoming fax event(s) ignored", len(faxes) - len(fax_ids))
        if kept:
            reasons = "\n".join(f"- quarantine #{qid}: {reason}"
                                for qid, (_, reason) in zip(kept, batch.bad, strict=True))
            await self.alerter.alert(
                "faxmax-push-quarantine",
                f"{len(kept)} FaxMAX push event(s) could not be understood",
                f"They are kept in the quarantine table, nothing was lost:\n{reasons}\n\n"
                "After a fix, `fax-bridge replay-quarantine` processes them again.")
        if new_events:
            self.on_status()
        if fax_ids:
            self.on_fax()
        return PushOutcome(
            status_events=len(batch.status_events), new_status_events=new_events,
            faxes=len(faxes), new_fax_ids=tuple(fax_ids), quarantined=tuple(kept),
            not_understood=tuple(reason for _, reason in batch.bad))
