"""The SMTP side: who may send, to which numbers, and what is acknowledged when.

Everything that can be refused is refused during the dialogue, in words that end up in the
sender's bounce. `250` after DATA is answered only once the mail and its jobs are committed;
document conversion and the FaxMAX call happen later, so the answer comes fast and does not
depend on the provider.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge import documents, mime, replies
from bridge.clock import Clock
from bridge.config import SmtpSettings, SmtpUser, in_networks, parse_networks
from bridge.errors import NumberError, Refusal
from bridge.ingress.arrivals import Arrivals
from bridge.ingress.connections import Connections, SmtpServer
from bridge.ingress.data import Spool, read_data
from bridge.ingress.logins import Logins, LoginSMTP, address_key
from bridge.ingress.senders import header_from_refusal, log_tag, own_addresses, sender_allowed
from bridge.limits import (
    DAY,
    HOUR,
    FaxCaps,
    HourlyCapReached,
    PageCaps,
    Reservations,
    account,
    broken_cap,
    try_again,
    who,
)
from bridge.metrics import Metrics
from bridge.numbers import NumberPolicy, check_policy, parse_local_part
from bridge.options import Options, parse_tags, scheduled, split_tags
from bridge.replies import Line, render
from bridge.sandbox import Sandbox
from bridge.store import NewMessage, Store, is_disk_full

log = logging.getLogger(__name__)

SOURCE_ROUTE = re.compile(r"<\s*@[^>]*:")
# A mail up to this size is kept in its database row, durable with the commit that records it;
# a larger one goes to a spool file of its own (two more fsyncs, but no large blob in the WAL).
RAW_IN_ROW_BYTES = 1 << 20


class FaxSMTP(LoginSMTP):
    """aiosmtpd's protocol with connection caps, passwords checked off the event loop with a
    lock-out (`LoginSMTP`), and its two fixed size-limit replies reworded for people."""

    def __init__(self, handler: FaxHandler, connections: Connections, **kwargs: Any) -> None:
        self._reservations = handler.reservations  # before aiosmtpd's first state reset
        super().__init__(handler, **kwargs)
        self._connections = connections
        self._metrics = handler.metrics
        self._closing = False
        self._rcpts_in_mail = 0
        self._max_rcpts_in_mail = 10 * handler.settings.max_recipients
        self._fax_domain = handler.settings.domain
        self._spool_dir = handler.spool_dir
        self.spool: Spool | None = None  # the mail being received
        self._admitted: str | None = None
        self._turned_away = False
        limit = handler.settings.max_message_bytes
        size = f"{limit / 1e6:.0f} MB" if limit >= 1e6 else f"{limit / 1e3:.0f} KB"
        too_big = render(replies.TOO_BIG, size=size)
        self._rewrites = {
            "552 Error: message size exceeds fixed maximum message size": too_big,
            "552 Error: Too much mail data": too_big,
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and self._admitted is None:  # not the STARTTLS rerun
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else "?"
            refusal = self._connections.admit(ip, self)
            if refusal is not None:
                self._metrics.refused(refusal)
                log.warning("smtp %s: connection refused: %s", peer, refusal)
                self._turned_away = True
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._admitted = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return
        if self._admitted is not None:
            self._connections.release(self._admitted, self)
            self._admitted = None
        self._reservations.release(self)
        super().connection_lost(error)

    def _set_post_data_state(self) -> None:
        """aiosmtpd ends a transaction here (after DATA, on RSET, EHLO, STARTTLS): the
        recipients it held against the limits are given back; stored, its jobs count."""
        self._reservations.release(self)
        super()._set_post_data_state()  # type: ignore[no-untyped-call]

    def begin_shutdown(self) -> None:
        self._closing = True
        if self.envelope is None or self.envelope.mail_from is None:  # not inside a mail
            self.goodbye()

    def goodbye(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            reply = render(replies.SHUTTING_DOWN)
            self._metrics.refused(reply)
            self.transport.write(reply.encode() + b"\r\n")
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the mail in blocks into a `Spool` (see `data.py`)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.spool = Spool(self._spool_dir, RAW_IN_ROW_BYTES)
        try:
            refusal = await read_data(self._reader, self.spool,
                                      max_bytes=self.data_size_limit or 2**62,
                                      max_line=self.line_length_limit)
            if refusal is None and not self.spool.in_file:
                self.envelope.original_content = self.envelope.content = self.spool.content()
            status = refusal or await self._call_handler_hook("DATA")
        finally:
            self.spool.discard()  # unless the handler kept it
            self.spool = None
            # Whatever the answer, the transaction is over: after an exception too (answered
            # by `handle_exception`), or the client's next MAIL gets "503 nested MAIL".
            self._set_post_data_state()
        await self.push(status)
        if self._closing:  # this mail was the last one
            self.goodbye()

    async def smtp_RSET(self, arg: str) -> None:
        await super().smtp_RSET(arg)
        if self._closing:
            self.goodbye()

    async def smtp_MAIL(self, arg: str) -> None:
        self._rcpts_in_mail = 0
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        self._rcpts_in_mail += 1
        if self._rcpts_in_mail > self._max_rcpts_in_mail:  # a flood, not a mail
            await self.push(render(replies.RCPT_FLOOD, limit=self._max_rcpts_in_mail))
            assert self.transport is not None
            self.transport.close()
            return
        # aiosmtpd drops a source route (`<@a,@b:x@y>`) and unquotes quoted local parts
        # silently; a fax gateway refuses both, so only the plain form is ever accepted.
        if arg and SOURCE_ROUTE.search(arg):
            await self.push(render(replies.SOURCE_ROUTE, domain=self._fax_domain))
            return
        if arg and '"' in arg:  # aiosmtpd would unquote it before our handler sees it
            await self.push(render(replies.QUOTED_ADDRESS, domain=self._fax_domain))
            return
        await super().smtp_RCPT(arg)

    async def push(self, status: Any) -> None:
        """Every reply passes here: refusals are counted by reason for /metrics."""
        if isinstance(status, str):
            status = self._rewrites.get(status, status)
            if status[:1] in ("4", "5"):
                self._metrics.refused(status)
        await super().push(status)


class FaxHandler:
    """aiosmtpd handler hooks. `session.peer` and AUTH decide who may send; the recipient's
    local part decides where; the content decides what."""

    def __init__(
        self, settings: SmtpSettings, *, store: Store, clock: Clock, spool_dir: Path,
        number_policy: NumberPolicy, default_country_code: str, fax_caps: FaxCaps,
        page_caps: PageCaps, sandbox: Sandbox, on_queued: Callable[[], None],
        arrivals: Arrivals | None = None, metrics: Metrics | None = None, office: bool = False,
        max_schedule_days: int = 7, fax_body: bool = False, timezone: str = "UTC",
        document_limits: documents.Limits | None = None,
    ) -> None:
        self.timezone = timezone  # of the times a refusal says to try again after
        self.logins = Logins(clock, max_failures=settings.auth_max_failures,
                             window=settings.auth_lockout)
        self.office = office  # LibreOffice converts Office documents, HTML and text
        # the caps against bombs, before `250`
        self.document_limits = document_limits or documents.Limits()
        self.fax_body = fax_body  # and the text of a mail with nothing attached (bridge.body)
        self.max_schedule_days = max_schedule_days
        self.metrics = metrics or Metrics()
        self.arrivals = arrivals or Arrivals()
        self.page_caps = page_caps
        self.sandbox = sandbox
        self.settings = settings
        self.store = store
        self.clock = clock
        self.spool_dir = spool_dir
        self.number_policy = number_policy
        self.default_country_code = default_country_code
        self.fax_caps = fax_caps
        self.reservations = Reservations()
        self.on_queued = on_queued
        self.trusted = parse_networks(settings.trusted_networks, "smtp.trusted_networks")
        self.users = {u.name: u for u in settings.users}

    # --- AUTH ------------------------------------------------------------------------------

    async def authenticate(self, session: Session, mechanism: str,
                           auth_data: LoginPassword) -> AuthResult:
        """The password checked off the loop, in its address's turn (`Logins.check`); raises
        LockedOut when the address was locked out while it waited."""
        name = auth_data.login.decode("utf-8", "replace")
        user = self.users.get(name)
        key = address_key(session.peer)
        if not await self.logins.check(key, auth_data.password,
                                       user.password_hash if user is not None else None):
            # Never the field itself: it may hold a password typed in the wrong box.
            whom = (f"user {name}" if user is not None else
                    f"an unknown user name ({len(name)} characters, tag {log_tag(name)})")
            log.warning("smtp %s: failed AUTH %s for %s (%d of %d failures allowed from %s in "
                        "%g s)", session.peer, mechanism, whom, self.logins.failures(key),
                        self.logins.max_failures, key, self.logins.window)
            return AuthResult(success=False, handled=False)
        log.info("smtp %s: authenticated as %s", session.peer, name)
        return AuthResult(success=True, auth_data=user)

    # --- hooks -----------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        user = session.auth_data if session.authenticated else None
        if not user and self.settings.auth_required and not in_networks(session.peer,
                                                                         self.trusted):
            return render(replies.AUTH_REQUIRED)
        if address in ("", "<>"):  # aiosmtpd passes the null sender as "<>"
            return render(replies.NULL_SENDER)
        if isinstance(user, SmtpUser) and address.lower() not in {
                a.lower() for a in user.own_addresses}:
            return render(replies.NOT_THE_USERS_ADDRESS, address, user=user.name,
                          addresses=own_addresses(user))
        if not sender_allowed(address, self.settings.allowed_senders):
            return render(replies.SENDER_NOT_ALLOWED, address=address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.arrivals.note()  # a mail is on its way
        return render(replies.SENDER_OK)

    def _recipient(self, address: str) -> tuple[str, Options]:
        """The fax number of a recipient address and the options its tags choose
        (`bridge.options`); a Refusal (NumberError for the number) says why there is none."""
        local, at, domain = address.rpartition("@")
        if not at or domain.lower() != self.settings.domain.lower():
            raise NumberError(replies.RELAYING_DENIED, domain=self.settings.domain)
        written, tags = split_tags(local)
        number = parse_local_part(written, default_country_code=self.default_country_code)
        check_policy(number, self.number_policy)
        return number, parse_tags(tags, domain=self.settings.domain)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if envelope.mail_from is None:
            return render(replies.MAIL_FIRST)
        try:
            number, _ = self._recipient(address)
        except Refusal as exc:
            return render(exc.entry, address, **exc.slots)
        numbers = [self._recipient(a)[0] for a in envelope.rcpt_tos]
        if number in numbers:
            return render(replies.SAME_NUMBER, address)
        if len(numbers) >= self.settings.max_recipients:
            return render(replies.TOO_MANY_RECIPIENTS, limit=self.settings.max_recipients)
        key = self._account(session, envelope.mail_from)
        now = self.clock.now()
        used = await self.store.jobs.usage(key, hour_since=now - HOUR, day_since=now - DAY)
        # From here to `hold`, no await: what other sessions hold is read and added to at once.
        held = self.reservations  # this mail's earlier recipients among them
        if (mine := used.faxes_last_hour + held.of(key)) >= self.fax_caps.per_sender:
            return render(replies.HOURLY_LIMIT, sender=who(key), limit=self.fax_caps.per_sender,
                          **await self._when(key, "jobs", mine + 1 - self.fax_caps.per_sender))
        if (all_ := used.total_faxes_last_hour + held.total) >= self.fax_caps.total:
            return render(replies.GATEWAY_HOURLY_LIMIT, limit=self.fax_caps.total,
                          **await self._when(None, "jobs", all_ + 1 - self.fax_caps.total))
        broken = broken_cap(used, self.page_caps, pages=1)
        if broken == "per_sender":
            return render(replies.SENDER_PAGE_LIMIT, sender=who(key),
                          limit=self.page_caps.per_sender, **await self._when(
                              key, "pages", used.sender_pages + 1 - self.page_caps.per_sender))
        if broken == "total":
            return render(replies.GATEWAY_PAGE_LIMIT, **await self._when(
                None, "pages", used.total_pages + 1 - self.page_caps.total))
        held.hold(server, key)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return render(replies.RECIPIENT_OK, address, number=number)

    async def _when(self, key: str | None, counted: Literal["jobs", "pages"],
                    excess: int) -> dict[str, str]:
        """When a limit reached lets the next fax through, as a refusal says it: once
        `excess` of what `key` (None: the gateway) used leaves the window. When what is
        stored cannot free that much, faxes are held by mails still in the dialogue (those
        end, or are stored, within a minute as a rule), pages by a cap below one fax."""
        now = self.clock.now()
        at = await self.store.jobs.frees_at(key, counted, now=now, excess=excess)
        if at is None:
            at = now + (60 if counted == "jobs" else DAY)
        return try_again(at, now, self.timezone)

    def _account(self, session: Session, mail_from: str) -> str:
        """Whom the per-sender limits charge for this mail (`bridge.limits.account`)."""
        user = session.auth_data if session.authenticated else None
        return account(user=user.name if isinstance(user, SmtpUser) else None,
                       address=mail_from, allowed=self.settings.allowed_senders)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.arrivals.answering():  # conversions wait: a client waits for this answer
            return await self._accept(server, session, envelope)

    async def _accept(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, FaxSMTP) and server.spool is not None
        assert envelope.mail_from is not None
        spool = server.spool
        recipients = [(a, *self._recipient(a)) for a in envelope.rcpt_tos]
        try:
            # The mail is parsed in the sandbox, never in this process: a large one from its
            # spool file, a small one sent over.
            if spool.in_file:
                await spool.keep()
            raw = None if spool.in_file else envelope.original_content
            assert raw is None or isinstance(raw, bytes)
            stored: str | bytes = raw if raw is not None else str(spool.path)
            refusal = await self._inspect(session, envelope.mail_from, stored)
            if isinstance(refusal, Line):
                self._forget(spool)
                return refusal
            inspection = refusal
            now = self.clock.now()
            send_at = scheduled(inspection.options, now, max_days=self.max_schedule_days)
            key = self._account(session, envelope.mail_from)
            job_ids = await self.store.jobs.accept(
                NewMessage(mail_from=envelope.mail_from, header_from=inspection.header_from,
                           subject=inspection.subject, message_id=inspection.message_id,
                           refs=inspection.refs, left_out=inspection.left_out,
                           spool_path="" if spool.path is None else str(spool.path), raw=raw,
                           account=key, send_at=send_at,
                           needs_office=inspection.needs_office),
                [(a, n) for a, n, _ in recipients], now, hourly=self.fax_caps,
                options=[tags.over(inspection.options.options) for _, _, tags in recipients])
        except Refusal as too_far:  # X-Fax-Send-At beyond faxmax.max_schedule_days
            self._forget(spool)
            log.info("smtp %s: refused mail from %s: %s", session.peer, envelope.mail_from,
                     too_far.reply)
            return too_far.reply
        except HourlyCapReached as over:  # other mails were stored since this one's RCPT
            self._forget(spool)
            reply = self._over_hourly(over, key)
            log.info("smtp %s: refused mail from %s: %s", session.peer, envelope.mail_from,
                     reply)
            return reply
        except Exception as exc:
            self._forget(spool)
            if is_disk_full(exc):
                log.error("smtp %s: out of storage, mail from %s deferred: %s", session.peer,
                          envelope.mail_from, exc)
                return render(replies.OUT_OF_STORAGE)
            raise
        ids = ", ".join(str(i) for i in job_ids)
        log.info("smtp %s: mail from %s queued as fax jobs %s (%s)%s", session.peer,
                 envelope.mail_from, ids, ", ".join(f"+{n}" for _, n, _ in recipients),
                 f", scheduled for {inspection.options.send_at_text}" if send_at else "")
        self.on_queued()
        return render(replies.QUEUED, ids=ids)

    @staticmethod
    def _forget(spool: Spool) -> None:
        """A mail not acknowledged leaves nothing behind."""
        if spool.path is not None:
            spool.path.unlink(missing_ok=True)

    async def _inspect(
        self, session: Session, mail_from: str, stored: str | bytes
    ) -> mime.Inspection | Line:
        """The cheap checks, in the sandbox; a refusal (of the mail, or the sandbox's memory or
        time limit) comes back as the reply to send."""
        try:
            inspection = await self.sandbox.run(mime.inspect_stored, stored, self.office,
                                                self.fax_body, self.document_limits,
                                                what="the mail")
        except Refusal as refusal:
            reply = refusal.reply
        else:
            user = session.auth_data if session.authenticated else None
            found = header_from_refusal(inspection.from_mailboxes,
                                        user if isinstance(user, SmtpUser) else None,
                                        self.settings.allowed_senders)
            if found is None:
                return inspection
            reply = found
        log.info("smtp %s: refused mail from %s: %s", session.peer, mail_from, reply)
        return reply

    def _over_hourly(self, over: HourlyCapReached, key: str) -> Line:
        at = try_again(over.frees_at, self.clock.now(), self.timezone)
        if over.cap == "per_sender":
            return render(replies.HOURLY_LIMIT, sender=who(key), limit=self.fax_caps.per_sender,
                          **at)
        return render(replies.GATEWAY_HOURLY_LIMIT, limit=self.fax_caps.total, **at)

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp: internal error: %r", error, exc_info=error)
        return render(replies.OUT_OF_STORAGE if is_disk_full(error) else replies.INTERNAL_ERROR)


async def start_smtp_server(
    handler: FaxHandler, host: str, port: int, *, tls_context: Any = None
) -> SmtpServer:
    """SMTP on the application's own loop (never aiosmtpd's threaded Controller)."""
    loop = asyncio.get_running_loop()
    settings = handler.settings
    connections = Connections(settings.max_connections, settings.max_connections_per_client)
    # The name in the greeting. aiosmtpd would look it up for every connection, on the event
    # loop: a reverse DNS query that stalls every session whenever the resolver is slow.
    hostname = await asyncio.to_thread(socket.getfqdn)

    def factory() -> FaxSMTP:
        return FaxSMTP(
            handler, connections,
            data_size_limit=settings.max_message_bytes,
            enable_SMTPUTF8=False,
            decode_data=False,
            ident="fax-bridge",
            hostname=hostname,
            tls_context=tls_context,
            require_starttls=False,
            auth_required=False,  # enforced in handle_MAIL, which knows trusted networks
            auth_require_tls=True,
            timeout=settings.timeout,
            # Per session, and aiosmtpd never resets them: a relay in front (Postfix) sends
            # mail after mail on one connection, so the mail commands are capped per mail in
            # FaxSMTP.smtp_RCPT instead, and only the rest per session.
            command_call_limit={**dict.fromkeys(("MAIL", "RCPT", "DATA", "RSET"), 2**62),
                                "*": 100},
            loop=loop,
        )

    return SmtpServer(await loop.create_server(factory, host=host, port=port), connections)
