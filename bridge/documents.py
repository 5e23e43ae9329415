"""Turn e-mail attachments into one faxable PDF, and received fax TIFFs into PDFs.

Every byte handled here comes from strangers: attachments from any mail client, TIFFs from a
provider. So the type of a file is decided by its magic bytes alone (`bridge.filetypes`: a
name or a declared MIME type is a claim, not a fact), every parser runs behind a guard that
turns any failure into a `DocumentError` naming the file in words the sender can act on, and
pixel and page caps stop hostile documents before they are decoded.

Images become PDF pages without loss wherever PDF can carry the original encoding (JPEG as-is,
CCITT G4 fax data as-is, PNG data as-is); only what PDF or img2pdf cannot carry directly is
re-encoded, and then losslessly as PNG, because every generation of JPEG loss makes small print
less legible after the fax machine has thresholded it to black and white.

`build_pdf`, `tiff_to_pdf` and `pdf_page_count` are meant to run in a worker process: they
briefly change process-wide Pillow and `warnings` state (restored on exit), which is not safe
across threads. `sniff`, `describe_unsupported` and `quick_check` are pure and cheap, fit for
the SMTP conversation itself; so is `check_bombs`, which reads a whole attachment's headers
(`bridge.bombs`) in the sandbox before the mail's `250`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path

import img2pdf
from PIL import Image, ImageOps, ImageSequence
from pypdf import PdfReader, PdfWriter, get_configuration
from pypdf.errors import LimitReachedError

from bridge import replies
from bridge.bombs import Unmeasurable, pdf_excess, picture_sizes
from bridge.errors import DocumentError
from bridge.files import atomic_path
from bridge.filetypes import (
    CONVERTED,
    SNIFF_BYTES,
    Kind,
    describe_office,
    describe_unsupported,
    sniff,
    text_kind,
)

__all__ = ["CONVERTED", "PICTURES", "SNIFF_BYTES", "TEXTS", "Kind", "Limits", "build_pdf",
           "check_bombs", "describe_unsupported", "pdf_page_count", "quick_check", "sniff",
           "tiff_to_pdf"]

_KIND_WORDS = {
    Kind.PDF: "PDF document",
    Kind.TIFF: "TIFF image",
    Kind.PNG: "PNG image",
    Kind.JPEG: "JPEG image",
}

_PILLOW_FORMATS = {Kind.TIFF: "TIFF", Kind.PNG: "PNG", Kind.JPEG: "JPEG"}

@dataclass(frozen=True)
class Limits:
    """Caps against hostile or absurd documents; the defaults suit faxing.

    `max_image_pixels` applies to each PNG or JPEG; `max_tiff_page_pixels` to each page of a
    TIFF, which is usually a fax page (a superfine fax page is 1728 x 4680 pixels) and of which
    there can be many, so it is capped tighter. `max_pdf_unpacked_bytes` caps what the Flate
    streams of one PDF (all but its images) inflate to (`documents.max_pdf_unpacked_mb`),
    checked before `250`.
    """

    max_pages: int = 200
    max_image_pixels: int = 50_000_000
    max_tiff_page_pixels: int = 2 * 1728 * 4680
    max_pdf_unpacked_bytes: int = 200 * 2**20

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"Limits.{field.name} must be at least 1")


def _pixel_cap(kind: Kind, limits: Limits) -> int:
    return limits.max_tiff_page_pixels if kind is Kind.TIFF else limits.max_image_pixels


def _unreadable(name: str, kind: Kind) -> DocumentError:
    return DocumentError(replies.UNREADABLE_FILE, name=name, kind=_KIND_WORDS[kind])


def _too_large(name: str, cap: int) -> DocumentError:
    return DocumentError(replies.PICTURE_TOO_LARGE, name=name, pixels=cap)


def _too_many_pages(name: str, max_pages: int) -> DocumentError:
    return DocumentError(replies.TOO_MANY_PAGES, name=name, max_pages=max_pages)


def _kind_of(name: str, head: bytes, size: int, declared: str = "", *,
             convertible: bool = False) -> Kind:
    """The type of a document of `size` bytes starting with `head`, or a refusal in words.
    Documents that LibreOffice must convert first (`CONVERTED`) are refused unless
    `convertible`."""
    if size == 0:
        raise DocumentError(replies.EMPTY_FILE, name=name)
    kind = sniff(head) or text_kind(head, declared)
    if kind is None or (kind in CONVERTED and not convertible):
        raise DocumentError(replies.UNSUPPORTED_FILE, name=name, what=describe_unsupported(head))
    return kind


OFFICE_KIND_WORDS = {Kind.HTML: "an HTML file", Kind.TEXT: "a text file"}
TEXTS = frozenset(OFFICE_KIND_WORDS)  # decoded from their charset before they are converted
PICTURES = frozenset({Kind.TIFF, Kind.PNG, Kind.JPEG})


def quick_check(filename: str, head: bytes, size: int, limits: Limits = Limits(), *,
                declared: str = "", office: bool = False) -> Kind:
    """Refuse hopeless attachments before the mail is accepted, without decoding anything.

    `head` is the first `SNIFF_BYTES` of the decoded attachment, `size` its length and
    `declared` its MIME type, which only plain text needs (it has no magic bytes). Office
    documents, HTML and text are refused here, saying what to send instead, unless `office`
    (LibreOffice can convert them). This catches wrong types and empty files, so the sender
    hears about them in the SMTP reply; bombs are `check_bombs`'s, and everything else is
    checked in full by `build_pdf`.
    """
    kind = _kind_of(filename, head, size, declared, convertible=True)
    if kind in CONVERTED and not office:
        what = describe_office(head) or OFFICE_KIND_WORDS[kind]
        raise DocumentError(replies.OFFICE_UNAVAILABLE, name=filename, what=what)
    return kind


def check_bombs(filename: str, kind: Kind, data: bytes, limits: Limits = Limits()) -> None:
    """Refuse a decompression bomb before the mail is accepted, from the whole decoded
    attachment `data` of `kind`, without decoding it: a picture (every TIFF page) whose
    headers announce more pixels than the caps of `limits`, or a PDF whose Flate streams
    (all but images) inflate past `limits.max_pdf_unpacked_bytes` together, or past pypdf's
    cap one by one, where `_open_pdf` would refuse it after `250` (`bridge.bombs`). Bounded
    work: headers are walked, inflated bytes counted and dropped."""
    if kind is Kind.PDF:
        excess = pdf_excess(data, limits.max_pdf_unpacked_bytes,
                            get_configuration().zlib_maximum_output_length)
        if excess == "total":
            raise DocumentError(replies.PDF_UNPACKS_TOO_LARGE, name=filename,
                                mb=limits.max_pdf_unpacked_bytes // 2**20)
        if excess == "stream":
            raise DocumentError(replies.PDF_BOMB, name=filename)
        return
    cap = _pixel_cap(kind, limits)
    try:
        for page, (width, height) in enumerate(picture_sizes(kind, data, limits.max_pages), 1):
            if width * height <= cap:
                continue
            if kind is Kind.TIFF and page > 1:
                raise DocumentError(replies.PAGE_PIXELS, page=page, name=filename, width=width,
                                    height=height, pixels=cap)
            raise DocumentError(replies.PICTURE_PIXELS, name=filename, width=width,
                                height=height, pixels=cap)
    except Unmeasurable as error:
        raise _unreadable(filename, kind) from error


@contextmanager
def _untrusted_input() -> Iterator[None]:
    """Silence library warnings that input can trigger, but make decompression bombs errors.

    Pillow and pypdf warn about quirks of the file (corrupt EXIF, odd xref tables); those are
    noise to us. A decompression bomb is not a quirk: it must stop the conversion.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextmanager
def _pixel_cap_enforced(name: str, cap: int) -> Iterator[None]:
    """Make Pillow's own bomb check, run at every `Image.open` (img2pdf's too), use `cap`.

    The process-wide Pillow setting is restored on the way out, and a tripped check becomes a
    refusal in words instead of an image decoded into gigabytes of memory.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = cap
    try:
        yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise _too_large(name, cap) from error
    finally:
        Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _reading(name: str, kind: Kind) -> Iterator[None]:
    """Turn any failure of a parser on `name` into a refusal that names the file.

    Deliberately broad: pypdf, Pillow and img2pdf raise almost any exception type on hostile
    input (KeyError, struct.error, RecursionError, bare Exception...), and each one means the
    same thing to the sender: the file cannot be read.
    """
    try:
        yield
    except DocumentError:
        raise
    except Exception as error:
        raise _unreadable(name, kind) from error


def _open_pdf(name: str, data: bytes) -> PdfReader:
    """A strictly parsed, unencrypted PDF with at least one page, or a refusal."""
    with _reading(name, Kind.PDF):
        reader = PdfReader(io.BytesIO(data), strict=True)
        if reader.is_encrypted:
            raise DocumentError(replies.ENCRYPTED_PDF, name=name)
        if len(reader.pages) == 0:
            raise DocumentError(replies.NO_PAGES, name=name)
        # Inflate every page's drawing once: a content-stream bomb is refused here, under
        # pypdf's decompression cap, instead of being passed on to the fax provider.
        try:
            for page in reader.pages:
                contents = page.get_contents()
                if contents is not None:
                    contents.get_data()
        except LimitReachedError as error:
            raise DocumentError(replies.PDF_BOMB, name=name) from error
    return reader


def _frames(image: Image.Image, kind: Kind) -> Iterator[Image.Image]:
    """The pages of an image: every TIFF directory, but only the main picture of a PNG or JPEG.

    Animated PNGs and multi-picture JPEGs (phone photos with depth maps) are one photo to the
    sender, so they make one page.
    """
    if kind is Kind.TIFF:
        yield from ImageSequence.Iterator(image)
    else:
        yield image


def _has_dpi(image: Image.Image) -> bool:
    """Whether the file states a real resolution; Pillow reports a missing TIFF one as 1 dpi."""
    dpi = image.info.get("dpi")
    return dpi is not None and min(dpi) > 1


@dataclass(frozen=True)
class _Survey:
    pages: int
    has_dpi: bool
    needs_flattening: bool


def _survey(name: str, data: bytes, kind: Kind, cap: int, room: int) -> _Survey:
    """Decode every page once, under the pixel cap, and note what the conversion needs to know.

    Decoding is the validation: img2pdf copies JPEG, PNG and G4 data into the PDF without
    decoding it, so a damaged file would otherwise only fail later, at the fax provider.
    Pillow's bomb check only sees the first TIFF page, hence the check on every page. Counting
    stops at `room + 1` pages, which is enough to know the file does not fit.
    """
    with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
        has_dpi = _has_dpi(image)
        pages = 0
        needs_flattening = False
        for frame in _frames(image, kind):
            pages += 1
            if pages > room:
                break
            if frame.width * frame.height > cap:
                raise _too_large(name, cap)
            frame.load()
            needs_flattening = needs_flattening or frame.has_transparency_data
    return _Survey(pages=pages, has_dpi=has_dpi, needs_flattening=needs_flattening)


def _to_eight_bits(frame: Image.Image) -> Image.Image:
    """16-bit greyscale scaled to 8 bits; a plain convert would clip it to almost white."""
    return frame.convert("I").point(lambda value: value * (1 / 256)).convert("L")


def _flatten(frame: Image.Image) -> Image.Image:
    """A frame as plain 1-bit, grey or RGB pixels, as they would look printed on white paper.

    Transparency is composited onto white here rather than kept as a PDF soft mask, because
    some fax rasterisers ignore soft masks and would print the hidden pixels (often black).
    """
    upright = ImageOps.exif_transpose(frame)
    if upright.mode.startswith("I;16"):
        return _to_eight_bits(upright)
    if upright.has_transparency_data:
        paper = Image.new("RGBA", upright.size, "white")
        return Image.alpha_composite(paper, upright.convert("RGBA")).convert("RGB")
    if upright.mode in ("1", "L", "RGB"):
        return upright
    return upright.convert("RGB")


def _png(image: Image.Image, dpi: tuple[float, float] | None) -> bytes:
    """Lossless re-encoding that keeps the resolution, so the page keeps its size."""
    buffer = io.BytesIO()
    if dpi is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", dpi=dpi)
    return buffer.getvalue()


def _flattened_pngs(data: bytes, kind: Kind) -> list[bytes]:
    """Every page re-encoded as a PNG that img2pdf accepts, for what it refused as it was."""
    with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
        return [_png(_flatten(frame), frame.info.get("dpi")) for frame in _frames(image, kind)]


_POINTS_PER_MM = 72 / 25.4
_A4 = (210 * _POINTS_PER_MM, 297 * _POINTS_PER_MM)
_LARGEST_FAX_PAPER = (257 * _POINTS_PER_MM, 364 * _POINTS_PER_MM)  # JIS B4, used by faxes in Japan
_shrink_onto_a4 = img2pdf.get_layout_fun(pagesize=_A4, fit=img2pdf.FitMode.shrink, auto_orient=True)

_Layout = Callable[[int, int, tuple[float, float]], tuple[float, float, float, float]]


def _fits_on_fax_paper(width: float, height: float) -> bool:
    short, long = sorted((width, height))
    return short <= _LARGEST_FAX_PAPER[0] and long <= _LARGEST_FAX_PAPER[1]


def _layout(has_dpi: bool) -> _Layout:
    """Page size: the image's own when it states a resolution and fits on fax paper, else A4.

    Without a resolution img2pdf would guess 96 dpi, and a phone photo at its stated 72 dpi
    would make a page over a metre wide; such images are put on an A4 page instead, shrunk to
    fit if needed (never enlarged, so a small logo stays small and sharp).
    """

    def layout(
        width_px: int, height_px: int, dpi: tuple[float, float]
    ) -> tuple[float, float, float, float]:
        if has_dpi:
            width = img2pdf.px_to_pt(width_px, dpi[0])
            height = img2pdf.px_to_pt(height_px, dpi[1])
            if _fits_on_fax_paper(width, height):
                return width, height, width, height
        page: tuple[float, float, float, float] = _shrink_onto_a4(width_px, height_px, dpi)
        return page

    return layout


def _convert(images: bytes | list[bytes], layout: _Layout, *, first_frame_only: bool) -> bytes:
    pdf: bytes = img2pdf.convert(
        images,
        layout_fun=layout,
        first_frame_only=first_frame_only,
        engine=img2pdf.Engine.internal,
    )
    return pdf


PHOTO_BOX = (2480, 3508)  # A4 at 300 dpi: finer than any fax resolution
PHOTO_DPI = 300


def _downscaled(data: bytes, kind: Kind) -> bytes | None:
    """A photo larger than a fax can show, scaled down to A4 at 300 dpi (None: small enough).
    A 50-megapixel phone photo would otherwise be uploaded to FaxMAX at full size."""
    with Image.open(io.BytesIO(data)) as original:
        if original.width * original.height <= PHOTO_BOX[0] * PHOTO_BOX[1]:
            return None
        image = ImageOps.exif_transpose(original)
    box = PHOTO_BOX if image.height >= image.width else (PHOTO_BOX[1], PHOTO_BOX[0])
    image.thumbnail(box, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if kind is Kind.JPEG:
        if image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=90, dpi=(PHOTO_DPI, PHOTO_DPI))
    else:
        image.save(out, "PNG", dpi=(PHOTO_DPI, PHOTO_DPI))
    return out.getvalue()


def _image_pdf(name: str, data: bytes, kind: Kind, limits: Limits, room: int) -> tuple[bytes, int]:
    """An image file as a PDF of its pages, and the page count; at most `room` pages."""
    cap = _pixel_cap(kind, limits)
    with _reading(name, kind), _pixel_cap_enforced(name, cap):
        survey = _survey(name, data, kind, cap, room)
        if survey.pages > room:
            raise _too_many_pages(name, limits.max_pages)
        layout = _layout(survey.has_dpi)
        if kind in (Kind.JPEG, Kind.PNG):
            smaller = _downscaled(data, kind)
            if smaller is not None:
                data, layout = smaller, _layout(True)
        if not survey.needs_flattening:
            # img2pdf refuses some images Pillow reads well (16-bit TIFF, odd colour spaces);
            # those fall through to being flattened, like transparent ones.
            with suppress(Exception):
                one_page = kind is not Kind.TIFF  # as in `_frames`
                return _convert(data, layout, first_frame_only=one_page), survey.pages
        pngs = _flattened_pngs(data, kind)
        return _convert(pngs, layout, first_frame_only=False), survey.pages


def _append_part(writer: PdfWriter, name: str, data: bytes, limits: Limits) -> None:
    """Add one attachment's pages to `writer`, keeping the whole fax within `max_pages`."""
    room = limits.max_pages - len(writer.pages)
    kind = _kind_of(name, data[:SNIFF_BYTES], len(data))
    if kind is Kind.PDF:
        reader = _open_pdf(name, data)
        if len(reader.pages) > room:
            raise _too_many_pages(name, limits.max_pages)
    else:
        pdf, _ = _image_pdf(name, data, kind, limits, room)
        reader = PdfReader(io.BytesIO(pdf))
    with _reading(name, kind):  # pypdf reads lazily: copying the pages parses them too
        writer.append(reader, import_outline=False)


def build_pdf(parts: Sequence[tuple[str, bytes]], out: Path, limits: Limits = Limits()) -> int:
    """Join attachments, in mail order, into the one PDF that is faxed; return its page count.

    `parts` holds (display filename, decoded attachment). PDF pages are appended
    as they are; images become pages as losslessly as PDF allows. Anything unreadable, over a
    cap in `limits` or of a type fax-bridge cannot fax raises `DocumentError` naming the file,
    and then `out` is left as it was.
    """
    if not parts:
        raise DocumentError(replies.NO_ATTACHMENT)
    writer = PdfWriter()
    with _untrusted_input():
        for name, data in parts:
            _append_part(writer, name, data, limits)
        with atomic_path(out) as temporary, temporary.open("wb") as stream:
            writer.write(stream)
    return len(writer.pages)


def tiff_to_pdf(name: str, data: bytes, limits: Limits = Limits()) -> tuple[bytes, int]:
    """Turn a received fax (multi-page TIFF, usually G3/G4) into a PDF; return it and its page
    count. In memory: it goes straight into the email, and the fax is kept in the store.

    The fax data is carried over without re-encoding, so the PDF shows exactly what arrived.
    """
    if sniff(data[:SNIFF_BYTES]) is not Kind.TIFF:
        raise _unreadable(name, Kind.TIFF)
    with _untrusted_input():
        return _image_pdf(name, data, Kind.TIFF, limits, limits.max_pages)


def pdf_page_count(name: str, data: bytes) -> int:
    """Pages in the PDF `data`; `DocumentError` if it is not a readable, unencrypted PDF."""
    with _untrusted_input():
        return len(_open_pdf(name, data).pages)
