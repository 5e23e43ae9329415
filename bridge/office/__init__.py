"""Office documents, HTML and text made into PDF by LibreOffice (see `converter`)."""

from __future__ import annotations

import functools

from bridge.config import DocumentsSettings
from bridge.office import tools
from bridge.office.tools import Missing, Office

__all__ = ["Missing", "Office", "availability"]


@functools.cache
def _found(configured: str) -> Office | Missing:
    return tools.find(configured)


def availability(settings: DocumentsSettings) -> Office | Missing:
    """What `documents.office` gives here: LibreOffice, or why not. Looked for once per
    process (a few short programs; see `tools.find`)."""
    if settings.office == "off":
        return Missing("documents.office is \"off\"")
    return _found(settings.libreoffice)
