"""What a file is, told by its magic bytes alone: a name or a declared MIME type is a claim, not
a fact. Pure and cheap, fit for the SMTP conversation itself: `sniff` and `describe_unsupported`
decide what `bridge.documents` accepts (`bridge.bombs` reads what size a picture announces).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

SNIFF_BYTES = 1024
"""How many leading bytes `sniff`, `describe_unsupported` and `quick_check` look at.

1024 because PDF readers accept the `%PDF-` header anywhere in the first kilobyte, and some
mail gateways and scanners put junk before it.
"""


class Kind(StrEnum):
    """The document types fax-bridge can fax; the value is the usual short name.

    PDF and the pictures are made into fax pages by `bridge.documents`; the others (`CONVERTED`)
    become a PDF through LibreOffice first (`bridge.office`)."""

    PDF = "pdf"
    TIFF = "tiff"
    PNG = "png"
    JPEG = "jpeg"
    OFFICE = "office"  # Word, Excel, PowerPoint (OLE2 or OOXML), OpenDocument, RTF
    HTML = "html"
    TEXT = "text"  # told by its declared type alone: plain text has no magic bytes


CONVERTED = frozenset({Kind.OFFICE, Kind.HTML, Kind.TEXT})


_IMAGE_SIGNATURES = (
    (b"II*\x00", Kind.TIFF),
    (b"MM\x00*", Kind.TIFF),
    (b"\x89PNG\r\n\x1a\n", Kind.PNG),
    (b"\xff\xd8\xff", Kind.JPEG),
)


def _is_webp(head: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == b"WEBP"


def _is_heic(head: bytes) -> bool:
    """iPhones mail photos as HEIC; naming it lets the sender know to re-save as JPEG."""
    brands = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")
    return head[4:8] == b"ftyp" and head[8:12] in brands


def _is_bmp(head: bytes) -> bool:
    """Two letters "BM" also start ordinary text, so the DIB header size must match too."""
    dib_header_sizes = (12, 40, 52, 56, 64, 108, 124)
    return (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in dib_header_sizes
    )


_FOREIGN_TYPES: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda head: head.startswith((b"GIF87a", b"GIF89a")), "a GIF image"),
    (_is_bmp, "a BMP image"),
    (_is_webp, "a WebP image"),
    (_is_heic, "an HEIC photo (the iPhone photo format)"),
    (lambda head: head.startswith(b"\x1f\x8b"), "a compressed (gzip) file"),
    (lambda head: head.startswith(b"7z\xbc\xaf\x27\x1c"), "a 7-Zip archive"),
    (lambda head: head.startswith(b"Rar!\x1a\x07"), "a RAR archive"),
)
OFFICE_WORDS = "a Word, Excel or PowerPoint document"


def _describe_zip(head: bytes) -> str:
    """Word, Excel and LibreOffice files are ZIP archives; tell them apart by the first entry.

    Their writers put a fixed first entry in the archive, so the name in the first local file
    header (at offset 30) is enough and is still "magic bytes", not the file's name.
    """
    name_length = int.from_bytes(head[26:28], "little")
    first_entry = head[30 : 30 + name_length]
    office_prefixes = (b"word/", b"xl/", b"ppt/", b"_rels/", b"docProps/")
    if first_entry == b"[Content_Types].xml" or first_entry.startswith(office_prefixes):
        return OFFICE_WORDS
    if first_entry == b"mimetype" and b"opendocument" in head:
        return "an OpenDocument (LibreOffice) document"
    return "a ZIP archive"


def describe_office(head: bytes) -> str | None:
    """Words for an Office document (`Kind.OFFICE`) by its container, or None if it is not one.

    Old Word, Excel and PowerPoint files (and password-protected new ones) are OLE2 compound
    files; new ones and OpenDocument files are ZIP archives with a fixed first entry; RTF is
    text that starts with its own signature."""
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return OFFICE_WORDS
    if head.startswith(b"{\\rtf"):
        return "an RTF document"
    if head.startswith(b"PK\x03\x04"):
        words = _describe_zip(head)
        return None if words == "a ZIP archive" else words
    return None


_HTML_STARTS = (b"<!doctype html", b"<html")


def _is_html(head: bytes) -> bool:
    """An HTML file by its first tag (after a byte order mark and blank space)."""
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:20].lower()
    return start.startswith(_HTML_STARTS)


def text_kind(head: bytes, declared: str) -> Kind | None:
    """A text attachment's kind: HTML by its first tag or its declared type, plain text by
    its declared type (`text/plain`) alone; never a file with a NUL byte, which is binary."""
    if b"\x00" in head:
        return None
    if declared == "text/html" or _is_html(head):
        return Kind.HTML
    return Kind.TEXT if declared == "text/plain" else None


def _foreign_type(head: bytes) -> str | None:
    """Words for a type fax-bridge recognises by its signature but cannot fax, if any."""
    if head.startswith(b"PK\x03\x04"):
        return _describe_zip(head)
    office = describe_office(head)
    if office is not None:
        return office
    for matches, words in _FOREIGN_TYPES:
        if matches(head):
            return words
    return None


def describe_unsupported(head: bytes) -> str:
    """Name, for a person, what a file `sniff` did not accept is, e.g. "a ZIP archive".

    A refusal that says "a Word document" tells the sender what to do (print to PDF); one that
    says "unsupported type" does not.
    """
    return _foreign_type(head) or "a file of unknown type"


def sniff(head: bytes) -> Kind | None:
    """Say what `head` (the first `SNIFF_BYTES` of a file) is, by magic bytes only.

    Image signatures must sit at offset 0; the PDF header may appear anywhere in the first
    `SNIFF_BYTES`, as in real PDF readers, unless the file starts with the signature of
    another type: a ZIP archive holding a PDF, or an image whose metadata happens to contain
    "%PDF-", is not a PDF.
    """
    for signature, kind in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return kind
    if describe_office(head) is not None:
        return Kind.OFFICE
    if _foreign_type(head) is None and b"%PDF-" in head[:SNIFF_BYTES]:
        return Kind.PDF
    return None
