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
