"""The SMTP listener's sessions: how many may be open, and how a shutdown lets them finish.

Apart from `bridge.ingress.smtp`, which holds what a session says; this holds how many there
are and when they must end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from bridge import replies
from bridge.replies import Line, render

if TYPE_CHECKING:
    from bridge.ingress.smtp import FaxSMTP

log = logging.getLogger("bridge.ingress.smtp")  # its lines are the SMTP side's, as before


class Connections:
    """The open SMTP sessions, capped in all and per client address (aiosmtpd has no cap of
    its own, and idle or trickling connections must not starve everyone else), and known one
    by one so that a shutdown can let each finish its mail."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: Counter[str] = Counter()
        self.sessions: set[FaxSMTP] = set()
        self.closing = False
        self.none_open = asyncio.Event()
        self.none_open.set()

    def admit(self, ip: str, session: FaxSMTP) -> Line | None:
        """None when the connection may proceed, else the reply to close it with."""
        if self.closing:
            return render(replies.SHUTTING_DOWN)
        if len(self.sessions) >= self.total:
            return render(replies.BUSY)
        if self.open[ip] >= self.per_client:
            return render(replies.TOO_MANY_CONNECTIONS, ip=ip, limit=self.per_client)
        self.open[ip] += 1
        self.sessions.add(session)
        self.none_open.clear()
        return None

    def release(self, ip: str, session: FaxSMTP) -> None:
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]
        self.sessions.discard(session)
        if not self.sessions:
            self.none_open.set()


class SmtpServer:
    """The listening socket and its sessions."""

    def __init__(self, server: asyncio.Server, connections: Connections) -> None:
        self.server = server
        self.connections = connections
        self.port: int = server.sockets[0].getsockname()[1]

    async def drain(self) -> None:
        """Stop accepting; idle sessions are closed with 421 at once, a session in the middle
        of a mail finishes it (its 250 means stored) and is closed after its reply."""
        self.connections.closing = True
        self.server.close()
        for session in list(self.connections.sessions):
            session.begin_shutdown()
        await self.connections.none_open.wait()

    def abort(self) -> None:
        """Past the shutdown deadline: drop what is left (nothing of it was acknowledged)."""
        for session in list(self.connections.sessions):
            log.warning("smtp %s: still sending a mail at the shutdown deadline; connection "
                        "closed, the client will send it again", session.session
                        and session.session.peer)
            session.goodbye()
