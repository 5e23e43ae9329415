"""Polls 秒速FAX Plus: the receive log at most once per `poll_interval`, PDFs at most once per
`pdf_interval`, each measured from the previous *response* plus a small margin.

The times of the last calls live in the store, so a restart keeps the spacing; a call that was
in flight when the process died counts as answered at the next start (the provider may have
answered it just before the crash). Every unseen `pdfId` is stored before its PDF is fetched,
so a crash between log and PDF loses nothing. A full 50-row log that shares no id with the
previous poll means faxes may have scrolled out unseen: the admin is told.

Within the process the spacing is measured on the monotonic clock: the wall clock only carries
it across a restart (rule 7), so an NTP step cannot shorten it. A PDF that cannot be stored
because the disk is full is not downloaded again every few seconds: PDF calls pause, doubling
up to `DISK_FULL_MAX_PAUSE`, and the admin is told once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bridge.alert_texts import said
from bridge.alerts import Alerter
from bridge.clock import Clock, parse_provider_time
from bridge.config import ByosokuSettings
from bridge.errors import ProviderError
from bridge.files import write_atomic
from bridge.providers.byosoku import PROVIDER, LogEntry
from bridge.retry import RetryPolicy
from bridge.store import Inbound, InboundState, NewInbound, Store, is_disk_full
from bridge.workers.base import Worker

log = logging.getLogger(__name__)


def fax_file(inbound_dir: Path, provider: str, external_id: str, suffix: str) -> Path:
    """Where a fetched fax is kept: named after its id, so a fetch repeated after a crash
    rewrites the same file."""
    digest = hashlib.sha256(external_id.encode()).hexdigest()[:32]
    return inbound_dir / f"{provider}-{digest}{suffix}"

LOG_ROWS = 50  # the receive log returns the latest 50 faxes
FAILING_ALERT_AFTER = 5  # consecutive failed log calls before the admin hears of it
GIVE_UP_AFTER = 3 * 86_400  # a PDF that keeps failing for this long is given up
DISK_FULL_PAUSE = 10.0  # seconds without PDF calls after a PDF could not be stored; doubles
DISK_FULL_MAX_PAUSE = 600.0  # ... up to this


class ByosokuApi(Protocol):
    async def receive_log(self) -> list[LogEntry]: ...

    async def fetch_pdf(self, pdf_id: str) -> bytes: ...


def margin(interval: float) -> float:
    """A little extra after each interval, because the provider's clock is not ours."""
    return min(1.0, interval * 0.05)


PERMANENT_ALERTS = ("403", "404", "ERR_NO_DATA")  # alerted at once (`bridge.alert_texts`)


class Poller(Worker):
    name = "poller"

    def __init__(
        self, store: Store, clock: Clock, client: ByosokuApi, settings: ByosokuSettings, *,
        inbound_dir: Path, alerter: Alerter, on_fax: Callable[[], None],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(clock)
        self.store = store
        self.client = client
        self.settings = settings
        self.inbound_dir = inbound_dir
        self.alerter = alerter
        self.on_fax = on_fax
        self.jitter = jitter
        self.policy = RetryPolicy(base=settings.retry_base, cap=settings.retry_cap,
                                  max_attempts=10_000, max_age=GIVE_UP_AFTER)
        # Earliest times of the next calls, on the monotonic clock.
        self._log_at: float | None = None
        self._pdf_at = 0.0
        self._disk_full = 0  # PDFs in a row that could not be stored for want of space
        self._log_failures = 0
        self.failing_since: float | None = None  # when the current run of failed log calls began
        self.last_error = ""

    async def _load(self) -> None:
        """The next allowed call times, from what the store remembers of the last calls: the
        wall-clock times of the previous process, turned into waits from now (never longer
        than a whole interval, whatever the wall clock did meanwhile)."""
        if self._log_at is not None:
            return
        now, started_at = self.clock.now(), self.clock.monotonic()
        for kind, interval in (("log", self.settings.poll_interval),
                               ("pdf", self.settings.pdf_interval)):
            started = float(await self.store.upkeep.meta(f"byosoku.{kind}_started") or 0)
            answered = float(await self.store.upkeep.meta(f"byosoku.{kind}_answered") or 0)
            if started > answered:
                answered = now  # in flight when we stopped: it may have been answered just now
            spacing = interval + margin(interval)
            wait = min(max(answered + spacing - now, 0.0), spacing) if answered else 0.0
            if kind == "log":
                self._log_at = started_at + wait
            else:
                self._pdf_at = started_at + wait

    def _wall(self, at: float) -> float:
        """A time on the monotonic clock, as the wall-clock time the workers sleep until."""
        return self.clock.now() + (at - self.clock.monotonic())

    async def next_due(self) -> float | None:
        await self._load()
        assert self._log_at is not None
        pending = await self.store.inbound.next_due(InboundState.FETCHING)
        if pending is None:
            return self._wall(self._log_at)
        return min(self._wall(self._log_at), max(pending, self._wall(self._pdf_at)))

    async def run_once(self) -> bool:
        await self._load()
        assert self._log_at is not None
        now = self.clock.now()
        # Within a millisecond counts as reached: workers sleep until a wall-clock time,
        # which carries less precision than the monotonic one (see `_wall`).
        monotonic = self.clock.monotonic() + 1e-3
        if monotonic >= self._log_at:
            await self.poll()
            return True
        if monotonic >= self._pdf_at:
            fax = await self.store.inbound.due(InboundState.FETCHING, now)
            if fax is not None:
                await self.fetch(fax)
                return True
        return False

    async def _call_started(self, kind: str) -> None:
        await self.store.upkeep.set_meta({f"byosoku.{kind}_started": repr(self.clock.now())})

    async def _answered(self, kind: str) -> float:
        """Note a call's answer: the next call's earliest time; the wall-clock time returned
        is what the store keeps for the next start."""
        interval = self.settings.poll_interval if kind == "log" else self.settings.pdf_interval
        at = self.clock.monotonic() + interval + margin(interval)
        if kind == "log":
            self._log_at = at
        else:
            self._pdf_at = at
        return self.clock.now()

    async def poll(self) -> None:
        await self._call_started("log")
        try:
            entries = await self.client.receive_log()
        except ProviderError as exc:
            answered = await self._answered("log")
            await self.store.upkeep.set_meta({"byosoku.log_answered": repr(answered)})
            await self._log_failed(exc)
            return
        answered = await self._answered("log")
        self._log_failures = 0
        self.failing_since = None
        first = await self.store.upkeep.meta("byosoku.synced") is None
        previous = set(json.loads(await self.store.upkeep.meta("byosoku.last_ids") or "[]"))
        ids = [e.pdf_id for e in entries]
        skip = first and self.settings.initial_sync == "skip"
        now = self.clock.now()
        faxes = [NewInbound(
            provider=PROVIDER, external_id=e.pdf_id, receiving_number=e.fax_number,
            sender_number=e.sender, pages=e.pages,
            received_at=parse_provider_time(e.receive_date, self.settings.timezone) or now)
            for e in entries]
        meta = {"byosoku.log_answered": repr(answered), "byosoku.last_poll_ok": repr(answered),
                "byosoku.synced": "1",
                "byosoku.last_ids": json.dumps(ids)}
        overflow = bool(not first and previous and len(entries) >= LOG_ROWS
                        and not previous & set(ids))
        if overflow:  # counted for the operator (`fax-bridge status`, /metrics)
            gaps = int(await self.store.upkeep.meta("byosoku.log_gaps") or 0) + 1
            meta["byosoku.log_gaps"] = str(gaps)
        new = await self.store.inbound.record_poll(
            faxes, InboundState.SKIPPED if skip else InboundState.FETCHING, meta, now)
        log.info("byosoku: log has %d fax(es), %d new%s", len(entries), len(new),
                 " (first poll: skipped, initial_sync = \"skip\")" if skip and new else "")
        if overflow:
            log.error("byosoku: log gap %s: more than %d faxes arrived since the last poll",
                      meta["byosoku.log_gaps"], LOG_ROWS)
            await self.alerter.alert("byosoku-log-overflow", said(
                "byosoku-log-overflow", rows=LOG_ROWS, seen=len(entries)))
        if new and not skip:
            self.on_fax()

    async def _log_failed(self, exc: ProviderError) -> None:
        self._log_failures += 1
        if self.failing_since is None:
            self.failing_since = self.clock.now()
        self.last_error = str(exc)
        assert self._log_at is not None
        log.warning("byosoku: log call failed (%s): %s; next call in %.0fs", exc.code, exc,
                    self._log_at - self.clock.monotonic())
        if exc.code in PERMANENT_ALERTS:
            await self.alerter.alert(f"byosoku-{exc.code}",
                                     said(f"byosoku-{exc.code}", error=str(exc)))
        elif self._log_failures >= FAILING_ALERT_AFTER:
            await self.alerter.alert("byosoku-log-failing", said(
                "byosoku-log-failing", failures=self._log_failures, error=str(exc)))

    async def fetch(self, fax: Inbound) -> None:
        await self._call_started("pdf")
        try:
            pdf = await self.client.fetch_pdf(fax.external_id)
        except ProviderError as exc:
            answered = await self._answered("pdf")
            await self.store.upkeep.set_meta({"byosoku.pdf_answered": repr(answered)})
            await self._pdf_failed(fax, exc, answered)
            return
        answered = await self._answered("pdf")
        path = fax_file(self.inbound_dir, PROVIDER, fax.external_id, ".pdf")
        try:
            await asyncio.to_thread(write_atomic, path, pdf)
            await self.store.inbound.fetched(fax.id, str(path), self.clock.now(),
                                             {"byosoku.pdf_answered": repr(answered)})
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            await self._no_space(fax, exc)
            return
        self._disk_full = 0
        log.info("fax %s: PDF %s fetched (%d bytes)", fax.id, fax.external_id, len(pdf))
        self.on_fax()

    async def _no_space(self, fax: Inbound, exc: Exception) -> None:
        """The PDF was downloaded but cannot be kept: no PDF call until the pause is over
        (each one would download it again for nothing), the pause doubling while the disk
        stays full; the admin is told at the first (and the alert is throttled)."""
        self._disk_full += 1
        pause = min(DISK_FULL_MAX_PAUSE, DISK_FULL_PAUSE * 2 ** (self._disk_full - 1))
        self._pdf_at = max(self._pdf_at, self.clock.monotonic() + pause)
        log.error("fax %s: PDF %s downloaded but not stored, out of storage (%d in a row); "
                  "no PDF call for %.0fs: %s", fax.id, fax.external_id, self._disk_full, pause,
                  exc)
        if self._disk_full > 1:
            return
        try:
            await self.alerter.alert("byosoku-disk-full", said(
                "byosoku-disk-full", fax=fax.id, pdf_id=fax.external_id, error=exc,
                pause=f"{DISK_FULL_MAX_PAUSE:.0f}"))
        except Exception as alert_exc:  # the alert needs space too
            if not is_disk_full(alert_exc):
                raise
            log.error("fax %s: the admin could not be told of the full disk: %s", fax.id,
                      alert_exc)

    async def _pdf_failed(self, fax: Inbound, exc: ProviderError, now: float) -> None:
        attempts = fax.attempts + 1
        # Only "no such PDF" answers say the PDF may never come: a busy or unreachable
        # provider before them does not use the fax's `pdf_attempts` up.
        no_pdf = exc.code in ("ERR_NO_PDF", "ERR_PDF_ID")
        give_up = no_pdf and fax.no_pdf_answers + 1 >= self.settings.pdf_attempts
        at = self.policy.next_attempt(attempts=attempts, first_at=fax.created_at, now=now,
                                      jitter=self.jitter())
        if exc.code == "ERR_ACCESS_INTERVAL" and at is not None:
            at = self._wall(self._pdf_at)  # not a failure of this fax: just wait the interval
        if give_up or at is None:
            log.error("fax %s: PDF %s could not be fetched after %d attempt(s): %s", fax.id,
                      fax.external_id, attempts, exc)
            await self.store.inbound.finish(fax.id, InboundState.FAILED, mail=None, now=now,
                                          detail=str(exc))
            await self.alerter.alert(f"byosoku-pdf-failed-{fax.id}", said(
                "byosoku-pdf-failed", to=fax.receiving_number, sender=fax.sender_number,
                pdf_id=fax.external_id, pages=fax.pages or "?", attempts=attempts, error=exc))
            return
        if exc.code in PERMANENT_ALERTS:
            await self.alerter.alert(f"byosoku-{exc.code}",
                                     said(f"byosoku-{exc.code}", error=str(exc)))
        log.warning("fax %s: PDF %s not fetched (%s); retry in %.0fs", fax.id, fax.external_id,
                    exc.code, at - now)
        await self.store.inbound.retry(fax.id, at=at, detail=str(exc), now=now, no_pdf=no_pdf)
