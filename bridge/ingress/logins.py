"""SMTP logins: passwords checked off the event loop, in turn, and a lock-out per address.

One scrypt check (`bridge.passwords`) costs some 70 ms of CPU. On the event loop, every AUTH
stalled every session and push for that long, and a client could guess as fast as it liked.

- **Off the loop, bounded.** Checks run in a pool of their own, `CHECKERS` thread(s) (hashlib
  releases the GIL while it hashes): however many clients guess, they keep at most that many
  cores busy, and the loop and the sandboxes keep the other one of the machine the figures in
  bench/RESULTS.md come from.
- **In turn, failures last.** A check waits for a free thread by how many failed logins its
  address had in the window, fewest first (then in order of arrival), and before them all an
  address that logged in within the window: a person logging in goes before every guesser
  that has failed, and a mail client that logs in now and then before every guesser at all,
  waiting at most for the checks already running. (A guesser's first try from a new address
  ties with a person's first login: only the number of addresses bounds those.) The wait
  holds no thread, only a coroutine. An address has one check at a time: twenty connections
  from one address cannot get twenty guesses in before the lock-out has counted the first.
- **Lock-out.** `max_failures` failed logins from one address within `window` seconds, and
  its next AUTH is answered `421 4.7.0`, with the time it may try again, and the connection
  closed, with no password checked, until the oldest of them leaves the window (a sliding
  window: at most `max_failures` guesses per `window` seconds). An IPv4 address counts on its
  own, an IPv6 one by its /64, the block one host or site is given: counted one by one, a
  single machine would have 2**64 of them. A successful login does not clear the count: a
  guesser with one account of its own could otherwise reset it between guesses.
- **Not at connect.** A locked-out address may still send what needs no login (a trusted
  network, a relay in front of the bridge): one guesser behind a shared address (a NAT,
  Postfix) must not stop everyone's mail.
- **In memory.** A restart forgets the counts: it gives an address at most `max_failures`
  more guesses, and a restart is an operator's act, not a client's. In the store, every failed
  login would be a write, and a guesser would keep the store's one writer thread busy. The
  memory is bounded by the checks themselves: an address keeps at most `max_failures` times
  and is forgotten once the newest leaves the window, and a thread checks about 14 passwords a
  second, so at most some 13,000 addresses are remembered at the default 900 s.

An unknown user name is checked against a hash that matches nothing, so that the time of the
answer does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import ipaddress
import itertools
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session

from bridge import replies
from bridge.clock import Clock
from bridge.limits import try_again
from bridge.passwords import N, P, R, verify_password
from bridge.replies import render

log = logging.getLogger(__name__)

CHECKERS = 1
# A well-formed hash of the same cost as a user's, which no password matches.
NO_USER = "$".join(("scrypt", str(N), str(R), str(P), base64.b64encode(bytes(16)).decode(),
                    base64.b64encode(bytes(32)).decode()))


class LockedOut(Exception):
    """The address has had too many failed logins; `until` (wall clock) it gets no check."""

    def __init__(self, key: str, until: float) -> None:
        super().__init__(f"{key} is locked out")
        self.key = key
        self.until = until


def address_key(peer: Any) -> str:
    """Whose failures a login counts under: the IPv4 address (an IPv4 client of a dual-stack
    listener too), or the /64 of an IPv6 address; the peer as written if it is neither."""
    try:
        ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
    except (ValueError, TypeError, IndexError):
        return str(peer)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        ip = ip.ipv4_mapped
    return str(ip)


class Logins:
    """The failed logins per address in the last `window` seconds, and the checks' turns."""

    def __init__(self, clock: Clock, *, max_failures: int, window: float) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        # Per address, its latest failures (monotonic), the address seen last at the end.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._logged_in: OrderedDict[str, float] = OrderedDict()  # latest success, likewise
        self._executor: ThreadPoolExecutor | None = None
        self._running = 0
        self._turns: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._arrivals = itertools.count()
        self._one_at_a_time: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()

    @property
    def waiting(self) -> int:
        """Checks waiting for a thread."""
        return sum(not future.done() for _, _, future in self._turns)

    def failures(self, key: str) -> int:
        """Failed logins from `key` within the window."""
        since = self.clock.monotonic() - self.window
        return sum(t > since for t in self._failures.get(key, ()))

    def admit(self, key: str) -> None:
        """Raises LockedOut while `key` has `max_failures` failures within the window."""
        times = self._failures.get(key)
        if times is None or len(times) < self.max_failures:
            return
        frees = times[0] + self.window  # the oldest of the last `max_failures` leaves then
        left = frees - self.clock.monotonic()
        if left > 0:
            raise LockedOut(key, self.clock.now() + left)

    async def check(self, key: str, password: bytes, encoded: str | None) -> bool:
        """Whether `password` matches `encoded` (None: no such user), checked in a thread in
        its address's turn; a mismatch counts against `key`, even when the client has gone
        away meanwhile (the thread was spent). Raises LockedOut when the address was locked
        out while this check waited."""
        lock = self._one_at_a_time.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                self.admit(key)
                await self._turn(self._priority(key))
                try:
                    self.admit(key)  # checks that ended while this one waited count
                except LockedOut:
                    self._next()
                    raise
                checking = asyncio.get_running_loop().run_in_executor(
                    self._pool(), verify_password, password, encoded or NO_USER)
                checking.add_done_callback(
                    lambda done: self._checked(key, done, known=encoded is not None))
                # Cancelled (the connection is lost), the check still ends before its
                # thread goes to the next one.
                return await asyncio.shield(checking) and encoded is not None
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._one_at_a_time[key]

    def _priority(self, key: str) -> int:
        """A check's place in the queue, lowest first: -1 for an address that logged in
        within the window, else its failures."""
        since = self.clock.monotonic() - self.window
        if self._logged_in.get(key, since) > since:
            return -1
        return self.failures(key)

    def _checked(self, key: str, done: asyncio.Future[bool], *, known: bool) -> None:
        if not done.cancelled() and done.exception() is None:
            if done.result() and known:
                self._logged_in.pop(key, None)
                self._logged_in[key] = self.clock.monotonic()
                self._forget(self._logged_in, lambda last: last)
            else:
                self._failed(key)
        self._next()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(CHECKERS, thread_name_prefix="password")
        return self._executor

    async def _turn(self, failures: int) -> None:
        """Wait for a free thread: the checks of addresses with fewer failures first."""
        if self._running < CHECKERS and not self.waiting:
            self._running += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._turns, (failures, next(self._arrivals), turn))
        try:
            await turn
        except asyncio.CancelledError:  # the connection went away while it waited
            if turn.done() and not turn.cancelled():
                self._next()  # it had been given the thread: pass it on
            raise

    def _next(self) -> None:
        """A check is done: its thread goes to the next in turn, if any waits."""
        while self._turns:
            _, _, turn = heapq.heappop(self._turns)
            if not turn.done():
                turn.set_result(None)
                return
        self._running -= 1

    def _failed(self, key: str) -> None:
        now = self.clock.monotonic()
        times = self._failures.pop(key, None) or deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[key] = times
        self._forget(self._failures, lambda times: times[-1])

    def _forget(self, seen: OrderedDict[str, Any], latest: Callable[[Any], float]) -> None:
        """Forget the addresses (seen last at the end) whose latest event left the window."""
        since = self.clock.monotonic() - self.window
        while seen and latest(next(iter(seen.values()))) <= since:
            seen.popitem(last=False)


class LoginHandler(Protocol):
    """What `LoginSMTP` needs of its handler (`bridge.ingress.smtp.FaxHandler`)."""

    logins: Logins
    clock: Clock
    timezone: str  # of the time a lock-out's reply names

    async def authenticate(self, session: Session, mechanism: str,
                           auth_data: LoginPassword) -> AuthResult: ...


class LoginSMTP(SMTP):
    """aiosmtpd's protocol with its AUTH PLAIN and LOGIN checked by `Logins`: aiosmtpd reads
    the credentials (its own dialogue, base64 and all) and would check them on the loop, in
    the synchronous `_authenticate` at the end of `auth_PLAIN` and `auth_LOGIN`; here that
    only keeps them, and the overridden `auth_*` await the check."""

    def __init__(self, handler: LoginHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._login_handler = handler
        self._credentials: tuple[str, LoginPassword] | None = None

    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH, once the address is not locked out; if it is, `421` and the
        connection closed, with no password read or checked."""
        assert self.session is not None
        try:
            self._login_handler.logins.admit(address_key(self.session.peer))
        except LockedOut as out:
            await self._lock_out(out)
            return
        await super().smtp_AUTH(arg)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        """aiosmtpd checks the credentials here, on the loop, at the end of its `auth_PLAIN`
        and `auth_LOGIN`; they are only kept, and checked off the loop (`_checked`)."""
        if isinstance(auth_data, LoginPassword):
            self._credentials = (mechanism, auth_data)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(_, args))

    async def _checked(self, read: AuthResult) -> AuthResult:
        """The answer to the credentials aiosmtpd read, or its own when it read none (bad
        base64, a client's `*`)."""
        credentials, self._credentials = self._credentials, None
        if credentials is None:
            return read
        assert self.session is not None
        try:
            return await self._login_handler.authenticate(self.session, *credentials)
        except LockedOut as out:
            await self._lock_out(out)
            return AuthResult(success=False, handled=True)

    async def _lock_out(self, out: LockedOut) -> None:
        reply = render(replies.AUTH_LOCKED_OUT, ip=out.key,
                       **try_again(out.until, self._login_handler.clock.now(),
                                   self._login_handler.timezone))
        log.warning("smtp %s: AUTH refused, connection closed: %s",
                    self.session.peer if self.session is not None else "?", reply)
        await self.push(reply)
        assert self.transport is not None
        self.transport.close()
