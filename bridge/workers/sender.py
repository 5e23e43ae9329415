"""Sends queued fax jobs through FaxMAX: claim, call, classify, record.

A job is `sending` on disk before the call. What happens next depends only on what the error
class says about the request (see `bridge.providers.faxmax`): transient failures are retried on
the schedule of `RetryPolicy`; permanent ones fail the job; an unknown outcome leaves it
`unknown` for a person to decide. Submitted jobs that never get a final status push become
`unknown` after `faxmax.status_timeout`.

Once FaxMAX has answered, its answer is the only record of what happened to the fax: if the
store cannot take it (a full disk, a lock held past `busy_timeout`), it is kept and recorded
again, with back-off, until it commits; it is never lost, and the fax is never sent again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

from bridge.alert_texts import Said, said
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import FaxmaxSettings
from bridge.cover import cover_file
from bridge.details import INTERRUPTED
from bridge.dialling import StatusRules
from bridge.errors import (
    ProviderOutcomeUnknown,
    ProviderPermanentError,
    ProviderTransientError,
)
from bridge.files import write_atomic
from bridge.providers.faxmax import SendResult
from bridge.retry import RetryPolicy
from bridge.store import Job, JobState, Message, Store
from bridge.store.jobs import Lines
from bridge.workers.base import Worker

log = logging.getLogger(__name__)
T = TypeVar("T")


class FaxSender(Protocol):
    async def send_fax(
        self, *, job_id: int, number: str, document: Path, cover: Path | None,
        resolution: str, paper_size: str,
    ) -> SendResult: ...


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
EXPIRY_EVERY = 60.0  # while the queue is busy, status deadlines are checked this often
RECORD_RETRY_BASE = 0.5  # seconds before an outcome the store refused is recorded again; doubles
RECORD_RETRY_CAP = 30.0
RECORD_ALERT_AFTER = 3  # refused recordings of one outcome that make it worth the admin's alert
RECORD_GRACE = 5.0  # seconds a stop gives an answer to be recorded after `faxmax.timeout`


# SQLite's primary result codes for a store that cannot commit *now*: BUSY, LOCKED, IOERR,
# FULL, CANTOPEN (https://www.sqlite.org/rescode.html).
STORE_NOT_NOW = frozenset({5, 6, 10, 13, 14})


def store_refused(exc: BaseException) -> bool:
    """A store that could not commit now (full, locked, an I/O error): the same write may
    succeed later. Anything else (a missing column, a constraint) is a bug, which retrying
    would not mend: it propagates, and the job is left `sending`, to be `unknown` (rule 3)."""
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in STORE_NOT_NOW


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
        self.rules = StatusRules(settings)
        self.lines = Lines(settings.per_number_concurrency, settings.line_hold)
        self.policy = RetryPolicy(base=settings.retry_base, cap=settings.retry_cap,
                                  max_attempts=settings.max_attempts,
                                  max_age=settings.retry_max_age)
        self._expiry_at = float("-inf")  # when status deadlines are next checked while busy
        self._sends: set[asyncio.Task[None]] = set()  # sends in flight, and their recording

    @property
    def answered_within(self) -> float:
        """Seconds within which every send in flight has FaxMAX's answer (or its timeout) and
        has recorded it, unless the store keeps refusing: what a stop waits for them."""
        return self.settings.timeout + RECORD_GRACE

    async def next_due(self) -> float | None:
        return await self.store.jobs.next_due(self.settings.status_timeout, self.clock.now(),
                                              self.lines)

    async def run_once(self) -> bool:
        now = self.clock.now()
        # Status deadlines are hours long: a busy queue checks them once a minute rather than
        # paying a write transaction per fax; an idle one whenever `next_due` wakes it.
        checked = now >= self._expiry_at
        expired = await self._expire(now) if checked else False
        claimed = await self.store.jobs.claim(now, self.lines)
        if claimed is None:
            if not checked:
                expired = await self._expire(now)
            return expired
        job, message = claimed
        # The outcome must be recorded even if a stop cancels the worker mid-way: the send is
        # a task of its own, which only `abandon()` cuts off.
        send = asyncio.create_task(self._send(job, message), name=f"sending job {job.id}")
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        await asyncio.shield(send)
        return True

    async def _expire(self, now: float) -> bool:
        self._expiry_at = now + EXPIRY_EVERY
        expired = await self.store.jobs.expire(now - self.settings.status_timeout, now)
        for job_id in expired:
            log.warning("job %s: no delivery report after %ss; marked unknown", job_id,
                        self.settings.status_timeout)
        if expired:
            self.on_final()
        return bool(expired)

    async def abandon(self) -> None:
        """A stop that can wait no longer: cut off the sends still in flight. Each job stays
        `sending`, which the next start makes `unknown` (rule 3)."""
        for send in list(self._sends):
            log.error("shutdown: %s cut off before its outcome was recorded; it becomes "
                      "unknown at the next start", send.get_name())
            send.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def _send(self, job: Job, message: Message) -> None:
        assert message.document_path is not None
        resolution = job.resolution or self.settings.resolution
        paper_size = job.paper_size or self.settings.paper_size
        log.info("job %s: sending %s page(s) to %s (dial %d, call %d, %s, %s)", job.id,
                 job.pages(message), job.number, job.dials + 1, job.attempts, resolution,
                 paper_size)
        document = Path(message.document_path)
        try:
            result = await self.client.send_fax(
                job_id=job.id, number=job.number, document=document,
                # Its sender may have chosen `nocover` (decided at conversion).
                cover=None if job.cover_sent is False else await cover_of(message, document),
                resolution=resolution, paper_size=paper_size)
        except ProviderTransientError as exc:
            await self._retry_or_fail(job, str(exc))
            return
        except ProviderPermanentError as exc:
            log.warning("job %s: failed: %s", job.id, exc)
            await self._finish(job, JobState.FAILED, str(exc))
            if exc.code in CREDENTIAL_ERRORS:  # every fax fails until a person fixes it
                await self._alert("faxmax-credentials", said("faxmax-credentials", error=str(exc)))
        except ProviderOutcomeUnknown as exc:
            log.error("job %s: outcome unknown, not resent: %s", job.id, exc)
            await self._finish(job, JobState.UNKNOWN, str(exc))
        except Exception:
            log.exception("job %s: unexpected error during the send call", job.id)
            await self._finish(job, JobState.UNKNOWN, INTERRUPTED)
        else:
            log.info("job %s: accepted by FaxMAX as fax %s", job.id, result.fax_id)
            state = await self._recorded(
                job, said("outcome-accepted", fax=result.fax_id),
                lambda: self.store.jobs.submitted(job.id, result.fax_id, self.clock.now(),
                                                  self.rules))
            if state in (JobState.SUBMITTED, JobState.QUEUED):
                return
        self.on_final()

    async def _finish(self, job: Job, state: JobState, detail: str) -> None:
        await self._recorded(
            job, said("outcome-finished", state=state, detail=detail),
            lambda: self.store.jobs.finish(job.id, state, detail=detail, now=self.clock.now(),
                                           rules=self.rules))

    async def _recorded(self, job: Job, outcome: Said, record: Callable[[], Awaitable[T]]) -> T:
        """`record()` until the store takes it: after FaxMAX answered, the answer exists
        nowhere else, and the job must not stay `sending` (a restart would call it unknown,
        for the wrong reason, and its fax id would live only in the log). One log line per
        refused attempt. The admin's alert comes once the outcome is recorded, if it took
        `RECORD_ALERT_AFTER` attempts or more: while the store refuses writes, an alert
        cannot be stored either (the log and /healthz say so meanwhile)."""
        refused = 0
        while True:
            try:
                value = await record()
            except Exception as exc:
                if not store_refused(exc):
                    raise
                refused += 1
                error = f"{type(exc).__name__}: {exc}"
                pause = min(RECORD_RETRY_CAP, RECORD_RETRY_BASE * 2 ** (refused - 1))
                log.error("job %s: %s, but recording it failed (%s); the fax is not sent "
                          "again, recording again in %.1fs (attempt %d)", job.id, outcome.summary(),
                          error, pause, refused)
                await asyncio.sleep(pause)
                continue
            if refused >= RECORD_ALERT_AFTER:
                log.warning("job %s: %s: recorded at attempt %d", job.id, outcome.summary(),
                            refused + 1)
                await self._alert("store-refused-send-outcome", said(
                    "store-refused-send-outcome", job=job.id, outcome=outcome, refused=refused,
                    error=error))
            return value

    async def _alert(self, cause: str, text: Said) -> None:
        if self.alerter is not None:
            await self.alerter.alert(cause, text)

    async def _retry_or_fail(self, job: Job, reason: str) -> None:
        now = self.clock.now()
        # `retry_max_age` counts from the first attempt's due time: a fax scheduled days ahead,
        # or dialled again after a busy line, is as young as any other when its time comes.
        first_at = max(job.created_at, job.send_at or 0.0, job.redial_at or 0.0)
        at = self.policy.next_attempt(attempts=job.attempts, first_at=first_at, now=now,
                                      jitter=self.jitter())
        if at is None:
            log.warning("job %s: giving up after %d attempt(s): %s", job.id, job.attempts,
                        reason)
            await self._finish(job, JobState.FAILED,
                               f"FaxMAX could not be reached after {job.attempts} attempt(s); "
                               f"last error: {reason}")
            await self._alert("faxmax-unreachable", said(
                "faxmax-unreachable", job=job.id, attempts=job.attempts, error=reason))
            self.on_final()
            return
        log.info("job %s: temporary failure (%s); retry %d in %.0fs", job.id, reason,
                 job.attempts + 1, at - now)
        await self._recorded(job, said("outcome-retry", reason=reason),
                             lambda: self.store.jobs.retry(job.id, at=at, detail=reason, now=now))
