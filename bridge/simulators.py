"""Loopback simulators of the fax providers, for the tests and for `fax-bridge demo`.

Each simulator is a small aiohttp server on 127.0.0.1 that behaves as the provider documentation
(`/work/shared/provider-docs/`) says, records what it was sent, and can be scripted to misbehave.
It is the reference the bridge's provider clients are tested against: strict where the documents
are clear, tolerant where they contradict themselves.

Shared machinery lives in `_LoopbackServer` (start/stop, event-based waiting, background tasks,
one owned `aiohttp.ClientSession`) and in the module-level helpers; each provider is one subclass.

FaxMAX (`FaxMaxSimulator`)
    `POST /api/v1`, multipart/form-data with a `fax_file` part (with a filename) and a `data`
    part holding a JSON-RPC 2.0 request for `Fax.send_fax`. Errors are answered with HTTP 200 and
    a JSON-RPC `error` object (the real error shapes are not documented; these are our choice):

    ======  ==================================================================================
    code    when
    ======  ==================================================================================
    -32700  the `data` part is not valid JSON (or not UTF-8)
    -32600  not multipart/form-data, a part missing, `fax_file` without filename or empty,
            not a JSON-RPC 2.0 request object (`jsonrpc` != "2.0", no `id`, no `method`)
    -32601  `method` is not `Fax.send_fax`
    401     no valid `token` / `token_` and no valid `username` + `password`
            (`token` and `token_` both present but different is also 401)
    -32602  `params` not an object, `phones` missing/empty/ill-typed, bad `paper_size`,
            `resolution`, `cli`, `cover_html`, `phone_books` or `contacts`
    ======  ==================================================================================

    Accepted numbers each become one fax (a uuid4 `fax_id`) whose status is then pushed to
    `push_url` as a JSON array, retried until answered 2xx, as the documentation says. A fax
    accepted while `push_url` is None gets no pushes (an account without fax_notification_url).
    Push times are written in `tz` (default Turkey time, UTC+3; the documents name no zone).
    `incoming_event` / `push_incoming` build and push an `INCOMING_FAX` event (base64 TIFF).

秒速FAX Plus (`ByosokuSimulator`)
    The receive side, polled. `GET`/`POST /receive/log` (no parameters) answers the latest 50
    received faxes, newest first; `GET ?pdfId=` / `POST` form field `pdfId` on `/receive/pdf`
    answers the PDF. Calls of each kind must be `log_interval` (60 s) / `pdf_interval` (1 s)
    apart, measured on the injected clock from the previous answered call's response; an early
    call gets 400 `ERR_ACCESS_INTERVAL`, is counted in `violations`, and does not restart the
    interval. A call arriving while another of its kind is still being answered is early too.
    Error bodies are `{"status": 1, "ErrorMsg": "..."}`; 403/404 faults are HTML pages.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import io
import json
import re
import secrets
import struct
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Literal, Self

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from pypdf import PdfWriter

from bridge.clock import Clock, SystemClock

__all__ = [
    "JAPAN_TIME",
    "AcceptedFax",
    "ByosokuFault",
    "ByosokuFaultKind",
    "ByosokuSimulator",
    "Fault",
    "FaultKind",
    "FaxMaxSimulator",
    "PushAttempt",
    "SendRequest",
    "count_pdf_pages",
    "count_tiff_pages",
    "format_provider_time",
]

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

TURKEY_TIME = timezone(timedelta(hours=3), "TRT")
"""FaxMAX's documents give no zone for their times; Turkey has been fixed UTC+3 since 2016."""

_PAGE_RE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def count_pdf_pages(document: bytes) -> int:
    """Count `/Type /Page` objects (not `/Pages`): cheap, good enough for a simulator."""
    return len(_PAGE_RE.findall(document))


def _japan_time() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Asia/Tokyo")
    except (ImportError, LookupError, OSError, ValueError):  # no tz database: Japan has no DST
        return timezone(timedelta(hours=9), "JST")


JAPAN_TIME = _japan_time()
"""秒速FAX Plus's documents give no zone for `receiveDate`; Japan time is assumed."""


def count_tiff_pages(document: bytes) -> int:
    """Count a TIFF's IFDs by walking the next-IFD offsets; 1 when it is not a readable TIFF.

    Cheap and defensive: stops at a loop, a truncated IFD or an offset past the end.
    """
    if document[:4] == b"II*\x00":
        order = "<"
    elif document[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    (offset,) = struct.unpack_from(order + "I", document, 4) if len(document) >= 8 else (0,)
    seen: set[int] = set()
    count = 0
    while offset and offset not in seen and offset + 2 <= len(document):
        seen.add(offset)
        (entries,) = struct.unpack_from(order + "H", document, offset)
        end = offset + 2 + 12 * entries
        if end + 4 > len(document):
            break  # truncated IFD: not a page we could read
        count += 1
        (offset,) = struct.unpack_from(order + "I", document, end)
    return count or 1


def format_provider_time(moment: datetime) -> str:
    """Times as both providers write them: `YYYY-MM-DD HH:MM:SS`, no zone."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _abort(request: web.BaseRequest) -> web.Response:
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


class _LoopbackServer:
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


# ---------------------------------------------------------------------------------------------
# FaxMAX
# ---------------------------------------------------------------------------------------------

FaultKind = Literal[
    "http", "jsonrpc_error", "malformed_json", "stall", "reset", "refuse_before_reading"
]


@dataclass(frozen=True)
class Fault:
    """Scripted misbehaviour for one send call; put them in `FaxMaxSimulator.faults`.

    Whether the call "took effect" (the fax is queued and will be pushed):

    - `http`, `jsonrpc_error`: no. The request is read and recorded, then answered with the fault.
    - `malformed_json`: only if made with `took_effect=True` (default: no).
    - `stall`, `reset`: yes. Recorded (response None), faxes queued, pushes scheduled, then the
      answer is delayed / the connection is aborted.
    - `refuse_before_reading`: no, and the request is not recorded at all.
    """

    kind: FaultKind
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    code: int = 0
    message: str = ""
    seconds: float = 0.0
    took_effect: bool = False

    @classmethod
    def http(cls, status: int, body: str = "", content_type: str = "text/html") -> Fault:
        """Answer with this HTTP status and body (default: a small HTML error page)."""
        if not body and content_type == "text/html":
            reason = _HTTP_REASONS.get(status, "Error")
            body = (
                f"<html><head><title>{status} {reason}</title></head>"
                f"<body><h1>{status} {reason}</h1></body></html>"
            )
        return cls("http", status=status, body=body, content_type=content_type)

    @classmethod
    def jsonrpc_error(cls, code: int, message: str) -> Fault:
        """HTTP 200 with a JSON-RPC `error` object carrying this code and message."""
        return cls("jsonrpc_error", code=code, message=message)

    @classmethod
    def malformed_json(cls, *, took_effect: bool = False) -> Fault:
        """HTTP 200, `application/json`, with the answer cut off halfway."""
        return cls("malformed_json", took_effect=took_effect)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Take effect, then wait `seconds` before answering normally."""
        return cls("stall", seconds=seconds, took_effect=True)

    @classmethod
    def reset(cls) -> Fault:
        """Take effect, then abort the connection without answering."""
        return cls("reset", took_effect=True)

    @classmethod
    def refuse_before_reading(cls) -> Fault:
        """Abort the connection before reading the body: nothing took effect."""
        return cls("refuse_before_reading")


_HTTP_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class AcceptedFax:
    """One fax FaxMAX accepted (one per accepted number of a send call)."""

    fax_id: str
    phone: str
    api_id: Any
    request_id: str
    cli: str
    pages: int
    requested_on: datetime


@dataclass(frozen=True)
class SendRequest:
    """One POST to the send endpoint whose body was read."""

    data: dict[str, Any]  # the parsed JSON-RPC request from `data` ({} if absent or not an object)
    filename: str  # fax_file part filename ("" if absent)
    content_type: str  # fax_file part Content-Type ("" if absent)
    document: bytes  # fax_file bytes
    headers: Mapping[str, str]
    # What was answered, when it was a well-formed JSON-RPC answer (result or error).
    # None when the simulator stalled, reset, answered an HTTP fault or malformed JSON.
    response: dict[str, Any] | None
    fault: Fault | None = None  # the fault applied to this call, if any
    accepted: tuple[AcceptedFax, ...] = ()  # faxes that took effect because of this call


@dataclass
class _Form:
    """What the multipart body held."""

    problem: str = ""  # transport-level problem, answered -32600
    data_bytes: bytes | None = None
    filename: str = ""
    content_type: str = ""
    document: bytes = b""
    has_file: bool = False


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
AUTH_ERROR = 401

_PAPER_SIZES = frozenset({"A4", "letter", "legal"})
# The original spells it "süperfine"; the translation says send "superfine". Accept both.
_RESOLUTIONS = frozenset({"normal", "fine", "superfine", "süperfine"})
_DIGITS = re.compile(r"[0-9]+")
# Statuses that are not a dialling attempt (for tried_on / tried_count / remote details).
_NOT_TRIED = frozenset({"QUEUED", "PENDING", "WAITING", "SCHEDULED"})


def _rpc_error(rpc_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}}


def _json_body(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


class FaxMaxSimulator(_LoopbackServer):
    """FaxMAX's send API (`POST /api/v1`) plus its status pushes, on loopback."""

    def __init__(
        self,
        *,
        token: str = "sim-token",
        username: str = "",
        password: str = "",
        push_url: str | None = None,
        push_delay: float = 0.05,
        push_retry_interval: float = 0.2,
        push_max_attempts: int = 100,
        final_status: str = "SUCCESS",
    ) -> None:
        super().__init__(
            push_url=push_url,
            push_retry_interval=push_retry_interval,
            push_max_attempts=push_max_attempts,
        )
        self.token = token
        self.username = username  # "" disables username + password login
        self.password = password
        self.push_delay = push_delay
        self.final_status = final_status
        self.account_id = 1001
        self.account_name = "fax-bridge simulator"
        self.tz: tzinfo = TURKEY_TIME
        self.requests: list[SendRequest] = []
        self.faults: collections.deque[Fault] = collections.deque()
        self.rejected_numbers: set[str] = set()
        self.statuses: dict[str, list[str]] = {}
        self.result_messages: dict[str, str] = {}
        self.push_before_response = False
        self.faxes: list[AcceptedFax] = []  # every fax that took effect, in order
        self.calls = 0  # send calls that reached the handler (including refused ones)
        self.paused_calls = 0  # send calls currently held by pause()
        self._paused = False

    # -- public surface ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The send endpoint (POST)."""
        return f"{self.base_url}/api/v1"

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        self._changed()

    def pause(self) -> None:
        """Hold every send call (unanswered, body unread, nothing recorded) until `resume()`."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def sent_numbers(self) -> list[str]:
        """Phones of every fax that took effect, in order (for "sent exactly once" checks)."""
        return [fax.phone for fax in self.faxes]

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` requests are recorded."""
        await self._wait_until(
            lambda: len(self.requests) >= n,
            timeout,
            lambda: f"{n} requests (have {len(self.requests)})",
        )

    async def wait_for_calls(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` send calls reached the handler (recorded or not)."""
        await self._wait_until(
            lambda: self.calls >= n, timeout, lambda: f"{n} calls (have {self.calls})"
        )

    async def wait_for_paused_calls(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` send calls are being held by `pause()`."""
        await self._wait_until(
            lambda: self.paused_calls >= n,
            timeout,
            lambda: f"{n} paused calls (have {self.paused_calls})",
        )

    async def push_events(self, events: list[dict[str, Any]]) -> None:
        """Push an arbitrary JSON array to `push_url`, retrying until 2xx like the real thing.

        Returns when it was acknowledged or the attempts ran out (see `pushes`). The delivery
        is a tracked background task: if the caller is cancelled it goes on until `stop()`.
        """
        if self._session is None:
            raise RuntimeError("simulator not started")
        await asyncio.shield(self._spawn(self._deliver(list(events))))

    def incoming_event(
        self,
        *,
        tiff: bytes,
        cld: str,
        cli: str = "",
        pages: int | None = None,
        fax_id: str | None = None,
        remote_station_id: str = "",
        status: str = "SUCCESS",
    ) -> dict[str, Any]:
        """An `INCOMING_FAX` push event with the documented fields; `content` is base64 TIFF.

        `cld` is our receiving number (international digits), `cli` the sender ("" when
        withheld). `pages` defaults to the TIFF's IFD count (1 if unreadable). Every value,
        `remote_station_id` (the sender's TSI) included, is passed through verbatim.
        """
        page_count = count_tiff_pages(tiff) if pages is None else pages
        success = status == "SUCCESS"
        return {
            "type": "INCOMING_FAX",
            "id": fax_id if fax_id is not None else str(uuid.uuid4()),
            "account_id": self.account_id,
            "account_name": self.account_name,
            "cli": cli,
            "cld": cld,
            "status": status,
            "requested_on": format_provider_time(datetime.now(self.tz)),
            "result_message": "Fax received" if success else "Fax could not be received",
            "page_count": page_count,
            "total_page_count": page_count,
            "ecm_used": True,
            "has_t38": False,
            "remote_station_id": remote_station_id,
            "fax_encoding": "MMR",
            "transfer_rate": 14400,
            "content": base64.b64encode(tiff).decode("ascii"),
        }

    async def push_incoming(
        self,
        *,
        tiff: bytes,
        cld: str,
        cli: str = "",
        pages: int | None = None,
        fax_id: str | None = None,
        remote_station_id: str = "",
        status: str = "SUCCESS",
    ) -> dict[str, Any]:
        """Build `incoming_event(...)`, push `[event]` (retried until 2xx), return the event."""
        event = self.incoming_event(
            tiff=tiff,
            cld=cld,
            cli=cli,
            pages=pages,
            fax_id=fax_id,
            remote_station_id=remote_station_id,
            status=status,
        )
        await self.push_events([event])
        return event

    # -- HTTP ----------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v1", self._handle_send)
        return app

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self._changed()
        if self._paused:
            self.paused_calls += 1
            self._changed()
            try:
                await self._wait_until(
                    lambda: not self._paused or self._closing, None, lambda: "resume"
                )
            finally:
                self.paused_calls -= 1
        if self._closing:
            return _abort(request)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "refuse_before_reading":
            return _abort(request)

        try:
            form = await _read_form(request)
        except (ConnectionError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError):
            return _abort(request)  # the client went away mid-body: nothing took effect
        data, rpc_id, response, faxes = self._evaluate(form)

        takes_effect = fault is None or fault.took_effect
        accepted = tuple(faxes) if takes_effect else ()
        recorded: dict[str, Any] | None
        if fault is None:
            recorded = response
        elif fault.kind == "jsonrpc_error":
            recorded = _rpc_error(rpc_id, fault.code, fault.message)
        else:
            recorded = None
        self.faxes.extend(accepted)
        self.requests.append(
            SendRequest(
                data=data,
                filename=form.filename,
                content_type=form.content_type,
                document=form.document,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                response=recorded,
                fault=fault,
                accepted=accepted,
            )
        )
        self._changed()

        push_tasks = [self._spawn(self._push_fax(fax)) for fax in accepted]
        if push_tasks and self.push_before_response:
            await asyncio.wait(push_tasks)

        if fault is None:
            return web.Response(body=_json_body(response), content_type="application/json")
        if fault.kind == "http":
            return web.Response(
                status=fault.status, body=fault.body.encode(), content_type=fault.content_type
            )
        if fault.kind == "jsonrpc_error":
            return web.Response(body=_json_body(recorded), content_type="application/json")
        if fault.kind == "malformed_json":
            text = _json_body(response)
            return web.Response(body=text[: len(text) // 2], content_type="application/json")
        if fault.kind == "stall":
            if await self._sleep_unless_closing(fault.seconds):
                return _abort(request)
            return web.Response(body=_json_body(response), content_type="application/json")
        return _abort(request)  # reset

    # -- the API's rules -----------------------------------------------------------------------

    def _evaluate(
        self, form: _Form
    ) -> tuple[dict[str, Any], Any, dict[str, Any], list[AcceptedFax]]:
        """(request data for the record, JSON-RPC id, answer, faxes to queue if it takes effect)."""
        data: dict[str, Any] = {}
        rpc_id: Any = None
        try:
            if form.problem and form.data_bytes is None:
                raise _RpcError(INVALID_REQUEST, form.problem)
            if form.data_bytes is None:
                raise _RpcError(INVALID_REQUEST, "Invalid Request: missing data part")
            try:
                parsed = json.loads(form.data_bytes.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise _RpcError(PARSE_ERROR, "Parse error") from None
            if not isinstance(parsed, dict):
                raise _RpcError(INVALID_REQUEST, "Invalid Request: not a JSON object")
            data = parsed
            if "id" in data and _valid_id(data["id"]):
                rpc_id = data["id"]
            answer, faxes = self._send_fax(data, form)
            return data, rpc_id, {"id": rpc_id, "jsonrpc": "2.0", "result": answer}, faxes
        except _RpcError as exc:
            return data, rpc_id, _rpc_error(rpc_id, exc.code, exc.message), []

    def _send_fax(
        self, data: dict[str, Any], form: _Form
    ) -> tuple[dict[str, Any], list[AcceptedFax]]:
        if data.get("jsonrpc") != "2.0":
            raise _RpcError(INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"')
        if "id" not in data or not _valid_id(data["id"]):
            raise _RpcError(INVALID_REQUEST, "Invalid Request: id missing or invalid")
        method = data.get("method")
        if not isinstance(method, str):
            raise _RpcError(INVALID_REQUEST, "Invalid Request: method missing")
        if method != "Fax.send_fax":
            raise _RpcError(METHOD_NOT_FOUND, "Method not found")
        if form.problem:
            raise _RpcError(INVALID_REQUEST, form.problem)
        if not form.has_file:
            raise _RpcError(INVALID_REQUEST, "Invalid Request: missing fax_file part")
        if not form.filename:
            raise _RpcError(INVALID_REQUEST, "Invalid Request: fax_file must have a filename")
        if not form.document:
            raise _RpcError(INVALID_REQUEST, "Invalid Request: fax_file is empty")
        params = data.get("params")
        if not isinstance(params, dict):
            raise _RpcError(INVALID_PARAMS, "Invalid params: params must be an object")
        self._authenticate(params)
        targets = _parse_phones(params.get("phones"))
        cli = _optional_str(params, "cli")
        cover_html = _optional_str(params, "cover_html")
        paper_size = _optional_str(params, "paper_size")
        if paper_size and paper_size not in _PAPER_SIZES:
            raise _RpcError(INVALID_PARAMS, f"Invalid params: paper_size {paper_size!r}")
        resolution = _optional_str(params, "resolution")
        if resolution and resolution not in _RESOLUTIONS:
            raise _RpcError(INVALID_PARAMS, f"Invalid params: resolution {resolution!r}")
        for key in ("phone_books", "contacts"):
            value = params.get(key)
            if value is not None and not _str_or_str_list(value):
                raise _RpcError(INVALID_PARAMS, f"Invalid params: {key} must be string(s)")

        request_id = str(uuid.uuid4())
        now = datetime.now(self.tz).replace(microsecond=0)
        pages = count_pdf_pages(form.document) + (1 if cover_html else 0)
        accepted: list[AcceptedFax] = []
        rejected: list[dict[str, Any]] = []
        for phone, api_id in targets:
            if not _DIGITS.fullmatch(phone):
                rejected.append({"phone": phone, "api_id": api_id, "message": "Invalid number"})
            elif phone in self.rejected_numbers:
                rejected.append({"phone": phone, "api_id": api_id, "message": "Number rejected"})
            else:
                fax_id = str(uuid.uuid4())
                accepted.append(AcceptedFax(fax_id, phone, api_id, request_id, cli, pages, now))
        answer = {
            "message": {
                "data": {
                    "count": len(accepted),
                    "phones": [{"api_id": f.api_id, "fax_id": f.fax_id} for f in accepted],
                    "rejected": rejected,
                    "request_id": request_id,
                }
            }
        }
        return answer, accepted

    def _authenticate(self, params: dict[str, Any]) -> None:
        tokens = [params[k] for k in ("token", "token_") if k in params]
        if len(tokens) == 2 and tokens[0] != tokens[1]:
            raise _RpcError(AUTH_ERROR, "Invalid token: token and token_ differ")
        if tokens and isinstance(tokens[0], str) and tokens[0] and tokens[0] == self.token:
            return
        username, password = params.get("username"), params.get("password")
        if username is not None or password is not None:
            if self.username and username == self.username and password == self.password:
                return
            if not tokens:
                raise _RpcError(AUTH_ERROR, "Invalid username or password")
        raise _RpcError(AUTH_ERROR, "Invalid token")

    # -- pushes --------------------------------------------------------------------------------

    async def _push_fax(self, fax: AcceptedFax) -> None:
        """One push per status in the fax's sequence, each after `push_delay`, each retried."""
        if self.push_url is None:
            return  # no fax_notification_url on the account: FaxMAX pushes nothing
        sequence = list(self.statuses.get(fax.phone, [self.final_status]))
        tried = 0
        for index, status in enumerate(sequence):
            await asyncio.sleep(self.push_delay)
            final = index == len(sequence) - 1
            if status not in _NOT_TRIED:
                tried += 1
            event = self._outgoing_event(fax, status, final=final, tried=tried)
            await self._deliver([event])

    def _outgoing_event(
        self, fax: AcceptedFax, status: str, *, final: bool, tried: int
    ) -> dict[str, Any]:
        now = format_provider_time(datetime.now(self.tz))
        attempted = status not in _NOT_TRIED
        success = status == "SUCCESS"
        if final:
            default = "Fax delivered" if success else "Fax could not be delivered"
            message = self.result_messages.get(fax.phone, default)
        else:
            message = ""
        return {
            "type": "OUTGOING_FAX",
            "id": fax.fax_id,
            "account_id": self.account_id,
            "account_name": self.account_name,
            "cli": fax.cli,
            "cld": fax.phone,
            "status": status,
            "requested_on": format_provider_time(fax.requested_on),
            "result_message": message,
            "page_count": fax.pages if success else 0,
            "total_page_count": fax.pages,
            "ecm_used": attempted,
            "has_t38": False,
            "remote_station_id": "SIM REMOTE" if attempted else "",
            "fax_encoding": "MMR" if attempted else "",
            "transfer_rate": 14400 if attempted else 0,
            "sent_on": now if success else "",
            "queued_on": format_provider_time(fax.requested_on),
            "tried_on": now if attempted else "",
            "tried_count": tried,
        }


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


def _optional_str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _RpcError(INVALID_PARAMS, f"Invalid params: {key} must be a string")
    return value


def _str_or_str_list(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )


def _parse_phones(value: Any) -> list[tuple[str, Any]]:
    """`phones` as (phone, api_id): a string, a list of strings, or a list of objects."""
    if value is None or value == "" or value == []:
        raise _RpcError(INVALID_PARAMS, "Invalid params: phones is required")
    items: Iterable[Any] = [value] if isinstance(value, str) else value
    if not isinstance(value, str | list):
        raise _RpcError(INVALID_PARAMS, "Invalid params: phones must be a string or a list")
    targets: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            targets.append((item, None))
        elif isinstance(item, dict) and isinstance(item.get("phone"), str):
            targets.append((item["phone"], item.get("api_id")))
        else:
            raise _RpcError(
                INVALID_PARAMS, 'Invalid params: each phone is a string or {"phone": "..."}'
            )
    return targets


async def _read_form(request: web.Request) -> _Form:
    """Read the multipart body into a `_Form`; format problems go into `problem`."""
    form = _Form()
    if request.content_type != "multipart/form-data":
        await request.read()
        form.problem = "Invalid Request: multipart/form-data expected"
        return form
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                await part.release()
                continue
            content = bytes(await part.read(decode=True))
            if part.name == "data" and form.data_bytes is None:
                form.data_bytes = content
            elif part.name == "fax_file" and not form.has_file:
                form.has_file = True
                form.filename = part.filename or ""
                form.content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE, "")
                form.document = content
            # other parts are ignored, as an unknown form field would be
    except (ValueError, AssertionError, RuntimeError, KeyError) as exc:
        form.problem = f"Invalid Request: bad multipart body ({type(exc).__name__})"
    return form


# ---------------------------------------------------------------------------------------------
# 秒速FAX Plus
# ---------------------------------------------------------------------------------------------

ByosokuFaultKind = Literal["error", "stall", "garbage"]


@dataclass(frozen=True)
class ByosokuFault:
    """Scripted answer for one 秒速FAX call; put them in `log_faults` / `pdf_faults`.

    Consumed one per call that passed the interval check (an early call is answered
    `ERR_ACCESS_INTERVAL` and leaves the queue alone). A faulted call is a call the provider
    saw: its response time is the reference for the next call's interval.
    """

    kind: ByosokuFaultKind
    http_status: int = 200
    error_msg: str | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, http_status: int, error_msg: str | None = None) -> ByosokuFault:
        """`{"status": 1, "ErrorMsg": error_msg}` with this status; None: an HTML error page
        (what the 403 "IP not registered" and 404 "wrong URL" answers carry)."""
        return cls("error", http_status=http_status, error_msg=error_msg)

    @classmethod
    def stall(cls, seconds: float) -> ByosokuFault:
        """Wait `seconds` (real time), then answer normally."""
        return cls("stall", seconds=seconds)

    @classmethod
    def garbage(cls) -> ByosokuFault:
        """HTTP 200 with a body that is not what it claims: cut-off JSON labelled
        `application/json` for the log, an HTML page labelled `application/pdf` for the PDF."""
        return cls("garbage")


@dataclass(frozen=True)
class _ReceivedFax:
    pdf_id: str
    fax_number: str
    sender: str
    pages: int
    pdf: bytes
    received_at: datetime
    seq: int


@dataclass
class _Gate:
    """Interval bookkeeping for one kind of call."""

    answered_at: float | None = None  # clock time of the last non-early call's response
    in_flight: int = 0

    def early(self, now: float, interval: float) -> bool:
        if interval <= 0:
            return False
        if self.in_flight:
            return True
        return self.answered_at is not None and now - self.answered_at < interval


_SENDER_FIELDS = frozenset({"senderNumber", "sendNumber"})
_PDF_ID_RE = re.compile(r"[A-Za-z0-9+/=_-]{1,128}")
_LOG_GARBAGE = b'{"status":0,"ErrorMsg":"","Results":[{"receiveDate":"20'
_PDF_GARBAGE = (
    b"<html><head><title>\xe3\x83\xa1\xe3\x83\xb3\xe3\x83\x86\xe3\x83\x8a\xe3\x83\xb3"
    b"\xe3\x82\xb9\xe4\xb8\xad</title></head><body>maintenance</body></html>"
)


def _byosoku_error(http_status: int, error_msg: str | None) -> web.Response:
    if error_msg is None:
        reason = _HTTP_REASONS.get(http_status, "Error")
        page = (
            f"<html><head><title>{http_status} {reason}</title></head>"
            f"<body><h1>{http_status} {reason}</h1></body></html>"
        )
        return web.Response(status=http_status, text=page, content_type="text/html")
    body = _json_body({"status": 1, "ErrorMsg": error_msg})
    return web.Response(status=http_status, body=body, content_type="application/json")


def _blank_pdf(pages: int, title: str = "") -> bytes:
    """A valid PDF of `pages` blank A4 pages (pypdf); `title` makes otherwise equal ones differ."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if title:
        writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


class ByosokuSimulator(_LoopbackServer):
    """秒速FAX Plus's receive log and receive PDF APIs, on loopback, on an injected clock."""

    LOG_LIMIT = 50

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        log_interval: float = 60.0,
        pdf_interval: float = 1.0,
        sender_field: str = "senderNumber",
    ) -> None:
        if sender_field not in _SENDER_FIELDS:
            raise ValueError(f"sender_field must be one of {sorted(_SENDER_FIELDS)}")
        super().__init__()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.log_interval = log_interval
        self.pdf_interval = pdf_interval
        self.sender_field = sender_field
        self.log_faults: collections.deque[ByosokuFault] = collections.deque()
        self.pdf_faults: collections.deque[ByosokuFault] = collections.deque()
        self.no_pdf_times: dict[str, int] = {}
        self.violations = 0
        self.log_violations = 0
        self.pdf_violations = 0
        self.log_calls: list[float] = []  # clock time at arrival of every log call
        self.pdf_calls: list[tuple[float, str, str]] = []  # (arrival, pdfId as sent, method)
        self.fetched: collections.Counter[str] = collections.Counter()
        self._faxes: dict[str, _ReceivedFax] = {}
        self._deleted: set[str] = set()
        self._log_gate = _Gate()
        self._pdf_gate = _Gate()

    # -- public surface ------------------------------------------------------------------------

    @property
    def log_url(self) -> str:
        return f"{self.base_url}/receive/log"

    @property
    def pdf_url(self) -> str:
        return f"{self.base_url}/receive/pdf"

    def add_fax(
        self,
        *,
        fax_number: str,
        sender: str = "",
        pages: int = 1,
        pdf: bytes | None = None,
        received_at: datetime | None = None,
    ) -> str:
        """Record a received fax; returns its new pdfId.

        `received_at` defaults to the clock's now; a naive datetime is taken as Japan time.
        `pdf` defaults to `pages` blank pages (each fax's PDF differs by its title).
        """
        pdf_id = secrets.token_urlsafe(12)
        while pdf_id in self._faxes:
            pdf_id = secrets.token_urlsafe(12)
        if received_at is None:
            moment = datetime.fromtimestamp(self.clock.now(), JAPAN_TIME)
        elif received_at.tzinfo is None:
            moment = received_at.replace(tzinfo=JAPAN_TIME)
        else:
            moment = received_at.astimezone(JAPAN_TIME)
        document = pdf if pdf is not None else _blank_pdf(pages, title=pdf_id)
        self._faxes[pdf_id] = _ReceivedFax(
            pdf_id, fax_number, sender, pages, document, moment, len(self._faxes)
        )
        self._changed()
        return pdf_id

    def delete_pdf(self, pdf_id: str) -> None:
        """Later PDF calls for it answer `ERR_NO_PDF`; it stays in the receive log."""
        if pdf_id not in self._faxes:
            raise KeyError(pdf_id)
        self._deleted.add(pdf_id)

    def log_rows(self) -> list[dict[str, str]]:
        """What the receive log answers now: the latest 50, newest first."""
        newest = sorted(self._faxes.values(), key=lambda f: (f.received_at, f.seq), reverse=True)
        return [
            {
                "receiveDate": format_provider_time(fax.received_at),
                "faxNumber": fax.fax_number,
                "page": str(fax.pages),
                self.sender_field: fax.sender,
                "pdfId": fax.pdf_id,
            }
            for fax in newest[: self.LOG_LIMIT]
        ]

    async def wait_for_log_calls(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` log calls arrived (answered or not)."""
        await self._wait_until(
            lambda: len(self.log_calls) >= n,
            timeout,
            lambda: f"{n} log calls (have {len(self.log_calls)})",
        )

    async def wait_for_pdf_calls(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least `n` PDF calls arrived (answered or not).

        A call is recorded on arrival, before it is answered: with a `stall` fault queued, the
        caller learns that the receiver is waiting for a PDF and can act before it arrives.
        """
        await self._wait_until(
            lambda: len(self.pdf_calls) >= n,
            timeout,
            lambda: f"{n} PDF calls (have {len(self.pdf_calls)})",
        )

    # -- HTTP ----------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        for path, handler in (
            ("/receive/log", self._handle_log),
            ("/receive/pdf", self._handle_pdf),
        ):
            app.router.add_get(path, handler, allow_head=False)
            app.router.add_post(path, handler)
        return app

    async def _handle_log(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now()
        self.log_calls.append(now)
        self._changed()
        await request.read()  # the API takes no parameters: anything sent is ignored
        if self._closing:
            return _abort(request)
        if self._log_gate.early(now, self.log_interval):
            self.violations += 1
            self.log_violations += 1
            self._changed()
            return _byosoku_error(400, "ERR_ACCESS_INTERVAL")
        fault = self.log_faults.popleft() if self.log_faults else None
        return await self._answer(request, self._log_gate, fault, self._log_response)

    async def _handle_pdf(self, request: web.Request) -> web.StreamResponse:
        now = self.clock.now()
        values = await _pdf_ids(request)
        self.pdf_calls.append((now, ",".join(values), request.method))
        self._changed()
        if self._closing:
            return _abort(request)
        if self._pdf_gate.early(now, self.pdf_interval):
            self.violations += 1
            self.pdf_violations += 1
            self._changed()
            return _byosoku_error(400, "ERR_ACCESS_INTERVAL")
        fault = self.pdf_faults.popleft() if self.pdf_faults else None
        return await self._answer(
            request, self._pdf_gate, fault, lambda: self._pdf_response(values)
        )

    async def _answer(
        self,
        request: web.Request,
        gate: _Gate,
        fault: ByosokuFault | None,
        normal: Callable[[], web.Response],
    ) -> web.StreamResponse:
        """Answer a call that passed the interval check; its response time becomes the gate's."""
        gate.in_flight += 1
        try:
            if fault is not None and fault.kind == "error":
                return _byosoku_error(fault.http_status, fault.error_msg)
            if fault is not None and fault.kind == "garbage":
                if gate is self._log_gate:
                    return web.Response(body=_LOG_GARBAGE, content_type="application/json")
                return web.Response(body=_PDF_GARBAGE, content_type="application/pdf")
            if (
                fault is not None
                and fault.kind == "stall"
                and await self._sleep_unless_closing(fault.seconds)
            ):
                return _abort(request)
            return normal()
        finally:
            gate.in_flight -= 1
            gate.answered_at = self.clock.now()
            self._changed()

    def _log_response(self) -> web.Response:
        body = _json_body({"status": 0, "ErrorMsg": "", "Results": self.log_rows()})
        return web.Response(body=body, content_type="application/json")

    def _pdf_response(self, values: list[str]) -> web.Response:
        if len(values) != 1 or not _PDF_ID_RE.fullmatch(values[0]):
            return _byosoku_error(400, "ERR_PDF_ID")
        pdf_id = values[0]
        fax = self._faxes.get(pdf_id)
        if fax is None or pdf_id in self._deleted:
            return _byosoku_error(400, "ERR_NO_PDF")
        remaining = self.no_pdf_times.get(pdf_id, 0)
        if remaining > 0:
            if remaining == 1:
                del self.no_pdf_times[pdf_id]
            else:
                self.no_pdf_times[pdf_id] = remaining - 1
            return _byosoku_error(400, "ERR_NO_PDF")
        self.fetched[pdf_id] += 1
        return web.Response(
            body=fax.pdf,
            content_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{pdf_id}.pdf"'},
        )


async def _pdf_ids(request: web.Request) -> list[str]:
    """The pdfId values sent: POST form fields, else the query string. A file upload or an
    unreadable form counts as a malformed value."""
    if request.method == "POST":
        try:
            posted = await request.post()
        except (ValueError, AssertionError, RuntimeError, KeyError):
            return ["\x00"]
        raw = posted.getall("pdfId", [])
        if raw:
            return [value if isinstance(value, str) else "\x00" for value in raw]
    else:
        await request.read()
    return list(request.query.getall("pdfId", []))
