"""bridge.documents on real files: what is faxed, how faithfully, and what is refused in words."""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf import PageObject, PdfReader
from pypdf.generic import DictionaryObject, StreamObject

from bridge.documents import (
    SNIFF_BYTES,
    Kind,
    Limits,
    build_pdf,
    check_bombs,
    describe_unsupported,
    pdf_page_count,
    quick_check,
    sniff,
    tiff_to_pdf,
)
from bridge.errors import DocumentError
from tests import docfactory

A4 = (595.28, 841.89)
FAX_PAGE = (1728 / 204 * 72, 2292 / 196 * 72)
DEFAULT_LIMITS = Limits()


def reopen(path: Path) -> PdfReader:
    return PdfReader(path, strict=True)


def size_of(page: PageObject) -> tuple[float, float]:
    return float(page.mediabox.width), float(page.mediabox.height)


def images_on(page: PageObject) -> list[StreamObject]:
    """The image XObjects `page` draws (img2pdf pages draw exactly one)."""
    resources = page["/Resources"].get_object()
    assert isinstance(resources, DictionaryObject)
    xobjects = resources.get("/XObject", DictionaryObject()).get_object()
    assert isinstance(xobjects, DictionaryObject)
    images = [xobject.get_object() for xobject in xobjects.values()]
    assert all(isinstance(image, StreamObject) for image in images)
    return images


def image_filters(page: PageObject) -> list[str]:
    """The compression filters of the images drawn on `page`, in order."""
    filters: list[str] = []
    for image in images_on(page):
        chain = image.get("/Filter")
        filters.extend(str(name) for name in (chain if isinstance(chain, list) else [chain]))
    return filters


def build(tmp_path: Path, *parts: tuple[str, bytes], limits: Limits = DEFAULT_LIMITS) -> PdfReader:
    """build_pdf on `parts`, checking the count it returns against the PDF it wrote."""
    out = tmp_path / "fax.pdf"
    pages = build_pdf(parts, out, limits)
    reader = reopen(out)
    assert len(reader.pages) == pages
    return reader


def refusal(tmp_path: Path, name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """The words build_pdf refuses a single attachment with; they must name the file."""
    with pytest.raises(DocumentError) as caught:
        build(tmp_path, (name, data), limits=limits)
    words = str(caught.value)
    assert f"'{name}'" in words
    return words


# --- each kind on its own -------------------------------------------------------------------


def test_pdf_pages_are_appended_as_they_are(tmp_path: Path) -> None:
    reader = build(tmp_path, ("letter.pdf", docfactory.make_pdf(3, width=500, height=700)))
    assert [size_of(page) for page in reader.pages] == [(500, 700)] * 3


def test_png_becomes_one_page(tmp_path: Path) -> None:
    reader = build(tmp_path, ("chart.png", docfactory.make_png(300, 200, dpi=(100, 100))))
    assert len(reader.pages) == 1
    assert size_of(reader.pages[0]) == pytest.approx((216, 144))
    assert image_filters(reader.pages[0]) == ["/FlateDecode"]


def test_jpeg_is_embedded_byte_for_byte(tmp_path: Path) -> None:
    jpeg = docfactory.make_jpeg(320, 240, dpi=(150, 150))
    build(tmp_path, ("photo.jpg", jpeg))
    assert jpeg in (tmp_path / "fax.pdf").read_bytes()
    assert image_filters(reopen(tmp_path / "fax.pdf").pages[0]) == ["/DCTDecode"]


def test_g4_tiff_pages_stay_ccitt_encoded(tmp_path: Path) -> None:
    reader = build(tmp_path, ("scan.tif", docfactory.make_tiff(3)))
    assert [size_of(page) for page in reader.pages] == [pytest.approx(FAX_PAGE)] * 3
    assert all(image_filters(page) == ["/CCITTFaxDecode"] for page in reader.pages)


@pytest.mark.parametrize("compression", ["group3", "tiff_lzw", "raw"])
def test_other_bilevel_tiffs_become_ccitt_pages(tmp_path: Path, compression: str) -> None:
    reader = build(tmp_path, ("scan.tif", docfactory.make_tiff(2, compression)))
    assert len(reader.pages) == 2
    assert all(image_filters(page) == ["/CCITTFaxDecode"] for page in reader.pages)


def test_multi_strip_g4_tiff_stays_ccitt(tmp_path: Path) -> None:
    """Pillow writes many strips by default; img2pdf must re-pack them, still as G4."""
    buffer = io.BytesIO()
    Image.new("1", docfactory.FAX_PAGE_SIZE, 1).save(
        buffer, format="TIFF", compression="group4", dpi=docfactory.FAX_DPI
    )
    reader = build(tmp_path, ("scan.tif", buffer.getvalue()))
    assert image_filters(reader.pages[0]) == ["/CCITTFaxDecode"]


def test_mixed_attachments_keep_mail_order(tmp_path: Path) -> None:
    reader = build(
        tmp_path,
        ("contract.pdf", docfactory.make_pdf(2)),
        ("chart.png", docfactory.make_png(300, 200, dpi=(100, 100))),
        ("scan.tif", docfactory.make_tiff(3)),
        ("photo.jpg", docfactory.make_jpeg(320, 240)),
    )
    sizes = [size_of(page) for page in reader.pages]
    assert sizes == [
        (612, 792),
        (612, 792),
        pytest.approx((216, 144)),
        pytest.approx(FAX_PAGE),
        pytest.approx(FAX_PAGE),
        pytest.approx(FAX_PAGE),
        pytest.approx(A4[::-1], abs=0.01),
    ]
    assert image_filters(reader.pages[0]) == []
    assert image_filters(reader.pages[2]) == ["/FlateDecode"]
    assert image_filters(reader.pages[5]) == ["/CCITTFaxDecode"]
    assert image_filters(reader.pages[6]) == ["/DCTDecode"]


def test_tiff_pages_keep_their_order(tmp_path: Path) -> None:
    """Page n of make_tiff carries n black bars, 60 pixels apart, from y=100."""
    reader = build(tmp_path, ("scan.tif", docfactory.make_tiff(3)))
    for number, page in enumerate(reader.pages, start=1):
        image = page.images[0].image
        assert image is not None
        bars = [image.getpixel((800, 115 + bar * 60)) == 0 for bar in range(4)]
        assert bars == [bar < number for bar in range(4)]


# --- page size --------------------------------------------------------------------------------


def test_image_without_resolution_sits_on_an_a4_page_unscaled(tmp_path: Path) -> None:
    reader = build(tmp_path, ("logo.png", docfactory.make_png(200, 200)))
    page = reader.pages[0]
    assert size_of(page) == pytest.approx(A4, abs=0.01)
    contents = page.get_contents()
    assert contents is not None
    assert b"150" in contents.get_data()  # 200 px at img2pdf's 96 dpi = 150 pt


def test_large_image_without_resolution_is_shrunk_onto_landscape_a4(tmp_path: Path) -> None:
    reader = build(tmp_path, ("wide.png", docfactory.make_png(3000, 2000)))
    assert size_of(reader.pages[0]) == pytest.approx(A4[::-1], abs=0.01)


def test_phone_photo_at_72_dpi_is_put_on_a4_not_a_metre_wide_page(tmp_path: Path) -> None:
    reader = build(tmp_path, ("IMG_0001.jpg", docfactory.make_jpeg(1600, 1200, dpi=(72, 72))))
    assert size_of(reader.pages[0]) == pytest.approx(A4[::-1], abs=0.01)


# --- images img2pdf cannot take as they are ---------------------------------------------------


def test_png_with_alpha_is_flattened_onto_white(tmp_path: Path) -> None:
    reader = build(tmp_path, ("logo.png", docfactory.make_png(40, 30, alpha=True)))
    (image,) = images_on(reader.pages[0])
    assert "/SMask" not in image
    assert image_filters(reader.pages[0]) == ["/FlateDecode"]
    picture = reader.pages[0].images[0].image
    assert picture is not None
    assert (picture.mode, picture.size) == ("RGB", (40, 30))
    assert picture.getpixel((10, 15)) == (255, 127, 127)  # half-transparent red over white
    assert picture.getpixel((30, 15)) == (200, 220, 255)  # the opaque background as it was


def test_palette_png_with_transparency_is_flattened(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("P", (20, 20), 0).save(buffer, format="PNG", transparency=0)
    reader = build(tmp_path, ("icon.png", buffer.getvalue()))
    (image,) = images_on(reader.pages[0])
    assert "/SMask" not in image


def test_sixteen_bit_grey_tiff_is_converted(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("I;16", (64, 48), 40000).save(buffer, format="TIFF", dpi=(300, 300))
    reader = build(tmp_path, ("xray.tif", buffer.getvalue()))
    picture = reader.pages[0].images[0].image
    assert picture is not None
    assert (picture.mode, picture.getpixel((10, 10))) == ("L", 40000 // 256)
    assert size_of(reader.pages[0]) == pytest.approx((64 * 72 / 300, 48 * 72 / 300), abs=0.1)


def test_cmyk_tiff_is_accepted(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (30, 20), (0, 0, 0, 255)).save(buffer, format="TIFF")
    assert len(build(tmp_path, ("print.tif", buffer.getvalue())).pages) == 1


# --- refusals -----------------------------------------------------------------------------------


def test_gif_is_refused_by_name(tmp_path: Path) -> None:
    words = refusal(tmp_path, "animation.gif", docfactory.make_gif(10, 10))
    assert "a GIF image" in words
    assert "PDF, TIFF, PNG and JPEG" in words


def test_zip_is_refused_even_when_a_stored_pdf_shows_through(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored: "%PDF-" within the first bytes
        archive.writestr("invoice.pdf", docfactory.make_pdf(1))
    assert "a ZIP archive" in refusal(tmp_path, "invoices.zip", buffer.getvalue())


def test_empty_file_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path, "empty.pdf", b"") == "'empty.pdf' is empty"


def test_truncated_pdf_is_refused(tmp_path: Path) -> None:
    pdf = docfactory.make_pdf(2)
    words = refusal(tmp_path, "contract.pdf", pdf[: len(pdf) // 2])
    assert "not a readable PDF document" in words


def test_garbage_named_pdf_is_judged_by_its_bytes(tmp_path: Path) -> None:
    words = refusal(tmp_path, "contract.pdf", b"this is not a PDF at all\n" * 20)
    assert "a file of unknown type" in words


def test_garbage_after_a_pdf_header_is_refused(tmp_path: Path) -> None:
    words = refusal(tmp_path, "contract.pdf", b"%PDF-1.7\n" + b"\x00garbage" * 100)
    assert "not a readable PDF document" in words


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    words = refusal(tmp_path, "contract.pdf", docfactory.make_encrypted_pdf(1))
    assert words == "'contract.pdf' is password-protected; fax-bridge cannot fax encrypted PDFs"


def test_pdf_without_pages_is_refused(tmp_path: Path) -> None:
    assert "has no pages" in refusal(tmp_path, "blank.pdf", docfactory.make_pdf(0))


def test_too_many_pages_across_attachments_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        DocumentError, match=re.escape("'second.pdf' makes the fax longer than 3 pages")
    ):
        build(
            tmp_path,
            ("first.pdf", docfactory.make_pdf(2)),
            ("second.pdf", docfactory.make_pdf(2)),
            limits=Limits(max_pages=3),
        )


def test_too_many_tiff_pages_is_refused(tmp_path: Path) -> None:
    words = refusal(tmp_path, "scan.tif", docfactory.make_tiff(4), Limits(max_pages=3))
    assert "longer than 3 pages" in words


def test_exactly_max_pages_is_accepted(tmp_path: Path) -> None:
    reader = build(
        tmp_path,
        ("first.pdf", docfactory.make_pdf(2)),
        ("scan.tif", docfactory.make_tiff(1)),
        limits=Limits(max_pages=3),
    )
    assert len(reader.pages) == 3


@pytest.mark.parametrize(
    ("width", "height"),
    [(110, 100), (300, 300)],  # over the cap, and over twice the cap (Pillow's hard error)
)
def test_picture_over_the_pixel_cap_is_refused(tmp_path: Path, width: int, height: int) -> None:
    words = refusal(
        tmp_path,
        "photo.png",
        docfactory.make_png(width, height),
        Limits(max_image_pixels=10_000),
    )
    assert "too large to fax" in words
    assert "10,000 pixels" in words


def test_decompression_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    words = refusal(tmp_path, "bomb.png", docfactory.make_png_bomb(100_000, 100_000))
    assert "too large to fax" in words


def test_a_content_stream_bomb_is_refused_by_the_conversion_too(tmp_path: Path) -> None:
    """Mail stored before the checks at `250` read PDFs (an upgrade) meets pypdf's cap here."""
    words = refusal(tmp_path, "bomb.pdf", docfactory.make_pdf_bomb(80))
    assert "expands to an unreasonable size when read" in words


def test_second_tiff_page_over_the_cap_is_refused(tmp_path: Path) -> None:
    """Pillow checks only the first page of a TIFF for bombs; the rest are ours to check."""
    small = Image.new("1", (100, 100), 1)
    large = Image.new("1", docfactory.FAX_PAGE_SIZE, 1)
    buffer = io.BytesIO()
    small.save(buffer, format="TIFF", compression="group4", save_all=True, append_images=[large])
    limits = Limits(max_tiff_page_pixels=1_000_000)
    assert "too large to fax" in refusal(tmp_path, "fax.tif", buffer.getvalue(), limits)


def test_damaged_image_is_refused(tmp_path: Path) -> None:
    jpeg = docfactory.make_jpeg(320, 240)
    words = refusal(tmp_path, "photo.jpg", jpeg[: len(jpeg) // 2])
    assert "not a readable JPEG image" in words


def test_refusal_leaves_existing_output_alone(tmp_path: Path) -> None:
    out = tmp_path / "fax.pdf"
    out.write_bytes(b"previous")
    with pytest.raises(DocumentError):
        build_pdf([("a.gif", docfactory.make_gif(5, 5))], out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["fax.pdf"]  # no temporary file left


def test_nothing_to_fax_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no attachment"):
        build_pdf([], tmp_path / "fax.pdf")


def test_pillow_pixel_limit_is_restored(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    build(tmp_path, ("chart.png", docfactory.make_png(10, 10)))
    refusal(tmp_path, "photo.png", docfactory.make_png(300, 300), Limits(max_image_pixels=100))
    assert before == Image.MAX_IMAGE_PIXELS


# --- output file --------------------------------------------------------------------------------


def test_output_replaces_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "fax.pdf"
    out.write_bytes(b"previous")
    assert build_pdf([("a.pdf", docfactory.make_pdf(1))], out) == 1
    assert len(reopen(out).pages) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["fax.pdf"]  # no temporary file left


def test_build_pdf_runs_in_a_worker_process(tmp_path: Path) -> None:
    part = ("scan.tif", docfactory.make_tiff(2))
    assert pickle.loads(pickle.dumps(Limits(max_pages=5))) == Limits(max_pages=5)
    with ProcessPoolExecutor(max_workers=1) as pool:
        pages = pool.submit(build_pdf, [part], tmp_path / "fax.pdf", Limits()).result()
    assert pages == 2


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        Limits(max_pages=0)


# --- received faxes -----------------------------------------------------------------------------


def test_received_g4_fax_becomes_a_pdf_without_reencoding(tmp_path: Path) -> None:
    pdf, pages = tiff_to_pdf("fax.tif", docfactory.make_tiff(2))
    assert pages == 2
    out = tmp_path / "fax.pdf"
    out.write_bytes(pdf)
    reader = reopen(out)
    assert len(reader.pages) == 2
    assert all(image_filters(page) == ["/CCITTFaxDecode"] for page in reader.pages)
    assert [size_of(page) for page in reader.pages] == [pytest.approx(FAX_PAGE)] * 2


@pytest.mark.parametrize(
    "data",
    [b"", b"II*\x00" + b"\x00" * 40, docfactory.make_png(10, 10)],
    ids=["empty", "damaged", "png"],
)
def test_received_file_that_is_not_a_tiff_is_refused(data: bytes) -> None:
    with pytest.raises(DocumentError, match=re.escape("'fax.tif' is not a readable TIFF image")):
        tiff_to_pdf("fax.tif", data)


def test_pdf_page_count() -> None:
    assert pdf_page_count("good.pdf", docfactory.make_pdf(4)) == 4
    with pytest.raises(DocumentError, match=re.escape("'bad.pdf' is not a readable PDF")):
        pdf_page_count("bad.pdf", b"%PDF-1.4\nnonsense")


# --- sniffing and the cheap check ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (docfactory.make_pdf(1), Kind.PDF),
        (b"\r\n" * 100 + docfactory.make_pdf(1), Kind.PDF),
        (docfactory.make_tiff(1), Kind.TIFF),
        (b"MM\x00*\x00\x00\x00\x08", Kind.TIFF),
        (docfactory.make_png(4, 4), Kind.PNG),
        (docfactory.make_jpeg(4, 4), Kind.JPEG),
        (b" " * SNIFF_BYTES + b"%PDF-1.4", None),
        (docfactory.make_gif(4, 4), None),
        (b"", None),
    ],
)
def test_sniff_by_magic_bytes(data: bytes, kind: Kind | None) -> None:
    assert sniff(data[:SNIFF_BYTES]) is kind


def ooxml() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (ooxml(), "a Word, Excel or PowerPoint document"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100,
            "a Word, Excel or PowerPoint document",
        ),
        (b"\x1f\x8b\x08\x00", "a compressed (gzip) file"),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "a 7-Zip archive"),
        (b"Rar!\x1a\x07\x01\x00", "a RAR archive"),
        (b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00", "a BMP image"),
        (b"BMW service report", "a file of unknown type"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "a WebP image"),
        (b"\x00\x00\x00\x18ftypheic", "an HEIC photo (the iPhone photo format)"),
        (b"Hello, please fax this.", "a file of unknown type"),
    ],
)
def test_describe_unsupported(head: bytes, words: str) -> None:
    assert describe_unsupported(head[:SNIFF_BYTES]) == words


def test_quick_check_accepts_what_can_be_faxed() -> None:
    pdf = docfactory.make_pdf(1)
    assert quick_check("a.pdf", pdf[:SNIFF_BYTES], len(pdf)) is Kind.PDF
    jpeg = docfactory.make_jpeg(100, 100)
    assert quick_check("a.jpg", jpeg[:SNIFF_BYTES], len(jpeg)) is Kind.JPEG


def test_quick_check_refuses_office_documents_saying_what_to_send_when_none_converts() -> None:
    docx = ooxml()
    with pytest.raises(DocumentError) as caught:
        quick_check("report.docx", docx[:SNIFF_BYTES], len(docx))
    assert str(caught.value) == (
        "'report.docx' is a Word, Excel or PowerPoint document, which this fax gateway cannot "
        "convert; save it as PDF (in Word or Excel: File > Save As > PDF) and send the PDF"
    )


@pytest.mark.parametrize(("head", "declared", "kind"), [
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "application/msword", Kind.OFFICE),
    (b"{\\rtf1\\ansi hello}", "application/octet-stream", Kind.OFFICE),
    (b"\xef\xbb\xbf  <!DOCTYPE HTML><p>x", "application/octet-stream", Kind.HTML),
    (b"hello", "text/html", Kind.HTML),
    (b"hello", "text/plain", Kind.TEXT),
], ids=["ole2", "rtf", "html-by-content", "html-declared", "text-declared"])
def test_office_html_and_text_are_told_by_content_and_accepted_where_they_convert(
    head: bytes, declared: str, kind: Kind,
) -> None:
    assert quick_check("x", head, len(head), declared=declared, office=True) is kind


def test_a_declared_text_file_with_binary_content_is_not_text() -> None:
    with pytest.raises(DocumentError, match="a file of unknown type"):
        quick_check("x.txt", b"ab\x00cd", 5, declared="text/plain", office=True)


def test_an_office_document_given_to_build_pdf_unconverted_is_refused_not_misread() -> None:
    with pytest.raises(DocumentError, match="is a Word, Excel or PowerPoint document"):
        build_pdf([("report.docx", ooxml())], Path("/nonexistent/fax.pdf"))


def test_quick_check_refuses_empty_files() -> None:
    with pytest.raises(DocumentError) as caught:
        quick_check("empty.pdf", b"", 0)
    assert str(caught.value) == "'empty.pdf' is empty"


def test_check_bombs_refuses_png_bombs_from_the_header() -> None:
    bomb = docfactory.make_png_bomb(100_000, 100_000)
    with pytest.raises(DocumentError, match=re.escape(
            "'bomb.png' is 100000 x 100000 pixels, too large to fax")):
        check_bombs("bomb.png", Kind.PNG, bomb)


def test_check_bombs_refuses_jpeg_bombs_from_the_header() -> None:
    jpeg = bytearray(docfactory.make_jpeg(8, 8))
    frame = jpeg.index(b"\xff\xc0")
    jpeg[frame + 5 : frame + 9] = (60_000).to_bytes(2, "big") * 2
    with pytest.raises(DocumentError, match=re.escape("'huge.jpg' is 60000 x 60000 pixels")):
        check_bombs("huge.jpg", Kind.JPEG, bytes(jpeg))


def test_check_bombs_uses_the_tiff_cap_for_tiffs() -> None:
    tiff = docfactory.make_tiff(1)
    check_bombs("fax.tif", Kind.TIFF, tiff)
    with pytest.raises(DocumentError, match=re.escape(
            "'fax.tif' is 1728 x 2292 pixels, too large to fax: fax-bridge accepts pictures "
            "of at most 1 pixels")):
        check_bombs("fax.tif", Kind.TIFF, tiff, Limits(max_tiff_page_pixels=1))
    check_bombs("fax.png", Kind.PNG, docfactory.make_png(1728, 2292),
                Limits(max_tiff_page_pixels=1))


# --- hostile input never escapes as anything but DocumentError ----------------------------------

SAMPLES = [
    docfactory.make_pdf(2),
    docfactory.make_png(24, 16),
    docfactory.make_png(24, 16, alpha=True),
    docfactory.make_jpeg(24, 16),
    docfactory.make_tiff(2),
]

fuzz = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def survives(directory: Path, data: bytes) -> None:
    """build_pdf on `data` returns a page count or refuses in words; nothing else."""
    try:
        pages = build_pdf([("attachment.bin", data)], directory / "fax.pdf")
    except DocumentError as error:
        assert "'attachment.bin'" in str(error)
    else:
        assert pages >= 1


@fuzz
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_are_faxed_or_refused(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    survives(tmp_path_factory.mktemp("fuzz"), data)


@fuzz
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(min_value=1),
)
def test_damaged_real_files_are_faxed_or_refused(
    tmp_path_factory: pytest.TempPathFactory,
    sample: bytes,
    edits: list[tuple[int, int]],
    cut: int | None,
) -> None:
    damaged = bytearray(sample)
    for position, value in edits:
        damaged[position % len(damaged)] = value
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    survives(tmp_path_factory.mktemp("fuzz"), bytes(damaged))


def test_a_large_photo_is_scaled_down_to_a4_at_300_dpi(tmp_path: Path) -> None:
    photo = docfactory.make_jpeg(6000, 4000)  # 24 megapixels, landscape
    out = tmp_path / "out.pdf"
    assert build_pdf([("photo.jpg", photo)], out) == 1
    page = PdfReader(out).pages[0]
    [image] = page.images
    assert image.image is not None
    assert max(image.image.size) <= 3508 and min(image.image.size) <= 2480
    assert float(page.mediabox.width) <= 842.5 and float(page.mediabox.height) <= 595.5
    assert out.stat().st_size < len(photo)
