"""What every loopback simulator shares: one aiohttp app on 127.0.0.1, waits, tasks, pushes.

A test must be able to start a simulator, script it, wait for what it should see and stop it
without a sleep or a leaked task; that is the same for every provider, so it lives here once.
The small response helpers are shared too, because both providers answer errors the same way
when their documents are silent (an HTML error page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from aiohttp import web

HTTP_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def error_page(status: int) -> str:
    """The small HTML page a web server in front of an API answers errors with."""
    reason = HTTP_REASONS.get(status, "Error")
    return (
        f"<html><head><title>{status} {reason}</title></head>"
        f"<body><h1>{status} {reason}</h1></body></html>"
    )


def json_body(payload: Any) -> bytes:
    """Non-ASCII is written as raw UTF-8, not `\\u` escapes, so clients are tested against it."""
    return json.dumps(payload, ensure_ascii=False).encode()


def abort(request: web.BaseRequest) -> web.Response:
    """Drop the connection without answering (the client sees a reset or a disconnect).

    The returned response is never written: aiohttp finds the transport closing and gives up.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)


@dataclass(frozen=True)
class PushAttempt:
    """One attempt to deliver a push (a JSON array) to the receiver's URL.

    `status` is the receiver's HTTP status, or None when no HTTP answer came; then `error` is
    the exception class name (e.g. "ClientConnectorError", "TimeoutError", or "NoPushUrl" when
    `push_url` was None at that moment). `at` is event-loop time (monotonic seconds) when the
    attempt finished; `attempt` counts 1, 2, ... per body; `url` is where it went.
    """

    body: list[dict[str, Any]]
    status: int | None
    error: str | None
    at: float
    attempt: int
    url: str | None

    @property
    def acknowledged(self) -> bool:
        """The receiver answered 2xx, so the provider stops retrying this body."""
        return self.status is not None and 200 <= self.status < 300


class LoopbackServer:
    """Start/stop of one aiohttp app on 127.0.0.1, event-based waits, tracked background tasks.

    Subclasses implement `_make_app`. `pushes` and `_deliver` serve providers that push.
    """

    push_timeout: float = 5.0  # seconds allowed for one push attempt

    def __init__(
        self,
        *,
        push_url: str | None = None,
        push_retry_interval: float = 0.2,
        push_max_attempts: int = 100,
    ) -> None:
        self.push_url = push_url
        self.push_retry_interval = push_retry_interval
        self.push_max_attempts = push_max_attempts
        self.pushes: list[PushAttempt] = []
        self.background_errors: list[BaseException] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: set[asyncio.Event] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0: any free port; read it back from `port` / `url`)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._closing = False
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.push_timeout)
        )
        runner = web.AppRunner(self._make_app(), access_log=None, shutdown_timeout=2.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            self._session = None
            raise
        self._runner = runner
        self._host = host
        bound = runner.addresses[0]
        self._port = int(bound[1])

    async def stop(self) -> None:
        """Stop listening, drop stalled/paused calls, cancel pending pushes; idempotent."""
        self._closing = True
        self._changed()
        await self._cancel_tasks()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self._cancel_tasks()  # anything a finishing handler started meanwhile
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- waiting without polling ---------------------------------------------------------------

    def _changed(self) -> None:
        """Wake every `_wait_until` so it re-checks its predicate."""
        for event in self._waiters:
            event.set()

    async def _wait_until(
        self, predicate: Callable[[], bool], limit: float | None, what: Callable[[], str]
    ) -> None:
        """Return once `predicate()` holds; TimeoutError naming `what` after `limit` seconds."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(limit):
                while not predicate():
                    await event.wait()
                    event.clear()
        except TimeoutError:
            raise TimeoutError(f"{type(self).__name__}: {what()} after {limit} s") from None
        finally:
            self._waiters.discard(event)

    async def _sleep_unless_closing(self, seconds: float) -> bool:
        """Sleep `seconds`; return True early (and at once) if the simulator is stopping."""
        with contextlib.suppress(TimeoutError):
            await self._wait_until(lambda: self._closing, seconds, lambda: "stop")
        return self._closing

    async def wait_for_pushes_acknowledged(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` push attempts were answered 2xx."""
        await self._wait_until(
            lambda: self.pushes_acknowledged() >= n,
            timeout,
            lambda: f"{n} pushes acknowledged (have {self.pushes_acknowledged()})",
        )

    async def wait_for_push_attempts(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` push attempts finished, acknowledged or not."""
        await self._wait_until(
            lambda: len(self.pushes) >= n,
            timeout,
            lambda: f"{n} push attempts (have {len(self.pushes)})",
        )

    def pushes_acknowledged(self) -> int:
        return sum(1 for p in self.pushes if p.acknowledged)

    # -- background tasks ----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.background_errors.append(exc)
        self._changed()

    async def _cancel_tasks(self) -> None:
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- pushing -------------------------------------------------------------------------------

    async def _deliver(self, body: list[dict[str, Any]]) -> bool:
        """POST `body` to `push_url` until it is answered 2xx; False when attempts run out.

        `push_url` is read at every attempt, so a test may set it late or change it.
        """
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.push_max_attempts + 1):
            url = self.push_url
            status: int | None = None
            error: str | None = None
            if url is None:
                error = "NoPushUrl"
            elif self._session is None:
                error = "SimulatorStopped"
            else:
                try:
                    async with self._session.post(url, json=body) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    error = type(exc).__name__
            result = PushAttempt(body, status, error, loop.time(), attempt, url)
            self.pushes.append(result)
            self._changed()
            if result.acknowledged:
                return True
            if attempt < self.push_max_attempts:
                await asyncio.sleep(self.push_retry_interval)
        return False
