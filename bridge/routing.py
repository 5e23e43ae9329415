"""Who receives a fax: by the number that received it, else the default, else the admin.

A routing key matches whether it is written in international form ("81368680000") or exactly as
the provider reports the number ("0368680000"); numbers are compared after normalising both with
the country of the provider that reported the fax.
"""

from __future__ import annotations

from bridge.config import Settings
from bridge.numbers import to_international


def recipients(settings: Settings, reported_number: str, country_code: str) -> tuple[str, ...]:
    routing = settings.routing
    wanted = to_international(reported_number, country_code=country_code)
    for key, addresses in routing.numbers.items():
        if key == reported_number or (
                wanted and to_international(key, country_code=country_code) == wanted):
            return addresses
    if routing.default:
        return routing.default
    return (routing.admin,) if routing.admin else ()
