"""Delivers the outbox: every email fax-bridge writes goes through here.

A claimed email's next attempt is pushed past a lease before delivery, so a crash mid-delivery
means one retry later (a possible duplicate, recognisable by its Message-ID), never a loss. An
email the relay refuses for good (5xx), or that is still undelivered after `mail.max_attempts`
or `mail.retry_max_age`, stays in the outbox as a dead letter and the admin is told.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import MailSettings
from bridge.errors import DeliveryError, DeliveryPermanentError
from bridge.mail import Envelope, Transport
from bridge.retry import RetryPolicy
from bridge.store import MailState, QueuedMail, Store
from bridge.workers.base import Shunt, Worker

log = logging.getLogger(__name__)


class Mailer(Worker):
    name = "mailer"

    def __init__(
        self, store: Store, clock: Clock, transport: Transport, settings: MailSettings, *,
        alerter: Alerter, jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(clock)  # one email in flight: a crash repeats at most one
        self.store = store
        self.transport = transport
        self.jitter = jitter
        self.alerter = alerter
        self.shunt = Shunt(store, clock, "email", "mail", alert=alerter.alert)
        self.lease = settings.smtp_timeout * 3 + 30
        self.policy = RetryPolicy(base=settings.retry_base, cap=settings.retry_cap,
                                  max_attempts=settings.max_attempts,
                                  max_age=settings.retry_max_age)

    async def next_due(self) -> float | None:
        return await self.store.outbox.next_due()

    async def run_once(self) -> bool:
        now = self.clock.now()
        mail = await self.store.outbox.claim(now, self.lease)
        if mail is None:
            return False
        await self.shunt.attempt(mail.id, lambda: self.deliver(mail),
                                 give_up=lambda words: self.dead_letter(mail, words))
        return True

    async def deliver(self, mail: QueuedMail) -> None:
        envelope = Envelope(mail_from=mail.mail_from, recipients=mail.recipients, body=mail.body)
        try:
            outcome = await self.transport.deliver(envelope)
        except DeliveryError as exc:
            now = self.clock.now()
            at = None if isinstance(exc, DeliveryPermanentError) else self.policy.next_attempt(
                attempts=mail.attempts, first_at=mail.created_at, now=now, jitter=self.jitter())
            if at is None:
                log.error("mail %s %s: undeliverable to %s after %d attempt(s), kept as a "
                          "dead letter: %s", mail.id, mail.message_id,
                          ", ".join(mail.recipients), mail.attempts, exc)
                await self.store.outbox.finish(mail.id, MailState.FAILED, now=now, error=str(exc))
                await self._tell_admin(mail, exc)
            else:
                log.warning("mail %s %s: delivery failed (%s); retry in %.0fs", mail.id,
                            mail.message_id, exc, at - now)
                await self.store.outbox.finish(mail.id, MailState.PENDING, now=now,
                                               error=str(exc), retry_at=at)
            return
        log.info("mail %s %s: delivered to %s, %s", mail.id, mail.message_id,
                 ", ".join(mail.recipients), outcome)
        await self.store.outbox.finish(mail.id, MailState.SENT, now=self.clock.now())

    async def dead_letter(self, mail: QueuedMail, words: str) -> None:
        """Kept in the outbox as given up, as a refused email is; `retry --mail` resends it."""
        await self.store.outbox.finish(mail.id, MailState.FAILED, now=self.clock.now(),
                                       error=f"internal error: {words}")

    async def _tell_admin(self, mail: QueuedMail, exc: DeliveryError) -> None:
        """A dead letter is kept, and a person hears of it, unless it was to that person."""
        if set(mail.recipients) == {self.alerter.admin}:
            return
        await self.alerter.alert(
            "mail-undeliverable",
            f"an email to {', '.join(mail.recipients)} could not be delivered",
            f"Message-ID: {mail.message_id}\nAttempts: {mail.attempts}\nLast error: {exc}\n\n"
            f"It is kept in the outbox as mail {mail.id}. After fixing the cause, "
            f"`fax-bridge retry --mail {mail.id}` sends it again; `fax-bridge list --mail "
            "failed` shows every email that was given up.")
