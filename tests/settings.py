"""Settings for a bridge under test, in this process or as `fax-bridge serve`: loopback
listeners on ephemeral ports, the FaxMAX simulator, fast retries, trusted loopback senders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.app import Bridge
from bridge.config import FaxmaxSettings, Settings
from bridge.dialling import StatusRules

PUSH_TOKEN = "test-push-token-0123456789"
RULES = StatusRules(FaxmaxSettings())  # the default status rules, for tests of the store alone


def settings_for(tmp_path: Path, faxmax_url: str, relay_port: int | None = None,
                 **sections: dict[str, Any]) -> Settings:
    """Test settings: loopback everything, fast retries, trusted loopback senders. LibreOffice
    only where a test asks for it (`documents={"office": "auto"}`): the service starts one
    at once, for a second of CPU, and most tests send no Office document. OCR likewise
    (`documents={"ocr": "auto"}`): it takes a second per received page."""
    base = Settings()
    mail = replace(base.mail, maildir=str(tmp_path / "maildir"), retry_base=0.05,
                   retry_cap=0.2, timezone="Europe/Istanbul")
    if relay_port is not None:
        mail = replace(mail, transport="smtp", smtp_host="127.0.0.1", smtp_port=relay_port,
                       smtp_security="none", smtp_timeout=5)
    settings = replace(
        base,
        data_dir=str(tmp_path / "data"),
        smtp=replace(base.smtp, listen="127.0.0.1:0", trusted_networks=("127.0.0.0/8",)),
        http=replace(base.http, listen="127.0.0.1:0", push_token=PUSH_TOKEN),
        faxmax=replace(base.faxmax, enabled=True, url=faxmax_url, token="sim-token",
                       retry_base=0.05, retry_cap=0.2, timeout=5),
        mail=mail,
        documents=replace(base.documents, office="off", ocr="off"),
    )
    for name, values in sections.items():
        settings = replace(settings, **{name: replace(getattr(settings, name), **values)})
    return settings


MakeBridge = Callable[..., Awaitable[Bridge]]
"""The `make_bridge` fixture: `await make_bridge(**sections)` starts a Bridge on
`settings_for(..., **sections)`."""
