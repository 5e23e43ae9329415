"""Pictures of fax pages for email: a received fax at a glance, and page 1 as it was printed.

Everything here reads hostile input (a received fax, or the PDF made from a sender's mail) and
so runs only in a sandboxed child (`bridge.sandbox`), under its memory cap and time limit. PDF
pages are rendered with PDFium (pypdfium2, whose wheels carry the library: nothing to install
or download at run time); TIFF pages, which is what FaxMAX delivers, are read by Pillow.

Every page is rendered to a fixed width, and its height is cut at `MAX_ASPECT` times that, so
a page of any stated size (a hostile PDF may state a mile) costs the same bounded memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pypdfium2
from PIL import Image

from bridge import documents
from bridge.config.settings import Resolution
from bridge.errors import DocumentError

PREVIEW_WIDTH = 600  # page 1 in a received fax's email: readable on a phone
THUMBNAIL_WIDTH = 150  # the pages after it
MAX_THUMBNAILS = 4
MAX_ASPECT = 3  # a page's picture is at most this many times as tall as it is wide
PREVIEW_BUDGET = 150 * 1024  # page 1's PNG, at most; a larger one is left out of the email
FAX_WIDTH = 1728  # dots in a fax scan line (ITU-T T.4, A4 at 204 dpi)
FAX_DPI = 204  # across the line, at every resolution
LINES_PER_INCH: dict[str, int] = {"normal": 98, "fine": 196, "superfine": 392}
GREYS = 16  # levels a received fax's preview keeps: legible, and a third the bytes of 256


@dataclass(frozen=True)
class Picture:
    """One page's PNG and its size in pixels, for the template's `width`/`height`."""

    page: int  # 1-based
    png: bytes
    width: int
    height: int


def _png(image: Image.Image, page: int) -> Picture:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return Picture(page=page, png=buffer.getvalue(), width=image.width, height=image.height)


def _scaled_height(width: int, page_width: float, page_height: float) -> int:
    return max(1, min(round(width * page_height / page_width), MAX_ASPECT * width))


def _tiff_pages(data: bytes, count: int) -> Iterator[tuple[Image.Image, float]]:
    """The first `count` pages of a fax TIFF in grey, each with its true height/width ratio
    (a normal-resolution fax has half as many lines per inch as dots)."""
    with Image.open(io.BytesIO(data)) as tiff:
        for index in range(min(count, getattr(tiff, "n_frames", 1))):
            tiff.seek(index)
            xdpi, ydpi = tiff.info.get("dpi", (FAX_DPI, LINES_PER_INCH["fine"]))
            ratio = (tiff.height / (ydpi or 1)) / (tiff.width / (xdpi or 1))
            yield tiff.convert("L"), ratio


def _pdf_pages(data: bytes, count: int, width: int) -> Iterator[tuple[Image.Image, float]]:
    """The first `count` pages of a PDF rendered in grey `width` pixels wide (the height cut
    at MAX_ASPECT), each with its height/width ratio."""
    pdf = pypdfium2.PdfDocument(data)
    try:
        for index in range(min(count, len(pdf))):
            page = pdf[index]
            try:
                page_width, page_height = page.get_size()
                if page_width <= 0 or page_height <= 0:
                    raise DocumentError(f"page {index + 1} of the PDF has no size")
                cut = max(0.0, page_height - MAX_ASPECT * page_width)
                bitmap = page.render(scale=width / page_width, grayscale=True,
                                     crop=(0, cut, 0, 0))
                image = bitmap.to_pil().convert("L")
                bitmap.close()
            finally:
                page.close()
            yield image, (page_height - cut) / page_width
    finally:
        pdf.close()


def _pages(data: bytes, count: int, width: int) -> Iterator[tuple[Image.Image, float]]:
    kind = documents.sniff(data[:documents.SNIFF_BYTES])
    if kind is documents.Kind.TIFF:
        return _tiff_pages(data, count)
    if kind is documents.Kind.PDF:
        return _pdf_pages(data, count, width)
    raise DocumentError("the fax is neither a TIFF nor a PDF")


def fax_pictures(data: bytes) -> tuple[Picture, ...]:
    """Page 1 of a received fax `PREVIEW_WIDTH` wide, and up to `MAX_THUMBNAILS` pages after
    it `THUMBNAIL_WIDTH` wide. In 16 greys rather than the fax's black and white: scaled to a
    third of its width, a 1-bit page turned to grey keeps its strokes, where black and white
    breaks thin type apart. Page 1 over `PREVIEW_BUDGET` is left out (an empty answer): a
    photograph faxed in halftone compresses badly, and the email must stay light."""
    pictures: list[Picture] = []
    for index, (image, ratio) in enumerate(_pages(data, 1 + MAX_THUMBNAILS, PREVIEW_WIDTH)):
        width = PREVIEW_WIDTH if index == 0 else THUMBNAIL_WIDTH
        height = max(1, min(round(width * ratio), MAX_ASPECT * width))
        small = image.resize((width, height), Image.Resampling.LANCZOS)
        picture = _png(small.quantize(GREYS, dither=Image.Dither.NONE), index + 1)
        if index == 0 and len(picture.png) > PREVIEW_BUDGET:
            return ()
        pictures.append(picture)
    return tuple(pictures)


def fax_image(image: Image.Image, ratio: float, resolution: Resolution) -> Image.Image:
    """A page as a fax machine receives it: `FAX_WIDTH` dots across, and as many lines as
    its resolution gives the page's height, in black and white. Floyd–Steinberg error
    diffusion, not a threshold: grey in the document (shading, a light-coloured letterhead, a
    photograph) reaches the recipient as a pattern of dots, which is what fax converters send,
    where a threshold would print it all white or all black and the picture would flatter or
    misrepresent the page."""
    inches_high = ratio * FAX_WIDTH / FAX_DPI
    lines = max(1, round(inches_high * LINES_PER_INCH[resolution]))
    scan = image.resize((FAX_WIDTH, lines), Image.Resampling.BOX)
    return scan.convert("1", dither=Image.Dither.FLOYDSTEINBERG)


def printed_page(pdf: bytes, resolution: Resolution) -> Picture:
    """Page 1 of the PDF that was sent, as the recipient's machine printed it: rendered to
    the fax's dots and lines (`fax_image`), then shown `PREVIEW_WIDTH` wide at the page's true
    proportions, still in black and white (dithered again, so that the dots' density, and
    with it the grey they make, survives the scaling, where dropping dots would lose thin
    lines)."""
    [(image, ratio)] = list(_pdf_pages(pdf, 1, FAX_WIDTH))
    received = fax_image(image, ratio, resolution)
    height = _scaled_height(PREVIEW_WIDTH, 1.0, ratio)
    shown = received.convert("L").resize((PREVIEW_WIDTH, height), Image.Resampling.BOX)
    return _png(shown.convert("1", dither=Image.Dither.FLOYDSTEINBERG), 1)


def pdf_to_tiff(pdf: bytes, max_pages: int) -> bytes:
    """A received PDF as a fine-resolution G4 TIFF, for a number whose faxes are wanted as
    TIFF (`routing.formats`); pages past `max_pages` are not converted."""
    pages = [fax_image(image, ratio, "fine") for image, ratio in _pdf_pages(pdf, max_pages,
                                                                           FAX_WIDTH)]
    if not pages:
        raise DocumentError("the PDF has no pages")
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", compression="group4", save_all=True,
                  append_images=pages[1:], dpi=(FAX_DPI, LINES_PER_INCH["fine"]))
    return buffer.getvalue()
