"""The providers' data formats: the documents they carry and the times they write.

Both simulators count pages of what they are sent or make up what they answer, and both write
times without a zone; each of those has one definition here so the two cannot drift apart.
"""

from __future__ import annotations

import io
import re
import struct
from datetime import datetime, timedelta, timezone, tzinfo

from pypdf import PdfWriter

TURKEY_TIME = timezone(timedelta(hours=3), "TRT")
"""FaxMAX's documents give no zone for their times; Turkey has been fixed UTC+3 since 2016."""

_PAGE_RE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def count_pdf_pages(document: bytes) -> int:
    """Count `/Type /Page` objects (not `/Pages`): cheap, good enough for a simulator."""
    return len(_PAGE_RE.findall(document))


def _japan_time() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Asia/Tokyo")
    except (ImportError, LookupError, OSError, ValueError):  # no tz database: Japan has no DST
        return timezone(timedelta(hours=9), "JST")


JAPAN_TIME = _japan_time()
"""秒速FAX Plus's documents give no zone for `receiveDate`; Japan time is assumed."""


def count_tiff_pages(document: bytes) -> int:
    """Count a TIFF's IFDs by walking the next-IFD offsets; 1 when it is not a readable TIFF.

    Cheap and defensive: stops at a loop, a truncated IFD or an offset past the end.
    """
    if document[:4] == b"II*\x00":
        order = "<"
    elif document[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    (offset,) = struct.unpack_from(order + "I", document, 4) if len(document) >= 8 else (0,)
    seen: set[int] = set()
    count = 0
    while offset and offset not in seen and offset + 2 <= len(document):
        seen.add(offset)
        (entries,) = struct.unpack_from(order + "H", document, offset)
        end = offset + 2 + 12 * entries
        if end + 4 > len(document):
            break  # truncated IFD: not a page we could read
        count += 1
        (offset,) = struct.unpack_from(order + "I", document, end)
    return count or 1


def format_provider_time(moment: datetime) -> str:
    """Times as both providers write them: `YYYY-MM-DD HH:MM:SS`, no zone."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def blank_pdf(pages: int, title: str = "") -> bytes:
    """A valid PDF of `pages` blank A4 pages (pypdf); `title` makes otherwise equal ones differ."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    if title:
        writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
