"""Builders for the documents fax-bridge handles, made in memory with Pillow and pypdf.

Tests across the project import these so that every test uses real files of each kind rather
than stand-ins; they are small enough to build on the fly and deterministic.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw
from pypdf import PdfWriter
from pypdf.generic import NameObject, StreamObject

FAX_PAGE_SIZE = (1728, 2292)
"""A fine-resolution fax page in pixels: A4-wide scan line, 196 lines per inch."""

FAX_DPI = (204, 196)


def make_pdf(pages: int, *, width: float = 612, height: float = 792) -> bytes:
    """A PDF of `pages` blank pages (US Letter unless told otherwise)."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=width, height=height)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_encrypted_pdf(pages: int, password: str = "secret") -> bytes:
    """A PDF that needs `password` to open."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=612, height=792)
    writer.encrypt(password)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _drawn(
    mode: str, size: tuple[int, int], background: str | int | tuple[int, ...]
) -> Image.Image:
    """An image with a black frame and a diagonal, so no two sizes compress alike."""
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((0, 0, width - 1, height - 1), outline=0)
    draw.line((0, 0, width - 1, height - 1), fill=0)
    return image


def make_png(
    w: int, h: int, alpha: bool = False, *, dpi: tuple[float, float] | None = None
) -> bytes:
    """An RGB PNG, or RGBA with a half-transparent left half when `alpha` is set."""
    image = _drawn("RGBA" if alpha else "RGB", (w, h), (200, 220, 255, 255))
    if alpha:
        image.paste((255, 0, 0, 128), (0, 0, w // 2, h))
    buffer = io.BytesIO()
    if dpi is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", dpi=dpi)
    return buffer.getvalue()


def make_jpeg(w: int, h: int, *, dpi: tuple[int, int] | None = None) -> bytes:
    """An RGB baseline JPEG; without `dpi` it states no resolution (JFIF density units 0)."""
    image = _drawn("RGB", (w, h), (255, 240, 200))
    buffer = io.BytesIO()
    if dpi is None:
        image.save(buffer, format="JPEG", quality=85)
    else:
        image.save(buffer, format="JPEG", quality=85, dpi=dpi)
    return buffer.getvalue()


def make_tiff(pages: int, compression: str = "group4") -> bytes:
    """A multi-page bilevel fax TIFF: fine resolution, one strip per page as fax software writes.

    Page n (from 1) carries n black bars, so pages can be told apart.
    """
    frames = []
    for page in range(1, pages + 1):
        image = _drawn("1", FAX_PAGE_SIZE, 1)
        draw = ImageDraw.Draw(image)
        for bar in range(page):
            top = 100 + bar * 60
            draw.rectangle((100, top, 1600, top + 30), fill=0)
        frames.append(image)
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="TIFF",
        compression=compression,
        dpi=FAX_DPI,
        save_all=True,
        append_images=frames[1:],
        strip_size=2**30,
    )
    return buffer.getvalue()


def make_gif(w: int, h: int) -> bytes:
    """A GIF: a picture format fax-bridge refuses."""
    buffer = io.BytesIO()
    _drawn("P", (w, h), 1).save(buffer, format="GIF")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def make_png_bomb(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims `w` x `h` grey pixels: a decompression bomb's shape.

    Only the first row is present, so nothing huge is ever allocated by building it.
    """
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    first_row = zlib.compress(b"\x00" + b"\xff" * min(w, 4096))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", first_row)
        + _png_chunk(b"IEND", b"")
    )


def make_pdf_bomb(inflated_mb: int = 360) -> bytes:
    """A valid one-page PDF whose content stream inflates to `inflated_mb` MB (built in chunks,
    so making it costs little memory)."""
    packer = zlib.compressobj(9)
    chunk = b"0 0 m " * 174_763  # ~1 MB
    compressed = b"".join(packer.compress(chunk) for _ in range(inflated_mb)) + packer.flush()
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    stream = StreamObject()
    stream.set_data(compressed)
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _white_g4_strip(height: int) -> bytes:
    """CCITT G4 data of `height` all-white rows: one bit per row (vertical mode, V0), then
    the end-of-facsimile block. Any width decodes from it, so a bomb's strip stays tiny."""
    bits = "1" * height + "000000000001" * 2
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def make_tiff_bomb(*pages: tuple[int, int], directories_at_end: bool = True) -> bytes:
    """A little-endian G4 TIFF, written by hand, whose pages (width, height) may claim any size:
    each is one tiny strip of white rows, so nothing large is ever allocated to make it.

    `directories_at_end` puts the image file directories after the strips, as many scanners
    and fax programs write them; else they come first, right after the 8-byte header."""
    strips = [_white_g4_strip(height) for _, height in pages]
    entries = 9
    directory_size = 2 + 12 * entries + 4
    if directories_at_end:
        strip_offsets = [8 + sum(len(s) for s in strips[:i]) for i in range(len(strips))]
        first_directory = 8 + sum(len(s) for s in strips)
    else:
        first_directory = 8
        start = 8 + directory_size * len(pages)
        strip_offsets = [start + sum(len(s) for s in strips[:i]) for i in range(len(strips))]
    directories = b""
    for index, ((width, height), strip, offset) in enumerate(zip(pages, strips, strip_offsets,
                                                                             strict=True)):
        next_directory = (first_directory + directory_size * (index + 1)
                          if index + 1 < len(pages) else 0)
        tags = [(256, 4, width), (257, 4, height), (258, 3, 1), (259, 3, 4), (262, 3, 0),
                (273, 4, offset), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
        directories += (struct.pack("<H", entries)
                        + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                   for tag, kind, value in tags)
                        + struct.pack("<I", next_directory))
    header = b"II*\x00" + struct.pack("<I", first_directory)
    if directories_at_end:
        return header + b"".join(strips) + directories
    return header + directories + b"".join(strips)


def with_jpeg_comment(jpeg: bytes, size: int) -> bytes:
    """`jpeg` with a comment segment of `size` bytes right after its start: the frame header
    (its size) then lies beyond the first kilobyte, as behind a phone's large EXIF block."""
    assert size <= 65_533
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", size + 2) + b"x" * size + jpeg[2:]


def make_jpeg_bomb(w: int, h: int, *, comment: int = 4096) -> bytes:
    """A tiny JPEG whose frame header claims `w` x `h` pixels, behind a `comment`-byte comment
    segment. Its scan is an 8 x 8 picture's: nothing large is ever made."""
    jpeg = bytearray(make_jpeg(8, 8))
    frame = jpeg.index(b"\xff\xc0")
    jpeg[frame + 5 : frame + 9] = struct.pack(">HH", h, w)
    return with_jpeg_comment(bytes(jpeg), comment) if comment else bytes(jpeg)


def make_png_hidden_bomb(w: int, h: int, *, second_header: bool = False) -> bytes:
    """A PNG that says `w` x `h` where a look at its first kilobyte does not see it: behind a
    4 KB text chunk before its header (Pillow reads chunks in any order), or, with
    `second_header`, in a second header chunk after a small first one (Pillow believes the
    last)."""
    small = make_png(20, 10)
    big = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if second_header:
        return small[:33] + _png_chunk(b"tEXt", b"Comment\x00" + b"x" * 4096) + big + small[33:]
    return small[:8] + _png_chunk(b"tEXt", b"Comment\x00" + b"x" * 4096) + big + small[33:]
