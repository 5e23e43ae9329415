"""Outgoing email: composing messages from templates, and delivering them.

Delivery is either an SMTP relay (aiosmtplib) or a Maildir on local disk. Both take the finished
bytes from the durable outbox, so what is delivered after a restart is exactly what was queued.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, BinaryIO, Literal

import aiosmtplib
import jinja2
from aiosmtplib import SMTPResponse, SMTPStatus
from aiosmtplib.typing import Default

from bridge.config import MailSettings
from bridge.errors import DeliveryOutcomeUnknown, DeliveryPermanentError, DeliveryTransientError
from bridge.files import atomic_path

BUILTIN_TEMPLATES = Path(__file__).parent / "templates"
WIRE = SMTP.clone(cte_type="7bit")
SOURCE_TEMPLATES = Path(__file__).parent.parent / "templates"


def builtin_templates_dir() -> Path:
    """Templates ship inside the wheel as `bridge/templates`; a source checkout has them at the
    top of the repository."""
    return BUILTIN_TEMPLATES if BUILTIN_TEMPLATES.is_dir() else SOURCE_TEMPLATES


class Templates:
    """Jinja templates, with the operator's `mail.templates_dir` taking precedence.

    A language other than English is looked for as `<language>/<name>`: the operator's, then
    the built-in one, then the English `<name>` (the operator's, then the built-in): a
    missing translation falls back to English, never to an error."""

    def __init__(self, override_dir: str = "") -> None:
        self.override_dir = override_dir
        search = [override_dir] if override_dir else []
        search.append(str(builtin_templates_dir()))
        self._loader = jinja2.FileSystemLoader(search)
        self._env = jinja2.Environment(
            loader=self._loader,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                                default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @staticmethod
    @functools.lru_cache(maxsize=4)
    def cached(override_dir: str) -> Templates:
        """One set per process, for the sandboxed children that render (a received fax's
        email, a cover page): Jinja compiles each template once, not once per job."""
        return Templates(override_dir)

    def render(self, name: str, context: Mapping[str, Any], language: str = "en") -> str:
        return self._template(name, language).render(**context)

    def _template(self, name: str, language: str) -> jinja2.Template:
        if language == "en":
            return self._env.get_template(name)
        return self._env.select_template([f"{language}/{name}", name])

    def filename(self, name: str, language: str = "en") -> str:
        """The file `name` is read from in `language`, the operator's override or the built-in
        one, so that an error can say which is wrong."""
        try:
            return self._template(name, language).filename or name
        except jinja2.TemplateError:
            return name


def one_line(text: str) -> str:
    """Header-safe text: provider or sender data may carry CR/LF, which must never reach a
    header (header injection)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def compose(
    templates: Templates,
    name: str,
    context: Mapping[str, Any],
    *,
    from_: str,
    to: tuple[str, ...],
    message_id: str,
    date: float,
    in_reply_to: str = "",
    references: str = "",
    auto_submitted: bool = True,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    inline: tuple[tuple[str, str, bytes], ...] = (),
    language: str = "en",
) -> EmailMessage:
    """A message from `<name>.subject.j2`, `<name>.txt.j2` and `<name>.html.j2`, in `language`
    (`Templates`).

    Bodies are 7-bit (quoted-printable or base64), so any relay can carry them, with or
    without 8BITMIME; non-ASCII headers and filenames use RFC 2047 / RFC 2231. `inline` are
    (Content-ID without brackets, mime type, data) pictures the HTML shows as `cid:...`: in a
    multipart/related with the HTML part, so that no mail reader fetches anything remote and
    one that shows only the text never sees them as attachments."""
    msg = EmailMessage(policy=WIRE)
    msg["Subject"] = one_line(templates.render(f"{name}.subject.j2", context, language))
    msg["From"] = from_
    msg["To"] = ", ".join(to)
    msg["Date"] = format_datetime(_utc(date))
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = one_line(in_reply_to)
        msg["References"] = one_line(f"{references} {in_reply_to}")
    if auto_submitted:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(templates.render(f"{name}.txt.j2", context, language))
    msg.add_alternative(templates.render(f"{name}.html.j2", context, language), subtype="html")
    if inline:
        html = msg.get_body(("html",))
        assert html is not None
        for cid, mimetype, data in inline:
            maintype, _, subtype = mimetype.partition("/")
            html.add_related(data, maintype=maintype, subtype=subtype, cid=f"<{cid}>",
                             disposition="inline")
    for filename, mimetype, data in attachments:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def as_bytes(msg: EmailMessage) -> bytes:
    """Wire form with CRLF everywhere: no bare LF ever reaches a relay."""
    return msg.as_bytes(policy=WIRE)


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    body: bytes


LOCAL_CHUNK = 1 << 20


def _write_local(body: bytes, out: BinaryIO) -> None:
    """`body` with local line ends, as Maildir readers expect them, a piece at a time: one
    `replace` over a 40 MB email (a received fax) held the interpreter, and so the event loop,
    for a third of a second, although it ran in a thread."""
    carry = b""
    for start in range(0, len(body), LOCAL_CHUNK):
        piece = carry + body[start:start + LOCAL_CHUNK]
        carry = b"\r" if piece.endswith(b"\r") else b""  # its "\n" may start the next piece
        out.write(piece[:len(piece) - len(carry)].replace(b"\r\n", b"\n"))
    out.write(carry)


class MaildirTransport:
    """Writes each message into `new/` of a Maildir, durably: a crash leaves either the whole
    message or nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._counter = 0

    def _write(self, body: bytes) -> Path:
        for sub in ("tmp", "new", "cur"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._counter}.{socket.gethostname()}"
        path = self.path / "new" / name
        with atomic_path(path, tmp_dir=self.path / "tmp") as tmp, tmp.open("wb") as out:
            _write_local(body, out)
        return path

    async def deliver(self, envelope: Envelope) -> str:
        try:
            path = await asyncio.to_thread(self._write, envelope.body)
        except OSError as exc:
            raise DeliveryTransientError(
                f"cannot write to the Maildir {self.path}: {exc.strerror}") from exc
        return f"written to {path}"


class _RelayClient(aiosmtplib.SMTP):
    """aiosmtplib's client, waiting for the answer to the final `.` apart from the commands'.

    RFC 5321 4.5.3.2.6 gives a relay 10 minutes to answer the final `.` (it may be queueing
    the mail durably), against minutes for a command. aiosmtplib waits for both with one
    timeout, and after it the mail may well be queued: that timeout, or a connection lost
    then, is `DeliveryOutcomeUnknown`, never a plain transient error."""

    def __init__(self, *, final_dot_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.final_dot_timeout = final_dot_timeout

    async def data(
        self, message: str | bytes, /, *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> SMTPResponse:
        body = message.encode("ascii") if isinstance(message, str) else message
        start = await self.execute_command(b"DATA", timeout=timeout)
        if start.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        if self.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.protocol.write(_dot_stuffed(body))
        try:
            answer = await self.protocol.read_response(timeout=self.final_dot_timeout)
        except aiosmtplib.SMTPTimeoutError as exc:
            self.close()
            raise DeliveryOutcomeUnknown(
                "the relay did not answer the end of the message within "
                f"{self.final_dot_timeout:g} s (mail.smtp_final_dot_timeout), so it may "
                "have taken it") from exc
        except aiosmtplib.SMTPServerDisconnected as exc:
            self.close()
            raise DeliveryOutcomeUnknown(
                "the relay closed the connection before it answered the end of the message, "
                "so it may have taken it") from exc
        if answer.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(answer.code, answer.message)
        return answer


def _dot_stuffed(body: bytes) -> bytes:
    """The DATA section for `body`: CRLF lines, a line starting with `.` doubled, the final
    `.` (RFC 5321 4.5.2), as aiosmtplib's own DATA sends it."""
    lines = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if lines and not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", lines) + b".\r\n"


class SmtpTransport:
    """Hands messages to an SMTP relay. 4xx and connection trouble are temporary; 5xx is not;
    no answer to the final `.` is an unknown outcome (`_RelayClient`)."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def deliver(self, envelope: Envelope) -> str:
        s = self.settings
        client = _RelayClient(
            hostname=s.smtp_host, port=s.smtp_port, timeout=s.smtp_timeout,
            final_dot_timeout=s.smtp_final_dot_timeout,
            username=s.smtp_username or None, password=s.smtp_password or None,
            use_tls=s.smtp_security == "tls", start_tls=s.smtp_security == "starttls",
            cert_bundle=s.smtp_ca_file or None,
        )
        try:
            # The low-level client, because `aiosmtplib.send` refuses the null sender that
            # reports are sent from.
            async with client:
                errors, reply = await client.sendmail(envelope.mail_from,
                                                      list(envelope.recipients), envelope.body)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(r.code >= 500 for r in exc.recipients)
            raise (DeliveryPermanentError if permanent else DeliveryTransientError)(
                "the relay refused the recipients: " + "; ".join(
                    f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise (DeliveryPermanentError if 500 <= exc.code < 600 else DeliveryTransientError)(
                f"the relay answered {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryTransientError(f"cannot reach the relay {s.smtp_host}:{s.smtp_port}: "
                                         f"{exc.__class__.__name__}: {exc}") from exc
        if errors:
            # Some recipients were refused, the rest accepted: retrying would duplicate the
            # accepted ones, so the message counts as sent and the refusals are logged.
            return f"relayed: {reply}; refused: " + "; ".join(
                f"{r}: {code} {text}" for r, (code, text) in errors.items())
        return f"relayed: {reply}"


Transport = MaildirTransport | SmtpTransport


def make_transport(settings: MailSettings, maildir: Path) -> Transport:
    if settings.transport == "smtp":
        return SmtpTransport(settings)
    return MaildirTransport(maildir)


def address_of(value: str) -> str:
    """The bare address in a "Name <addr>" string."""
    return parseaddr(value)[1]
