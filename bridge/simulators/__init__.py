"""Loopback simulators of the fax providers, for the tests and for `fax-bridge demo`.

Each simulator is a small aiohttp server on 127.0.0.1 that behaves as the provider documentation
(summarised in `docs/PROVIDERS.md`) says, records what it was sent, and can be scripted to
misbehave. It is the reference the bridge's provider clients are tested against: strict where the
documents are clear, tolerant where they contradict themselves.

- `loopback`: what every simulator shares (`LoopbackServer`: start/stop, event-based waiting,
  tracked background tasks, one owned `aiohttp.ClientSession`, pushes with retries).
- `formats`: page counting, blank PDFs, the providers' zoneless times and their time zones.
- `faxmax`, `faxmax_rpc`: FaxMAX (`FaxMaxSimulator`), and how its send call is read and checked.
- `byosoku`: 秒速FAX Plus (`ByosokuSimulator`).

The names below are the simulators' public surface; import them from here.
"""

from bridge.simulators.byosoku import ByosokuFault, ByosokuFaultKind, ByosokuSimulator
from bridge.simulators.faxmax import AcceptedFax, FaxMaxSimulator, SendRequest
from bridge.simulators.faxmax_script import ALL_PAGES, Fault, FaultKind, Outcome
from bridge.simulators.formats import (
    JAPAN_TIME,
    count_pdf_pages,
    count_tiff_pages,
    format_provider_time,
)
from bridge.simulators.loopback import PushAttempt

__all__ = [
    "ALL_PAGES",
    "JAPAN_TIME",
    "AcceptedFax",
    "ByosokuFault",
    "ByosokuFaultKind",
    "ByosokuSimulator",
    "Fault",
    "FaultKind",
    "FaxMaxSimulator",
    "Outcome",
    "PushAttempt",
    "SendRequest",
    "count_pdf_pages",
    "count_tiff_pages",
    "format_provider_time",
]
