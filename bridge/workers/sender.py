"""Sends queued fax jobs through FaxMAX: claim, call, classify, record.

A job is `sending` on disk before the call. What happens next depends only on what the error
class says about the request (see `bridge.providers.faxmax`): transient failures are retried on
the schedule of `RetryPolicy`; permanent ones fail the job; an unknown outcome leaves it
`unknown` for a person to decide. Submitted jobs that never get a final status push become
`unknown` after `faxmax.status_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import FaxmaxSettings
from bridge.cover import cover_file
from bridge.errors import (
    ProviderOutcomeUnknown,
    ProviderPermanentError,
    ProviderTransientError,
)
from bridge.files import write_atomic
from bridge.providers.faxmax import SendResult
from bridge.retry import RetryPolicy
from bridge.store import Job, JobState, Message, Store
from bridge.workers.base import Worker

log = logging.getLogger(__name__)


class FaxSender(Protocol):
    async def send_fax(
        self, *, job_id: int, number: str, document: Path, cover: Path | None
    ) -> SendResult: ...


def status_classifier(settings: FaxmaxSettings) -> Callable[[str], JobState | None]:
    """Which pushed status words are final is configuration; everything else is intermediate."""
    delivered = {s.upper() for s in settings.delivered_statuses}
    failed = {s.upper() for s in settings.failed_statuses}

    def classify(status: str) -> JobState | None:
        word = status.strip().upper()
        if word in delivered:
            return JobState.DELIVERED
        if word in failed:
            return JobState.FAILED
        return None

    return classify


async def cover_of(message: Message, document: Path) -> Path | None:
    """The file of the fax's cover page, if it has one (`bridge.cover.cover_file`). A cover
    kept in the row, as versions before issue 19 kept it, is moved to its file at its first
    send: one code path sends every cover."""
    path = cover_file(document)
    if message.cover_html is not None and not await asyncio.to_thread(path.exists):
        page = json.dumps(message.cover_html, ensure_ascii=False).encode()
        await asyncio.to_thread(write_atomic, path, page)
    return path if await asyncio.to_thread(path.exists) else None


CREDENTIAL_ERRORS = {"401", "403"}  # HTTP status or JSON-RPC error code: token or login refused


class Sender(Worker):
    name = "sender"

    def __init__(
        self, store: Store, clock: Clock, client: FaxSender, settings: FaxmaxSettings, *,
        on_final: Callable[[], None], jitter: Callable[[], float] = random.random,
        alerter: Alerter | None = None,
    ) -> None:
        super().__init__(clock, concurrency=settings.concurrency)
        self.alerter = alerter
        self.store = store
        self.client = client
        self.settings = settings
        self.on_final = on_final
        self.jitter = jitter
        self.classify = status_classifier(settings)
        self.policy = RetryPolicy(base=settings.retry_base, cap=settings.retry_cap,
                                  max_attempts=settings.max_attempts,
                                  max_age=settings.retry_max_age)

    async def next_due(self) -> float | None:
        return await self.store.jobs.next_due(self.settings.status_timeout)

    async def run_once(self) -> bool:
        now = self.clock.now()
        claimed = await self.store.jobs.claim(now)
        if claimed is None:
            # Only when idle: status deadlines are hours long, and a busy queue must not pay
            # an extra write transaction per fax for them.
            expired = await self.store.jobs.expire(now - self.settings.status_timeout, now)
            for job_id in expired:
                log.warning("job %s: no delivery report after %ss; marked unknown", job_id,
                            self.settings.status_timeout)
            if expired:
                self.on_final()
            return bool(expired)
        job, message = claimed
        # The outcome must be recorded even if shutdown cancels us mid-way.
        await asyncio.shield(self._send(job, message))
        return True

    async def _send(self, job: Job, message: Message) -> None:
        assert message.document_path is not None
        log.info("job %s: sending %s page(s) to %s (attempt %d)", job.id, message.pages,
                 job.number, job.attempts)
        document = Path(message.document_path)
        try:
            result = await self.client.send_fax(
                job_id=job.id, number=job.number, document=document,
                cover=await cover_of(message, document))
        except ProviderTransientError as exc:
            await self._retry_or_fail(job, str(exc))
            return
        except ProviderPermanentError as exc:
            log.warning("job %s: failed: %s", job.id, exc)
            await self.store.jobs.finish(job.id, JobState.FAILED, detail=str(exc),
                                        now=self.clock.now())
            if exc.code in CREDENTIAL_ERRORS:  # every fax fails until a person fixes it
                await self._alert("faxmax-credentials",
                                  "FaxMAX refuses our credentials: no fax can be sent", str(exc))
        except ProviderOutcomeUnknown as exc:
            log.error("job %s: outcome unknown, not resent: %s", job.id, exc)
            await self.store.jobs.finish(job.id, JobState.UNKNOWN, detail=str(exc),
                                        now=self.clock.now())
        except Exception:
            log.exception("job %s: unexpected error during the send call", job.id)
            await self.store.jobs.finish(
                job.id, JobState.UNKNOWN, now=self.clock.now(),
                detail="an internal error interrupted the hand-over to FaxMAX, so it is "
                       "unknown whether the fax was sent; it was not sent again")
        else:
            log.info("job %s: accepted by FaxMAX as fax %s", job.id, result.fax_id)
            state = await self.store.jobs.submitted(job.id, result.fax_id, self.clock.now(),
                                                      self.classify)
            if state is JobState.SUBMITTED:
                return
        self.on_final()

    async def _alert(self, cause: str, summary: str, details: str) -> None:
        if self.alerter is not None:
            await self.alerter.alert(cause, summary, details)

    async def _retry_or_fail(self, job: Job, reason: str) -> None:
        now = self.clock.now()
        at = self.policy.next_attempt(attempts=job.attempts, first_at=job.created_at, now=now,
                                      jitter=self.jitter())
        if at is None:
            log.warning("job %s: giving up after %d attempt(s): %s", job.id, job.attempts,
                        reason)
            await self.store.jobs.finish(
                job.id, JobState.FAILED, now=now,
                detail=f"FaxMAX could not be reached after {job.attempts} attempt(s); "
                       f"last error: {reason}")
            await self._alert("faxmax-unreachable",
                              "faxes fail because FaxMAX could not be reached",
                              f"Job {job.id} was given up after {job.attempts} attempt(s); "
                              f"last error: {reason}")
            self.on_final()
            return
        log.info("job %s: temporary failure (%s); retry %d in %.0fs", job.id, reason,
                 job.attempts + 1, at - now)
        await self.store.jobs.retry(job.id, at=at, detail=reason, now=now)
