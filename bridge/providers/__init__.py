"""The fax providers, named once: the key the database, the metrics and the logs use, and the
name people read in emails and alerts."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    FAXMAX = "faxmax"
    BYOSOKU = "byosoku"  # 秒速FAX Plus

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES[self]


DISPLAY_NAMES = {Provider.FAXMAX: "FaxMAX", Provider.BYOSOKU: "秒速FAX Plus"}


def display_name(key: str) -> str:
    """The name of the provider stored as `key`; the key itself for one this version does not
    know (a row written by a newer fax-bridge)."""
    try:
        return Provider(key).display_name
    except ValueError:
        return key
