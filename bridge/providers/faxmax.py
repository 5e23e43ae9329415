"""FaxMAX: the send call (`Fax.send_fax`) and the parsing of its status pushes.

The decisive question for every failed send is "could the fax have gone out?". Only failures that
surely happened before the request reached FaxMAX (no connection) and explicit "not now" answers
(502/503/504, 429, a busy error) are retried. Anything after the request was sent (a timeout, a
reset, a 500, an unreadable answer) makes the outcome unknown, and a fax of unknown outcome is
never resent automatically: a person decides.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from bridge import documents
from bridge.config import FaxmaxSettings
from bridge.errors import (
    ProviderOutcomeUnknown,
    ProviderPermanentError,
    ProviderTimeout,
    ProviderTransientError,
)
from bridge.metrics import Metrics
from bridge.providers import Provider
from bridge.store import StatusEvent

log = logging.getLogger(__name__)
PROVIDER = Provider.FAXMAX
RETRY_STATUSES = {429, 502, 503, 504}
BUSY_WORDS = ("ERR_SERVER_BUSY", "ERR_ACCESS_INTERVAL", "busy", "try again")


@dataclass(frozen=True)
class SendResult:
    fax_id: str
    request_id: str


def build_request(
    settings: FaxmaxSettings, *, job_id: int, number: str, request_id: str, resolution: str,
    paper_size: str,
) -> dict[str, Any]:
    """The JSON-RPC body, but the cover page (see `CoverData`), with the job's resolution and
    paper size (`bridge.options`). The docs disagree on `token` vs `token_`, so both are
    sent."""
    params: dict[str, Any] = {
        "phones": [{"phone": number, "api_id": str(job_id)}],
        "paper_size": paper_size,
        "resolution": resolution,
    }
    if settings.token:
        params["token"] = settings.token
        params["token_"] = settings.token
    else:
        params["username"] = settings.username
        params["password"] = settings.password
    if settings.cli:
        params["cli"] = settings.cli
    return {"jsonrpc": "2.0", "id": request_id, "method": "Fax.send_fax", "params": params}


class CoverData(Payload):
    """The `data` field of a send call whose cover page is in a file (`bridge.cover`): the
    JSON-RPC body around the page, streamed from the file as each call sends it, so that no
    job in flight holds a copy of the page or of the JSON that carries it. The file holds the
    page as a JSON string already, so the bytes sent are those of `json.dumps(body)` with the
    page as `params.cover_html`, its last member."""

    CHUNK = 1 << 20

    def __init__(self, data: str, cover: Path) -> None:
        if not data.endswith("}}"):  # `params` is the body's last member, as built here
            raise ValueError("the JSON-RPC body does not end with its params")
        self._head = (data[:-2] + ', "cover_html": ').encode()
        self._tail = b"}}"
        self._cover = cover
        super().__init__(cover, content_type="text/plain; charset=utf-8")
        self._size = len(self._head) + cover.stat().st_size + len(self._tail)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return (self._head + self._cover.read_bytes() + self._tail).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await writer.write(self._head)
        with self._cover.open("rb") as page:
            while chunk := await asyncio.to_thread(page.read, self.CHUNK):
                await writer.write(chunk)
        await writer.write(self._tail)


def interpret_response(status: int, body: bytes, *, number: str, job_id: int) -> SendResult:
    """Classify FaxMAX's answer (pure). Raises the error class that says what to do next."""
    text = body[:300].decode("utf-8", "replace").strip()
    if status in RETRY_STATUSES:
        raise ProviderTransientError(f"FaxMAX is temporarily unavailable (HTTP {status})",
                                     provider=PROVIDER, code=str(status))
    if status >= 500:
        raise ProviderOutcomeUnknown(
            f"FaxMAX answered HTTP {status} after receiving the fax, so it may or may not "
            "have been sent", provider=PROVIDER, code=str(status))
    if status in (401, 403):
        raise ProviderPermanentError(f"FaxMAX refused our credentials (HTTP {status}); the "
                                     "administrator must check faxmax.token",
                                     provider=PROVIDER, code=str(status))
    if status != 200:
        raise ProviderPermanentError(f"FaxMAX refused the request (HTTP {status}: {text[:120]})",
                                     provider=PROVIDER, code=str(status))
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ProviderOutcomeUnknown("FaxMAX's answer was not readable JSON, so it is unknown "
                                     "whether the fax was accepted", provider=PROVIDER,
                                     code="bad-json") from exc
    if not isinstance(doc, dict):
        raise ProviderOutcomeUnknown("FaxMAX's answer had an unexpected shape",
                                     provider=PROVIDER, code="bad-shape")
    error = doc.get("error")
    if error is not None:
        code = str(error.get("code", "")) if isinstance(error, dict) else ""
        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        if any(w.lower() in message.lower() for w in BUSY_WORDS):
            raise ProviderTransientError(f"FaxMAX is busy: {message}", provider=PROVIDER,
                                         code=code)
        if code == "-32603":
            raise ProviderOutcomeUnknown(f"FaxMAX reported an internal error: {message}",
                                         provider=PROVIDER, code=code)
        raise ProviderPermanentError(f"FaxMAX refused the fax: {message}", provider=PROVIDER,
                                     code=code)
    data = _dig(doc, "result", "message", "data")
    if not isinstance(data, dict):
        raise ProviderOutcomeUnknown("FaxMAX's answer did not contain a result",
                                     provider=PROVIDER, code="no-result")
    for entry in data.get("phones") or []:
        if isinstance(entry, dict) and entry.get("fax_id") and (
            str(entry.get("api_id")) == str(job_id) or entry.get("api_id") is None
        ):
            return SendResult(fax_id=str(entry["fax_id"]),
                              request_id=str(data.get("request_id", "")))
    for entry in data.get("rejected") or []:
        phone = entry.get("phone") if isinstance(entry, dict) else entry
        if str(phone) == number or (isinstance(entry, dict)
                                    and str(entry.get("api_id")) == str(job_id)):
            reason = entry.get("message") if isinstance(entry, dict) else None
            raise ProviderPermanentError(
                f"FaxMAX rejected the number {number}" + (f": {reason}" if reason else ""),
                provider=PROVIDER, code="rejected")
    raise ProviderOutcomeUnknown("FaxMAX's answer mentioned neither a fax id nor a rejection "
                                 "for this number", provider=PROVIDER, code="no-fax-id")


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


class FaxMaxClient:
    """One `Fax.send_fax` call per job. TLS is verified (aiohttp's default) on every call."""

    def __init__(self, settings: FaxmaxSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # A fresh connection per call: a pooled connection that the server had silently closed
        # would fail in a way indistinguishable from "sent, then reset", turning a safe retry
        # into an unknown outcome.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=settings.timeout,
                                          sock_connect=min(settings.timeout, 15.0)),
        )

    async def close(self) -> None:
        await self._session.close()

    async def send_fax(
        self, *, job_id: int, number: str, document: Path, cover: Path | None,
        resolution: str, paper_size: str,
    ) -> SendResult:
        """`cover`: the file of the fax's cover page (`bridge.cover.cover_file`), if it goes
        with this fax."""
        with self.metrics.provider_call(PROVIDER, "send_fax"):
            return await self._send_fax(job_id=job_id, number=number, document=document,
                                        cover=cover, resolution=resolution,
                                        paper_size=paper_size)

    async def _send_fax(
        self, *, job_id: int, number: str, document: Path, cover: Path | None,
        resolution: str, paper_size: str,
    ) -> SendResult:
        request_id = str(uuid.uuid4())
        body = build_request(self.settings, job_id=job_id, number=number,
                             request_id=request_id, resolution=resolution,
                             paper_size=paper_size)
        data = json.dumps(body, ensure_ascii=False)
        # The files are opened before the call, outside the `try` below: a document or cover
        # page that cannot be read (deleted, a failing disk) is a plain failure, since nothing
        # was sent, never an "unknown" from an OSError the call itself could have raised after
        # sending.
        try:
            field: str | CoverData = data if cover is None else CoverData(data, cover)
            fp = document.open("rb")
        except OSError as exc:
            raise ProviderPermanentError(
                f"the fax document or its cover page could not be read, so it was not sent "
                f"({exc.__class__.__name__}: {exc.strerror or exc})", provider=PROVIDER,
                code="document") from exc
        try:
            with fp:
                form = aiohttp.FormData()
                form.add_field("data", field)
                form.add_field("fax_file", fp, filename=f"fax-job-{job_id}.pdf",
                               content_type="application/pdf")
                async with self._session.post(self.settings.url, data=form) as resp:
                    payload = await resp.read()
                    status = resp.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise ProviderTransientError(f"cannot connect to FaxMAX: {exc}", provider=PROVIDER,
                                         code="connect") from exc
        except TimeoutError as exc:
            timeout = self.settings.timeout
            raise ProviderTimeout(f"FaxMAX did not answer within {timeout:g} "
                                  f"second{'' if timeout == 1 else 's'} after receiving the fax",
                                  provider=PROVIDER,
                                  code="timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderOutcomeUnknown(f"the connection to FaxMAX broke after the fax was "
                                         f"sent ({exc.__class__.__name__})", provider=PROVIDER,
                                         code="reset") from exc
        return interpret_response(status, payload, number=number, job_id=job_id)


# --- pushes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingFax:
    """An INCOMING_FAX event, its TIFF decoded."""

    fax_id: str
    receiving_number: str  # `cld`: which of our numbers was called
    sender_number: str  # `cli`: "" when withheld
    remote_station: str  # the sender's TSI, free text from the far end
    pages: int | None
    requested_on: str
    tiff: bytes


@dataclass(frozen=True)
class PushBatch:
    status_events: tuple[StatusEvent, ...]
    incoming: tuple[IncomingFax, ...]
    bad: tuple[tuple[bytes, str], ...]  # (the raw event or body, why it was not understood)


def _event_key(event: Mapping[str, Any]) -> str:
    """A replayed push is byte-for-byte the same event; its key makes the replay a no-op."""
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def parse_incoming(event: Mapping[str, Any]) -> IncomingFax | str:
    """The fax in an INCOMING_FAX event, or the reason it cannot be used."""
    fax_id = event.get("id")
    if not isinstance(fax_id, str | int) or isinstance(fax_id, bool) or not str(fax_id).strip():
        return "an INCOMING_FAX event lacks its id"
    content = event.get("content")
    if not isinstance(content, str) or not content.strip():
        return "an INCOMING_FAX event has no fax image (content)"
    try:
        try:  # the usual case: one unbroken line, decoded without a copy
            tiff = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):  # wrapped lines (MIME style) are accepted too
            tiff = base64.b64decode("".join(content.split()), validate=True)
    except (binascii.Error, ValueError):
        return "the fax image (content) is not valid base64"
    if documents.sniff(tiff[: documents.SNIFF_BYTES]) is not documents.Kind.TIFF:
        return "the fax image (content) is not a TIFF"
    return IncomingFax(
        fax_id=str(fax_id).strip(), receiving_number=_text(event.get("cld")),
        sender_number=_text(event.get("cli")), remote_station=_text(event.get("remote_station_id")),
        pages=_int_or_none(event.get("page_count")), requested_on=_text(event.get("requested_on")),
        tiff=tiff,
    )


def _raw(event: Any) -> str:
    """An event as text, for status events and quarantine only: an INCOMING_FAX event carries
    the whole fax, and serialising it again would cost as much as parsing it did."""
    return json.dumps(event, ensure_ascii=False)


def parse_push(body: bytes) -> PushBatch:
    """Split a push body into status events, incoming faxes and what could not be understood.
    Pure and total: any input yields a batch, never an exception."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return PushBatch((), (), ((body, "the body is not JSON"),))
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        return PushBatch((), (), ((body, "the body is not a JSON array of events"),))
    statuses: list[StatusEvent] = []
    incoming: list[IncomingFax] = []
    bad: list[tuple[bytes, str]] = []
    for event in doc:
        if not isinstance(event, dict):
            bad.append((_raw(event).encode(), "an event is not a JSON object"))
            continue
        kind = event.get("type")
        if kind == "OUTGOING_FAX":
            fax_id, status = event.get("id"), event.get("status")
            if not isinstance(fax_id, str | int) or not fax_id or not isinstance(status, str):
                bad.append((_raw(event).encode(), "an OUTGOING_FAX event lacks its id or status"))
                continue
            statuses.append(StatusEvent(
                provider=PROVIDER, fax_id=str(fax_id), status=status.strip().upper(),
                result_message=_text(event.get("result_message")),
                pages=_int_or_none(event.get("page_count")),
                event_key=_event_key(event), raw=_raw(event),
                number=_text(event.get("cld")), cli=_text(event.get("cli")),
                requested_on=_text(event.get("requested_on")),
                queued_on=_text(event.get("queued_on")),
                tried=_int_or_none(event.get("tried_count")),
            ))
        elif kind == "INCOMING_FAX":
            fax = parse_incoming(event)
            if isinstance(fax, str):
                bad.append((_raw(event).encode(), fax))
            else:
                incoming.append(fax)
        else:
            bad.append((_raw(event).encode(), f"unknown event type {kind!r}"))
    return PushBatch(tuple(statuses), tuple(incoming), tuple(bad))
