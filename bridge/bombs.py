"""Decompression bombs told from their headers, before a mail's `250`, without decoding them.

A 10 KB TIFF can say 13000 x 13000 pixels and a 300 KB PDF can inflate to 300 MB: cheap to
send, minutes of work and hundreds of megabytes to whoever decodes them. What a picture will
cost is written in its headers, and what a PDF will cost shows when its compressed streams are
inflated and thrown away; both are read here from the whole decoded attachment, so that the
sender is refused during the SMTP dialogue (rule 6), not minutes later by email.

The headers are read as the decoder that later reads the file (Pillow) reads them, because a
bomb hides where a reader that stops early does not look: a TIFF's directories may be anywhere
in the file (often at its end) and each page has its own; a JPEG's frame header comes after
its APP segments (a phone's EXIF block is tens of kilobytes), and Pillow takes the last one
before the scan; a PNG may have chunks before its header, and Pillow believes the last header
before the image data. Every walk is bounded, in steps and in memory: nothing is decoded, no
inflated byte is kept.

Pure and single-threaded; run in the sandbox's child (`bridge.sandbox`), like all parsing of
mail.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Literal

from bridge.filetypes import Kind

MAX_SEGMENTS = 65_536
"""JPEG markers or PNG chunks walked before the picture's data; real pictures have tens."""
MAX_TIFF_ENTRIES = 1 << 20
"""TIFF directory entries read in all; a fax page has about fifteen."""

INFLATE_INPUT = 64 * 1024  # compressed bytes handed to zlib at a time
INFLATE_OUTPUT = 1 << 20  # the most zlib may inflate in one call: all that is ever held


class Unmeasurable(ValueError):
    """The picture's headers go on past the bounds above: no real picture does that."""


# --- pictures -------------------------------------------------------------------------------


def picture_sizes(kind: Kind, data: bytes, max_pages: int) -> Iterator[tuple[int, int]]:
    """The (width, height) each header of the picture `data` announces, in file order: every
    TIFF page (up to `max_pages` + 1: a fax is refused past `max_pages` before its further
    pages are decoded), every frame header of a JPEG before its scan, every header chunk of a
    PNG before its image data. Headers cut off by the end of `data` are not reported; a file
    past `MAX_SEGMENTS` or `MAX_TIFF_ENTRIES` raises `Unmeasurable`."""
    if kind is Kind.TIFF:
        return _tiff_sizes(data, max_pages + 1)
    if kind is Kind.PNG:
        return _png_sizes(data)
    if kind is Kind.JPEG:
        return _jpeg_sizes(data)
    return iter(())


def _png_sizes(data: bytes) -> Iterator[tuple[int, int]]:
    position = 8  # after the signature
    for _ in range(MAX_SEGMENTS):
        if position + 8 > len(data):
            return
        length, chunk = struct.unpack_from(">I4s", data, position)
        if chunk == b"IDAT":  # Pillow reads no header past here
            return
        if chunk == b"IHDR" and length >= 8 and position + 16 <= len(data):
            width, height = struct.unpack_from(">II", data, position + 8)
            yield width, height
        position += 12 + length  # length, type, data, CRC
    raise Unmeasurable("more PNG chunks before the image data than any picture has")


_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15, not DHT/JPG/DAC
_JPEG_BARE = frozenset({0x00, 0x01, *range(0xD0, 0xDA)})  # markers without a length: RSTn, SOI, EOI
_JPEG_SCAN = 0xDA


def _jpeg_sizes(data: bytes) -> Iterator[tuple[int, int]]:
    """As Pillow walks a JPEG: bytes between segments skipped, fill bytes too, every frame
    header up to the start of the scan."""
    position = 2  # after the start-of-image marker
    for _ in range(MAX_SEGMENTS):
        position = data.find(b"\xff", position)
        if position < 0 or position + 4 > len(data):
            return
        marker = data[position + 1]
        if marker == 0xFF:  # a fill byte
            position += 1
            continue
        if marker in _JPEG_BARE:
            position += 2
            continue
        if marker == _JPEG_SCAN:
            return
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2:
            return
        if marker in _JPEG_FRAMES and length >= 7 and position + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, position + 5)
            yield width, height
        position += 2 + length
    raise Unmeasurable("more JPEG segments before the scan than any picture has")


_TIFF_TYPE_SIZES = {1: 1, 3: 2, 4: 4, 16: 8}  # BYTE, SHORT, LONG, LONG8: what a size is
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


def _tiff_sizes(data: bytes, max_directories: int) -> Iterator[tuple[int, int]]:
    """Every directory of the chain from the header, as Pillow's pages are; a directory that
    loops back ends the chain, as one cut off does."""
    order = "<" if data.startswith(b"II") else ">"
    if len(data) < 8:
        return
    (offset,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    entries_left = MAX_TIFF_ENTRIES
    while offset and offset not in seen and len(seen) < max_directories:
        seen.add(offset)
        if offset + 2 > len(data):
            return
        (count,) = struct.unpack_from(order + "H", data, offset)
        end = offset + 2 + 12 * count
        if end > len(data):
            return
        entries_left -= count
        if entries_left < 0:
            raise Unmeasurable("more TIFF directory entries than any fax has")
        width = height = -1
        for tag, kind, _, value in struct.iter_unpack(order + "HHI4s", data[offset + 2:end]):
            if tag not in (_TIFF_WIDTH, _TIFF_HEIGHT) or kind not in _TIFF_TYPE_SIZES:
                continue
            found = _tiff_value(data, order, kind, value)
            if tag == _TIFF_WIDTH:  # a repeated tag: Pillow keeps the last, we the largest
                width = max(width, found)
            else:
                height = max(height, found)
        if width >= 0 and height >= 0:
            yield width, height
        if end + 4 > len(data):
            return
        (offset,) = struct.unpack_from(order + "I", data, end)


def _tiff_value(data: bytes, order: str, kind: int, value: bytes) -> int:
    """The first value of a directory entry: in the entry when it fits, else where it points."""
    size = _TIFF_TYPE_SIZES[kind]
    code = order + {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    if size <= 4:
        (found,) = struct.unpack_from(code, value)
        return int(found)
    (pointer,) = struct.unpack_from(order + "I", value)
    if pointer + size > len(data):
        return -1
    (found,) = struct.unpack_from(code, data, pointer)
    return int(found)


# --- PDF ------------------------------------------------------------------------------------

# The keyword that starts a stream's data; found by its literal first (C speed: a look-behind
# here made the search forty times slower), then the end of "endstream" is skipped.
_STREAM = re.compile(rb"stream(?:\r\n|\n|\r)")
_DICTIONARY_LOOKBACK = 4096  # bytes before `stream` searched for its dictionary
_IMAGE = re.compile(rb"/Subtype\s*/Image(?![A-Za-z])")

PdfExcess = Literal["total", "stream"]


def pdf_excess(data: bytes, total_cap: int, stream_cap: int) -> PdfExcess | None:
    """Whether the Flate streams of the PDF `data` inflate too far: "total" when together they
    give more than `total_cap` bytes, "stream" when one gives more than `stream_cap` (0: no
    such cap), None when neither.

    Which streams: all but images, that is page contents, forms, fonts, object and xref
    streams: what draws the pages and what a reader must inflate to find them. `stream_cap` is
    pypdf's own cap on one stream (`zlib_maximum_output_length`), which the conversion after
    `250` meets when it inflates page contents and object streams. Images (/Subtype /Image in
    their dictionary) are left alone: the conversion copies them without inflating them, a
    renderer decodes an image only as far as its /Width and /Height ask, and inflating them
    here cost a PDF of 20 Flate-compressed grey scans 137 ms before its `250`, 66 times its
    whole parse by pypdf (`bench/bombs.py`). A raw scan cannot tell page contents from fonts
    without resolving the document's references, which is a full parse: both count.

    A stream is inflated when its data starts with a zlib or gzip header (as pypdf reads
    FlateDecode, whatever the dictionary says), or as raw deflate when its dictionary names
    /FlateDecode without one (as lenient readers do). Inflated output is counted and dropped,
    `INFLATE_OUTPUT` bytes at a time; the scan stops as soon as `total_cap` is passed, or
    after a stream past `stream_cap` (the total, passed too, has the say). A stream that is
    not what it claims stops at its first error, counting what it gave.
    """
    total = 0
    position = 0
    view = memoryview(data)
    while (found := _STREAM.search(data, position)) is not None:
        start = found.end()
        position = start
        if data[found.start() - 1:found.start()].isalpha():  # "endstream", or some other word
            continue
        dictionary = data[max(0, found.start() - _DICTIONARY_LOOKBACK):found.start()]
        dictionary = dictionary[dictionary.rfind(b"obj") + 1:]  # its own, not the one before
        wbits = _flate_wbits(data[start:start + 2], dictionary)
        if wbits is None or _IMAGE.search(dictionary):
            continue
        inflated, consumed = _inflate(view[start:], wbits, total_cap - total)
        total += inflated
        if total > total_cap:
            return "total"
        if 0 < stream_cap < inflated:
            return "stream"
        position = start + max(consumed, 0)
    return None


def _flate_wbits(head: bytes, dictionary: bytes) -> int | None:
    """How to inflate a stream whose data begins with `head`; None: it is not Flate."""
    if head == b"\x1f\x8b" or (len(head) == 2 and head[0] & 0x0F == 8
                              and int.from_bytes(head, "big") % 31 == 0):
        return zlib.MAX_WBITS | 32  # zlib or gzip, told by its header
    return -zlib.MAX_WBITS if b"/FlateDecode" in dictionary else None


def _inflate(compressed: memoryview, wbits: int, room: int) -> tuple[int, int]:
    """Inflate from the start of `compressed` until its stream ends, fails or gives more than
    `room` bytes; return the bytes it gave and the compressed bytes it took.

    Once the stream has ended zlib keeps the rest of the input as `unused_data` and, when the
    call had a `max_length`, leaves the same bytes in `unconsumed_tail` too: `eof` is what says
    the stream is done."""
    inflater = zlib.decompressobj(wbits)
    total = 0
    fed = 0
    try:
        while fed < len(compressed) and not inflater.eof and total <= room:
            chunk = compressed[fed:fed + INFLATE_INPUT]
            fed += len(chunk)
            total += len(inflater.decompress(chunk, INFLATE_OUTPUT))
            while inflater.unconsumed_tail and not inflater.eof and total <= room:
                total += len(inflater.decompress(inflater.unconsumed_tail, INFLATE_OUTPUT))
    except zlib.error:
        pass
    if inflater.eof:
        return total, fed - len(inflater.unused_data)
    return total, fed - len(inflater.unconsumed_tail)
