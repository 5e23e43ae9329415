"""What a test scripts FaxMAX to do: the faults of one send call (`Fault`) and how a fax to a
number ends (`Outcome`), both of which `bridge.simulators.faxmax.FaxMaxSimulator` plays.

FaxMAX documents neither its error answers nor its status words; these are the behaviours a
real service and a real telephone line show, so that the bridge's handling of each can be
tested (docs/PROVIDERS.md, the table of what FaxMAX leaves open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.simulators.loopback import error_page

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
            body = error_page(status)
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


ALL_PAGES = -1  # `Outcome.pages`: every page of the fax went through


@dataclass(frozen=True)
class Outcome:
    """How one fax to a number ends, as FaxMAX pushes it; put them, in order, in
    `FaxMaxSimulator.outcomes[phone]` (each fax to the number takes the next one).

    FaxMAX documents none of these words: they are the outcomes a real line has, so that the
    bridge's handling of each (`bridge.dialling`) can be tested. `pages` is the final push's
    `page_count` (`ALL_PAGES`: the whole fax; None: the push leaves out `page_count` and
    `total_page_count`, as a push that does not say); `tried` its `tried_count` (FaxMAX's own
    dials); `before`, the intermediate statuses pushed first."""

    status: str
    pages: int | None = ALL_PAGES
    tried: int = 1
    message: str = ""
    before: tuple[str, ...] = ()

    @classmethod
    def busy(cls, tried: int = 1) -> Outcome:
        """The line was busy: no page went through."""
        return cls("BUSY", pages=0, tried=tried, message="Line busy")

    @classmethod
    def no_answer(cls) -> Outcome:
        return cls("NO_ANSWER", pages=0, message="No answer")

    @classmethod
    def cut_off(cls, pages: int) -> Outcome:
        """The call broke after `pages` pages."""
        return cls("FAILED", pages=pages, message=f"Call dropped after {pages} page(s)")
