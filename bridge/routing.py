"""Who receives a fax: by the number that received it, else the default, else the admin.

A routing key matches whether it is written in international form ("81368680000") or exactly as
the provider reports the number ("0368680000"); numbers are compared after normalising both with
the country of the provider that reported the fax.
"""

from __future__ import annotations

from bridge.config import Settings
from bridge.config.settings import InboundFormat
from bridge.numbers import to_international


def _matches(key: str, reported_number: str, wanted: str, country_code: str) -> bool:
    return key == reported_number or bool(
        wanted and to_international(key, country_code=country_code) == wanted)


def recipients(settings: Settings, reported_number: str, country_code: str) -> tuple[str, ...]:
    routing = settings.routing
    wanted = to_international(reported_number, country_code=country_code)
    for key, addresses in routing.numbers.items():
        if _matches(key, reported_number, wanted, country_code):
            return addresses
    if routing.default:
        return routing.default
    return (routing.admin,) if routing.admin else ()


def format_for(settings: Settings, reported_number: str, country_code: str) -> InboundFormat:
    """What the number's faxes' emails carry (`routing.formats`), matched as `recipients`
    matches; "pdf" for a number not listed."""
    wanted = to_international(reported_number, country_code=country_code)
    for key, chosen in settings.routing.formats.items():
        if _matches(key, reported_number, wanted, country_code):
            return chosen
    return "pdf"
