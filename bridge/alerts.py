"""Operational alerts to `routing.admin`: one email per cause per hour, the next one counting
what was held back, so a provider failing every minute yields one alert, not sixty."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Protocol

from bridge.alert_texts import Said
from bridge.clock import Clock
from bridge.config import Settings
from bridge.mail import Templates, as_bytes, compose
from bridge.store import OutgoingMail, Store

log = logging.getLogger(__name__)

WINDOW = 3600.0


class Alert(Protocol):
    """What raises an alert: `Alerter.alert`, or a test's stand-in."""

    async def __call__(self, cause: str, text: Said) -> None: ...


class Alerter:
    def __init__(self, store: Store, clock: Clock, settings: Settings, templates: Templates, *,
                 on_enqueued: Callable[[], None]) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.templates = templates
        self.on_enqueued = on_enqueued

    @property
    def admin(self) -> str:
        return self.settings.routing.admin

    async def alert(self, cause: str, text: Said) -> None:
        """Log the event (in English), and email the admin, in the admin's language
        (`mail.language`), unless this cause was mailed within the hour."""
        log.warning("alert %s: %s", cause, text.summary())
        admin = self.settings.routing.admin
        lang = self.settings.mail.language
        home = self.settings.numbers.default_country_code

        def render(sent_before: int, suppressed: int) -> OutgoingMail | None:
            if not admin:
                return None
            digest = hashlib.sha256(cause.encode()).hexdigest()[:16]
            domain = self.settings.mail_domain
            message_id = (f"<fax-bridge.{self.store.installation}.alert.{digest}."
                          f"{sent_before + 1}@{domain}>")
            msg = compose(self.templates, "alert",
                          {"summary": text.summary(lang, home), "details": text.details(lang, home),
                           "suppressed": suppressed,
                           "cause": cause},
                          from_=self.settings.mail.from_, to=(admin,), message_id=message_id,
                          date=self.clock.now(), language=lang)
            return OutgoingMail(message_id=message_id, mail_from="", recipients=(admin,),
                                body=as_bytes(msg))

        if await self.store.outbox.throttle_alert(cause, self.clock.now(), WINDOW, render):
            self.on_enqueued()
