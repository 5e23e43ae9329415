"""秒速FAX Plus on loopback: the receive log and receive PDF APIs, on an injected clock.

The receive side, polled: `GET`/`POST /receive/log` (no parameters) answers the latest 50
received faxes, newest first; `GET ?pdfId=` / `POST` form field `pdfId` on `/receive/pdf`
answers the PDF. Calls of each kind must be `log_interval` (60 s) / `pdf_interval` (1 s)
apart, measured on the injected clock from the previous answered call's response; an early
call gets 400 `ERR_ACCESS_INTERVAL`, is counted in `violations`, and does not restart the
interval. A call arriving while another of its kind is still being answered is early too.
Error bodies are `{"status": 1, "ErrorMsg": "..."}`; 403/404 faults are HTML pages.
"""

from __future__ import annotations

import collections
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web

from bridge.clock import Clock, SystemClock
from bridge.simulators.formats import JAPAN_TIME, blank_pdf, format_provider_time
from bridge.simulators.loopback import LoopbackServer, abort, error_page, json_body

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
        return web.Response(
            status=http_status, text=error_page(http_status), content_type="text/html"
        )
    body = json_body({"status": 1, "ErrorMsg": error_msg})
    return web.Response(status=http_status, body=body, content_type="application/json")


class ByosokuSimulator(LoopbackServer):
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
        document = pdf if pdf is not None else blank_pdf(pages, title=pdf_id)
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
            return abort(request)
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
            return abort(request)
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
                return abort(request)
            return normal()
        finally:
            gate.in_flight -= 1
            gate.answered_at = self.clock.now()
            self._changed()

    def _log_response(self) -> web.Response:
        body = json_body({"status": 0, "ErrorMsg": "", "Results": self.log_rows()})
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
