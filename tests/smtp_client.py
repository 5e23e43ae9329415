"""Speaking SMTP to the bridge as a mail client does, one mail at a time, keeping every reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib


@dataclass
class SmtpResult:
    mail: tuple[int, str]
    rcpts: list[tuple[int, str]]
    data: tuple[int, str] | None


async def smtp_send(
    port: int, message: bytes | EmailMessage, *, mail_from: str = "alice@example.com",
    rcpts: list[str] | None = None, mail_options: list[str] | None = None,
    before_data: Callable[[], Awaitable[object]] | None = None, encoding: str = "ascii",
) -> SmtpResult:
    """Speak SMTP the way a mail client does, and return every reply. `before_data` is
    awaited once every RCPT is answered (whatever the answers), before DATA: a test lines
    sessions up there, or changes the store between a mail's RCPT and its DATA. `encoding`
    writes the RCPT addresses (`utf-8`: as a client that ignores the missing SMTPUTF8 does)."""
    if isinstance(message, EmailMessage):
        message = message.as_bytes()
    rcpts = rcpts or ["02122222525@fax.local"]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await client.connect()
    try:
        await client.ehlo()
        try:
            r = await client.mail(mail_from, options=mail_options or [])
            mail = (r.code, r.message)
        except aiosmtplib.SMTPResponseException as exc:
            return SmtpResult((exc.code, exc.message), [], None)
        replies = []
        for rcpt in rcpts:
            try:
                r = await client.rcpt(rcpt, encoding=encoding)
                replies.append((r.code, r.message))
            except aiosmtplib.SMTPResponseException as exc:
                replies.append((exc.code, exc.message))
        if before_data is not None:
            await before_data()
        if not any(code == 250 for code, _ in replies):
            return SmtpResult(mail, replies, None)
        try:
            r = await client.data(message)
            data = (r.code, r.message)
        except aiosmtplib.SMTPResponseException as exc:
            data = (exc.code, exc.message)
        return SmtpResult(mail, replies, data)
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
