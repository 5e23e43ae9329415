"""Delivers the outbox: every email fax-bridge writes goes through here.

A claimed email's next attempt is pushed past a lease before delivery, so a crash mid-delivery
means one retry later (a possible duplicate, recognisable by its Message-ID), never a loss. An
email the relay refuses for good (5xx), or that is still undelivered after `mail.max_attempts`
or `mail.retry_max_age`, stays in the outbox as a dead letter and the admin is told. An email
whose final `.` the relay never answered may have been taken: it is sent again at most once,
then kept as `unknown` and the admin is told.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from bridge.alert_texts import said
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import MailSettings
from bridge.errors import DeliveryError, DeliveryOutcomeUnknown, DeliveryPermanentError
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
        # connect + commands, then the final `.`'s own wait
        self.lease = settings.smtp_timeout * 3 + settings.smtp_final_dot_timeout + 30
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
        except DeliveryOutcomeUnknown as exc:
            await self._unanswered(mail, exc)
            return
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

    async def _unanswered(self, mail: QueuedMail, exc: DeliveryOutcomeUnknown) -> None:
        """The relay may have the email: sent again once (the same bytes, so the same
        Message-ID, which shows a repeat for what it is), then kept as `unknown` and the admin
        told, never resent blindly up to `mail.max_attempts` times."""
        now = self.clock.now()
        error = f"delivery unknown: {exc}"
        at = None if mail.unanswered else self.policy.next_attempt(
            attempts=mail.attempts, first_at=mail.created_at, now=now, jitter=self.jitter())
        if at is not None:
            log.warning("mail %s %s: delivery unknown: %s; sent again once, with the same "
                        "Message-ID, in %.0fs", mail.id, mail.message_id, exc, at - now)
            await self.store.outbox.finish(mail.id, MailState.PENDING, now=now, error=error,
                                           retry_at=at, unanswered=True)
            return
        log.error("mail %s %s: delivery unknown: %s; kept as unknown and not sent again "
                  "(fax-bridge retry --mail %s resends it)", mail.id, mail.message_id, exc,
                  mail.id)
        await self.store.outbox.finish(mail.id, MailState.UNKNOWN, now=now, error=error,
                                       unanswered=True)
        if set(mail.recipients) == {self.alerter.admin}:
            return
        copies = mail.unanswered + 1
        await self.alerter.alert("mail-delivery-unknown", said(
            "mail-delivery-unknown", to=", ".join(mail.recipients), message_id=mail.message_id,
            error=exc, copies=copies, mail=mail.id))

    async def dead_letter(self, mail: QueuedMail, words: str) -> None:
        """Kept in the outbox as given up, as a refused email is; `retry --mail` resends it."""
        await self.store.outbox.finish(mail.id, MailState.FAILED, now=self.clock.now(),
                                       error=f"internal error: {words}")

    async def _tell_admin(self, mail: QueuedMail, exc: DeliveryError) -> None:
        """A dead letter is kept, and a person hears of it, unless it was to that person."""
        if set(mail.recipients) == {self.alerter.admin}:
            return
        await self.alerter.alert("mail-undeliverable", said(
            "mail-undeliverable", to=", ".join(mail.recipients), message_id=mail.message_id,
            attempts=mail.attempts, error=exc, mail=mail.id))
