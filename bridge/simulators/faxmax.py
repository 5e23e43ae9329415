"""FaxMAX on loopback: the send API and the status and incoming-fax pushes.

`POST /api/v1` takes a `Fax.send_fax` JSON-RPC call; how it is read and checked, and the error
codes it answers, are in `bridge.simulators.faxmax_rpc`. This module is what FaxMAX does with a
call that passed: the faxes it queues, the answer, the scripted faults and the pushes.

Accepted numbers each become one fax (a uuid4 `fax_id`) whose status is then pushed to
`push_url` as a JSON array, retried until answered 2xx, as the documentation says. A fax
accepted while `push_url` is None gets no pushes (an account without fax_notification_url).
Push times are written in `tz` (default Turkey time, UTC+3; the documents name no zone).
`incoming_event` / `push_incoming` build and push an `INCOMING_FAX` event (base64 TIFF).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from bridge.simulators.faxmax_rpc import (
    RpcError,
    SendForm,
    check_send_fax,
    parse_data,
    read_form,
    rpc_error,
    valid_id,
)
from bridge.simulators.faxmax_script import ALL_PAGES, Fault, Outcome
from bridge.simulators.formats import (
    TURKEY_TIME,
    count_pdf_pages,
    count_tiff_pages,
    format_provider_time,
)
from bridge.simulators.loopback import LoopbackServer, abort, json_body


@dataclass(frozen=True)
class AcceptedFax:
    """One fax FaxMAX accepted (one per accepted number of a send call)."""

    fax_id: str
    phone: str
    api_id: Any
    request_id: str
    cli: str
    pages: int  # the document's, and one for a cover page (FaxMAX lays it out itself)
    requested_on: datetime
    paper_size: str = "A4"  # the call's, with the documented defaults
    resolution: str = "fine"
    cover: bool = False  # the call had a `cover_html`


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


_DIGITS = re.compile(r"[0-9]+")
# Statuses that are not a dialling attempt (for tried_on / tried_count / remote details).
_NOT_TRIED = frozenset({"QUEUED", "PENDING", "WAITING", "SCHEDULED"})


class FaxMaxSimulator(LoopbackServer):
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
        # Scripted outcomes per number, taken one per fax (see `Outcome`); a number with none
        # left ends as `statuses` / `final_status` say.
        self.outcomes: dict[str, collections.deque[Outcome]] = {}
        # Fax machines with this many lines: a fax that finds them all in a call is BUSY, with
        # no page sent. A number not listed has lines enough for every fax.
        self.lines: dict[str, int] = {}
        self.in_call: collections.Counter[str] = collections.Counter()  # faxes on the line now
        self.most_in_call: collections.Counter[str] = collections.Counter()  # at once, ever
        self.now: Callable[[], datetime] = lambda: datetime.now(self.tz)  # its clock
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
            return abort(request)
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "refuse_before_reading":
            return abort(request)

        try:
            form = await read_form(request)
        except (ConnectionError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError):
            return abort(request)  # the client went away mid-body: nothing took effect
        data, rpc_id, response, faxes = self._evaluate(form)

        takes_effect = fault is None or fault.took_effect
        accepted = tuple(faxes) if takes_effect else ()
        recorded: dict[str, Any] | None
        if fault is None:
            recorded = response
        elif fault.kind == "jsonrpc_error":
            recorded = rpc_error(rpc_id, fault.code, fault.message)
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
            return web.Response(body=json_body(response), content_type="application/json")
        if fault.kind == "http":
            return web.Response(
                status=fault.status, body=fault.body.encode(), content_type=fault.content_type
            )
        if fault.kind == "jsonrpc_error":
            return web.Response(body=json_body(recorded), content_type="application/json")
        if fault.kind == "malformed_json":
            text = json_body(response)
            return web.Response(body=text[: len(text) // 2], content_type="application/json")
        if fault.kind == "stall":
            if await self._sleep_unless_closing(fault.seconds):
                return abort(request)
            return web.Response(body=json_body(response), content_type="application/json")
        return abort(request)  # reset

    # -- the API's rules -----------------------------------------------------------------------

    def _evaluate(
        self, form: SendForm
    ) -> tuple[dict[str, Any], Any, dict[str, Any], list[AcceptedFax]]:
        """(request data for the record, JSON-RPC id, answer, faxes to queue if it takes effect)."""
        data: dict[str, Any] = {}
        rpc_id: Any = None
        try:
            data = parse_data(form)
            if "id" in data and valid_id(data["id"]):
                rpc_id = data["id"]
            answer, faxes = self._send_fax(data, form)
            return data, rpc_id, {"id": rpc_id, "jsonrpc": "2.0", "result": answer}, faxes
        except RpcError as exc:
            return data, rpc_id, rpc_error(rpc_id, exc.code, exc.message), []

    def _send_fax(
        self, data: dict[str, Any], form: SendForm
    ) -> tuple[dict[str, Any], list[AcceptedFax]]:
        call = check_send_fax(
            data, form, token=self.token, username=self.username, password=self.password
        )
        request_id = str(uuid.uuid4())
        now = self.now().replace(microsecond=0)
        pages = count_pdf_pages(form.document) + (1 if call.cover_html else 0)
        accepted: list[AcceptedFax] = []
        rejected: list[dict[str, Any]] = []
        for phone, api_id in call.targets:
            if not _DIGITS.fullmatch(phone):
                rejected.append({"phone": phone, "api_id": api_id, "message": "Invalid number"})
            elif phone in self.rejected_numbers:
                rejected.append({"phone": phone, "api_id": api_id, "message": "Number rejected"})
            else:
                fax_id = str(uuid.uuid4())
                accepted.append(
                    AcceptedFax(fax_id, phone, api_id, request_id, call.cli, pages, now,
                                paper_size=call.paper_size, resolution=call.resolution,
                                cover=bool(call.cover_html))
                )
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

    # -- pushes --------------------------------------------------------------------------------

    def _outcome(self, fax: AcceptedFax) -> Outcome:
        """What becomes of a fax: the next scripted outcome for its number, a busy line, or
        the `statuses` / `final_status` sequence."""
        scripted = self.outcomes.get(fax.phone)
        if scripted:
            return scripted.popleft()
        lines = self.lines.get(fax.phone)
        if lines is not None and self.in_call[fax.phone] >= lines:
            return Outcome.busy()
        *before, status = list(self.statuses.get(fax.phone, [self.final_status]))
        tried = sum(1 for word in (*before, status) if word not in _NOT_TRIED)
        pages = ALL_PAGES if status == "SUCCESS" else 0
        return Outcome(status, pages=pages, tried=max(tried, 1),
                       message=self.result_messages.get(fax.phone, ""), before=tuple(before))

    async def _push_fax(self, fax: AcceptedFax) -> None:
        """One push per status of the fax's outcome, each after `push_delay`, each retried;
        the fax holds its number's line from its acceptance to its final push."""
        if self.push_url is None:
            return  # no fax_notification_url on the account: FaxMAX pushes nothing
        outcome = self._outcome(fax)
        connected = outcome.pages != 0
        if connected:
            self.in_call[fax.phone] += 1
            self.most_in_call[fax.phone] = max(self.most_in_call[fax.phone],
                                               self.in_call[fax.phone])
        try:
            tried = 0
            for status in outcome.before:
                await asyncio.sleep(self.push_delay)
                tried += status not in _NOT_TRIED
                await self._deliver([self._outgoing_event(fax, status, tried=tried)])
            await asyncio.sleep(self.push_delay)
        finally:
            if connected:
                self.in_call[fax.phone] -= 1
        await self._deliver([self._outgoing_event(fax, outcome.status, outcome=outcome,
                                                  tried=outcome.tried)])

    def _outgoing_event(
        self, fax: AcceptedFax, status: str, *, tried: int, outcome: Outcome | None = None
    ) -> dict[str, Any]:
        """An OUTGOING_FAX event; `outcome` for the final one."""
        now = format_provider_time(self.now())
        attempted = status not in _NOT_TRIED
        success = status == "SUCCESS"
        message = ""
        pages: int | None = 0
        if outcome is not None:
            default = "Fax delivered" if success else "Fax could not be delivered"
            message = outcome.message or default
            pages = fax.pages if outcome.pages == ALL_PAGES else outcome.pages
        event: dict[str, Any] = {
            "type": "OUTGOING_FAX",
            "id": fax.fax_id,
            "account_id": self.account_id,
            "account_name": self.account_name,
            "cli": fax.cli,
            "cld": fax.phone,
            "status": status,
            "requested_on": format_provider_time(fax.requested_on),
            "result_message": message,
            "page_count": pages,
            "total_page_count": fax.pages,
            "ecm_used": attempted,
            "has_t38": False,
            "remote_station_id": "SIM REMOTE" if attempted and pages else "",
            "fax_encoding": "MMR" if attempted else "",
            "transfer_rate": 14400 if attempted else 0,
            "sent_on": now if success else "",
            "queued_on": format_provider_time(fax.requested_on),
            "tried_on": now if attempted else "",
            "tried_count": tried,
        }
        if pages is None:  # a push that does not say how many pages went through
            del event["page_count"], event["total_page_count"]
        return event
