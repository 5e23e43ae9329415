"""秒速FAX Plus (receiving): the receive-log call and the PDF call, and what their answers mean.

Both calls only read, so any failure is safe to retry; what matters is when. Error codes are
mapped to error classes with the provider's code attached (`ERR_ACCESS_INTERVAL`, `ERR_NO_PDF`,
`403`, …) so the poller can wait, retry, give up or alert, each as the code deserves. Spacing
(60 s / 1 s) is the poller's job, not this client's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from bridge import documents
from bridge.config import ByosokuSettings
from bridge.errors import ProviderError, ProviderPermanentError, ProviderTransientError
from bridge.metrics import Metrics
from bridge.providers import Provider

log = logging.getLogger(__name__)
PROVIDER = Provider.BYOSOKU
NAME = PROVIDER.display_name


@dataclass(frozen=True)
class LogEntry:
    pdf_id: str
    fax_number: str  # ours, as the provider writes it ("0368680000")
    sender: str  # "" when withheld
    pages: int | None
    receive_date: str  # "2014-04-16 03:09:00", Japan time, no zone


def _error(status: int, doc: Any, what: str) -> ProviderError:
    """The error for a non-success answer, by the documented table."""
    code = doc.get("ErrorMsg") if isinstance(doc, dict) else None
    if status == 403:
        return ProviderPermanentError(
            f"{NAME} refused this server (HTTP 403): its IP address must be registered in the "
            "provider's admin panel", provider=PROVIDER, code="403")
    if status == 404:
        return ProviderPermanentError(
            f"{NAME} answered HTTP 404 for the {what} URL: check byosoku.log_url and "
            "byosoku.pdf_url against the admin panel", provider=PROVIDER, code="404")
    if code == "ERR_ACCESS_INTERVAL":
        return ProviderTransientError(f"{NAME}: called again too soon (ERR_ACCESS_INTERVAL)",
                                      provider=PROVIDER, code=code)
    if code == "ERR_NO_DATA":
        return ProviderPermanentError(
            f"{NAME}: account data could not be found (ERR_NO_DATA); check the configured "
            "URLs", provider=PROVIDER, code=code)
    if code in ("ERR_NO_PDF", "ERR_PDF_ID"):
        return ProviderPermanentError(f"{NAME}: no such PDF ({code})", provider=PROVIDER,
                                      code=code)
    if code in ("ERR_SERVER_BUSY", "ERR_SERVER_ERR"):
        return ProviderTransientError(f"{NAME}: server trouble ({code})", provider=PROVIDER,
                                      code=code)
    return ProviderTransientError(
        f"{NAME}: unexpected answer to the {what} call (HTTP {status}"
        f"{', ' + str(code) if code else ''})", provider=PROVIDER, code=str(code or status))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _pages(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def interpret_log(status: int, body: bytes) -> list[LogEntry]:
    """The receive log's rows, newest first as the provider lists them (pure)."""
    doc = _json(body)
    if status != 200 or not isinstance(doc, dict) or str(doc.get("status")) != "0":
        raise _error(status, doc, "receive-log")
    results = doc.get("Results")
    if not isinstance(results, list):
        raise _error(status, {"ErrorMsg": "no Results"}, "receive-log")
    entries = []
    for row in results:
        if not isinstance(row, dict) or not isinstance(row.get("pdfId"), str) or not row["pdfId"]:
            log.warning("byosoku: log row without a pdfId ignored: %.200r", row)
            continue
        # The docs' table says `sendNumber`, their example `senderNumber`: accept both.
        sender = row.get("senderNumber", row.get("sendNumber")) or ""
        entries.append(LogEntry(
            pdf_id=row["pdfId"], fax_number=str(row.get("faxNumber") or ""),
            sender=str(sender), pages=_pages(row.get("page")),
            receive_date=str(row.get("receiveDate") or "")))
    return entries


def interpret_pdf(status: int, body: bytes) -> bytes:
    """The PDF, or the error its answer means (pure)."""
    if status == 200 and documents.sniff(body[: documents.SNIFF_BYTES]) is documents.Kind.PDF:
        return body
    raise _error(status, _json(body), "PDF")


class ByosokuClient:
    def __init__(self, settings: ByosokuSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.timeout))

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        try:
            async with self._session.request(method, url, **kwargs) as resp:
                return resp.status, await resp.read()
        except TimeoutError as exc:
            raise ProviderTransientError(f"{NAME} did not answer within "
                                         f"{self.settings.timeout:g} seconds",
                                         provider=PROVIDER, code="timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderTransientError(f"cannot reach {NAME}: {exc.__class__.__name__}",
                                         provider=PROVIDER, code="connect") from exc

    async def receive_log(self) -> list[LogEntry]:
        with self.metrics.provider_call(PROVIDER, "receive_log"):
            return interpret_log(*await self._call("GET", self.settings.log_url))

    async def fetch_pdf(self, pdf_id: str) -> bytes:
        with self.metrics.provider_call(PROVIDER, "fetch_pdf"):
            if self.settings.pdf_method == "POST":
                status, body = await self._call("POST", self.settings.pdf_url,
                                                data={"pdfId": pdf_id})
            else:
                status, body = await self._call("GET", self.settings.pdf_url,
                                                params={"pdfId": pdf_id})
            return interpret_pdf(status, body)
