"""What a FaxMAX push does to the store, shared by the webhook and `replay-quarantine`.

Every event of a push, received fax images included, is committed in one transaction (shared
with other pushes and mails arriving at the same moment: a group commit); only then may the
caller answer 2xx. The image lives in its fax's row, so it is durable with that one commit.
Events that cannot be understood are kept raw in quarantine and reported to the admin, never
dropped: FaxMAX would retry a non-2xx forever.

A body over `PARSE_HERE_BYTES` (a received fax of more than a few pages; up to
`http.max_body_bytes`, 50 MB) is parsed in a sandboxed child, as hostile input is: decoding
40 MB of JSON and base64 is two single C calls of about 0.1 s each, which would hold the event
loop (a thread would not help: they never release the interpreter). Smaller bodies, nearly all,
are parsed here in a few milliseconds at most, without the round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bridge.alert_texts import said
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.dialling import StatusRules
from bridge.errors import DocumentError
from bridge.mail import one_line
from bridge.providers.faxmax import PROVIDER, PushBatch, parse_push
from bridge.sandbox import Sandbox
from bridge.store import NewInbound, Store

log = logging.getLogger(__name__)
SOURCE = "faxmax-push"
PARSE_HERE_BYTES = 1 << 20  # larger push bodies are parsed in the sandbox


@dataclass(frozen=True)
class PushOutcome:
    status_events: int
    new_status_events: int
    faxes: int
    new_fax_ids: tuple[int, ...]
    quarantined: tuple[int, ...]
    not_understood: tuple[str, ...]


class PushProcessor:
    def __init__(
        self, store: Store, clock: Clock, *,
        rules: StatusRules, alerter: Alerter, sandbox: Sandbox,
        on_status: Callable[[], None], on_fax: Callable[[], None],
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        self.clock = clock
        self.rules = rules
        self.alerter = alerter
        self.on_status = on_status
        self.on_fax = on_fax

    async def process(self, body: bytes, *, quarantine: bool = True) -> PushOutcome:
        """Store a push. With `quarantine=False` (a replay) what still cannot be understood is
        only reported back, not kept a second time."""
        batch = await self.parse(body)
        now = self.clock.now()
        faxes = [NewInbound(
            provider=PROVIDER, external_id=fax.fax_id, receiving_number=fax.receiving_number,
            sender_number=fax.sender_number, remote_station=fax.remote_station,
            received_at=now, pages=fax.pages, document=fax.tiff) for fax in batch.incoming]
        bad = batch.bad if quarantine else []
        new_events, fax_ids, kept = await self.store.inbound.record_push(
            source=SOURCE, events=batch.status_events, faxes=faxes, bad=bad, now=now,
            rules=self.rules, replay=not quarantine)
        for event in batch.status_events:
            log.info("push: fax %s status %s", event.fax_id, event.status)
        for fax in batch.incoming:
            log.info("push: received fax %s to %s from %s", fax.fax_id, fax.receiving_number,
                     fax.sender_number or "withheld")
        if len(fax_ids) < len(faxes):
            log.info("push: %d repeated incoming fax event(s) ignored", len(faxes) - len(fax_ids))
        if new_events:
            self.on_status()
        if fax_ids:
            self.on_fax()
        new_kept = [(qid, reason) for (qid, new), (_, reason) in zip(kept, bad, strict=True)
                    if new]
        if len(new_kept) < len(kept):
            log.info("push: %d quarantined event(s) received again, counted as repeats of "
                     "quarantine %s", len(kept) - len(new_kept),
                     ", ".join(f"#{qid}" for qid, new in kept if not new))
        if new_kept:
            await self._tell_admin(new_kept)
        return PushOutcome(
            status_events=len(batch.status_events), new_status_events=new_events,
            faxes=len(faxes), new_fax_ids=tuple(fax_ids),
            quarantined=tuple(qid for qid, _ in kept),
            not_understood=tuple(reason for _, reason in batch.bad))

    async def _tell_admin(self, kept: list[tuple[int, str]]) -> None:
        """After the push's commit, nothing may fail its answer: a 5xx would make FaxMAX send
        again what is already stored. An alert that cannot be queued (a full disk, a broken
        template) is logged instead; the rows stay in quarantine and in `/metrics`."""
        reasons = "\n".join(f"- quarantine #{qid}: {reason}" for qid, reason in kept)
        try:
            await self.alerter.alert("faxmax-push-quarantine", said(
                "push-quarantine", count=len(kept), reasons=reasons))
        except Exception as exc:
            log.error("push: quarantine %s is stored, but its alert to the admin could not be "
                      "queued: %s: %s", ", ".join(f"#{qid}" for qid, _ in kept),
                      exc.__class__.__name__, one_line(str(exc)))

    async def parse(self, body: bytes) -> PushBatch:
        """`parse_push`, in the sandbox for a large body. One the child cannot read within its
        limits is kept in quarantine like any body not understood; a failure of the sandbox
        itself (no process could be started) propagates, so the push is answered 5xx and
        FaxMAX sends it again."""
        if len(body) <= PARSE_HERE_BYTES:
            return parse_push(body)
        try:
            return await self.sandbox.run(parse_push, body, what="the push")
        except DocumentError as exc:
            log.error("push: a %d-byte body could not be read: %s", len(body), exc)
            return PushBatch((), (), ((body, str(exc)),))
