"""Decompression bombs refused at the end of DATA, before `250` (docs/RELIABILITY.md B11): a
picture whose headers, anywhere in the file, announce too many pixels, and a PDF whose Flate
streams inflate past `documents.max_pdf_unpacked_mb`. Through the real SMTP server: the reply
and its words, nothing kept, and the memory the service and its sandbox children took."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from bridge import bombs
from bridge.app import Bridge
from bridge.documents import Kind, check_bombs
from bridge.errors import DocumentError
from bridge.simulators import FaxMaxSimulator
from bridge.simulators.formats import count_pdf_pages
from bridge.store import JobState
from tests.docfactory import (
    make_jpeg,
    make_jpeg_bomb,
    make_pdf_bomb,
    make_png,
    make_png_hidden_bomb,
    make_tiff,
    make_tiff_bomb,
    with_jpeg_comment,
)
from tests.mails import fax_mail
from tests.peaks import children_peaks, peak_mb, reset_children, reset_peak
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

TIFF_CAP = "16,174,080"  # documents.Limits().max_tiff_page_pixels: two superfine fax pages
PICTURE_CAP = "50,000,000"  # documents.Limits().max_image_pixels
SERVICE_PEAK_MB = 600  # the bound for every process of the service, children included


def picture_words(name: str, cap: str, page: int = 0) -> str:
    where = f"page {page} of '{name}'" if page else f"'{name}'"
    return (f"5.6.1 {where} is 13000 x 13000 pixels, too large to fax: fax-bridge accepts "
            f"{'pages' if page else 'pictures'} of at most {cap} pixels; make it smaller and "
            "send it again")


PDF_WORDS = ("5.6.1 'report.pdf' would unpack to more than 200 MB when read, more than "
             "fax-bridge reads of one PDF; it may be damaged or built to overload fax gateways")

# Each got `250` before: TIFF sizes were not read before `250` at all, and a JPEG's or PNG's
# only from the first kilobyte.
BOMBS = [
    pytest.param("picture.tiff", "image/tiff", make_tiff_bomb((13000, 13000)),
                 picture_words("picture.tiff", TIFF_CAP), id="tiff, directory at the end"),
    pytest.param("picture.tiff", "image/tiff",
                 make_tiff_bomb((13000, 13000), directories_at_end=False),
                 picture_words("picture.tiff", TIFF_CAP), id="tiff, directory first"),
    pytest.param("scan.tiff", "image/tiff", make_tiff_bomb((1728, 2292), (13000, 13000)),
                 picture_words("scan.tiff", TIFF_CAP, page=2), id="tiff, second page"),
    pytest.param("photo.jpg", "image/jpeg", make_jpeg_bomb(13000, 13000),
                 picture_words("photo.jpg", PICTURE_CAP), id="jpeg, frame after 4 KB"),
    pytest.param("photo.png", "image/png", make_png_hidden_bomb(13000, 13000),
                 picture_words("photo.png", PICTURE_CAP), id="png, text before its header"),
    pytest.param("photo.png", "image/png",
                 make_png_hidden_bomb(13000, 13000, second_header=True),
                 picture_words("photo.png", PICTURE_CAP), id="png, second header"),
    pytest.param("report.pdf", "application/pdf", make_pdf_bomb(300), PDF_WORDS,
                 id="pdf, contents inflating to 300 MB"),
]


async def nothing_kept(bridge: Bridge, faxmax: FaxMaxSimulator) -> None:
    assert await bridge.store.jobs.counts() == {}
    assert await bridge.store.jobs.to_convert() == []
    assert faxmax.requests == []
    assert not any((Path(bridge.settings.data_dir) / "spool").glob("*.eml"))


@pytest.mark.parametrize(("name", "mimetype", "data", "words"), BOMBS)
async def test_a_bomb_is_refused_before_250_in_words(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, name: str, mimetype: str, data: bytes,
    words: str,
) -> None:
    assert len(data) < 500_000  # cheap to send: that is what makes it a bomb
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail((name, mimetype, data)))
    assert result.data == (554, words)
    await nothing_kept(bridge, faxmax)


async def test_pdf_cap_is_the_setting(make_bridge: MakeBridge, faxmax: FaxMaxSimulator) -> None:
    bridge = await make_bridge(documents={"max_pdf_unpacked_mb": 20})
    result = await smtp_send(bridge.smtp_port, fax_mail(
        ("report.pdf", "application/pdf", make_pdf_bomb(30))))
    assert result.data == (554, PDF_WORDS.replace("200 MB", "20 MB"))
    await nothing_kept(bridge, faxmax)


async def test_documents_within_the_caps_are_still_accepted_and_faxed(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    """A real PDF with a content stream, a multi-page fax TIFF, a PNG and a JPEG whose frame
    header lies behind a 60 KB segment (as behind a phone's EXIF block): one fax."""
    bridge = await make_bridge()
    mail = fax_mail(("letter.pdf", "application/pdf", make_pdf_bomb(1)),
                    ("fax.tiff", "image/tiff", make_tiff(2)),
                    ("logo.png", "image/png", make_png(300, 200)),
                    ("photo.jpg", "image/jpeg", with_jpeg_comment(make_jpeg(320, 240), 60_000)))
    result = await smtp_send(bridge.smtp_port, mail)
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    [request] = faxmax.requests
    assert count_pdf_pages(request.document) == 5  # 1 + 2 + 1 + 1: every page made it


@pytest.mark.parametrize(("name", "mimetype", "data"), [
    pytest.param("picture.tiff", "image/tiff", make_tiff_bomb((13000, 13000)), id="tiff"),
    pytest.param("report.pdf", "application/pdf", make_pdf_bomb(300), id="pdf"),
])
async def test_a_bomb_costs_the_service_and_its_children_less_than_600_mb(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, name: str, mimetype: str, data: bytes,
) -> None:
    """Peaks as the kernel counts them (VmHWM), reset just before the bomb is sent: of this
    process, which runs the service, and of every child of the sandbox that checks mail before
    `250`. The same children answer after the bomb as before it, so the one that read it is
    among them (a child that grew past the sandbox's bound would have been replaced)."""
    bridge = await make_bridge()
    assert bridge.pipeline is not None
    inspector = bridge.pipeline.inspector
    children = await reset_children(inspector)
    reset_peak()
    result = await smtp_send(bridge.smtp_port, fax_mail((name, mimetype, data)))
    _, service = peak_mb()
    peaks = await children_peaks(inspector)
    assert result.data is not None and result.data[0] == 554
    assert set(peaks) == children
    assert service < SERVICE_PEAK_MB, f"the service peaked at {service:.0f} MB"
    assert max(peaks.values()) < SERVICE_PEAK_MB, f"the sandbox children peaked at {peaks}"
    print(f"{name}: service {service:.1f} MB, inspection children "
          + ", ".join(f"{mb:.1f} MB" for mb in sorted(peaks.values())))
    await nothing_kept(bridge, faxmax)


# --- the reading itself (bridge.bombs) -------------------------------------------------------

MB = 2**20


def pdf_with(data: bytes, dictionary: bytes = b"/Filter /FlateDecode") -> bytes:
    """A PDF's bytes around one stream: all the raw scan looks at."""
    return (b"%PDF-1.7\n1 0 obj\n<< /Length 4 0 R " + dictionary + b" >>\nstream\r\n" + data
            + b"\r\nendstream\nendobj\n2 0 obj\n<< /Length 0 >>\nstream\nendstream\nendobj\n")


def deflated(size: int, wbits: int = zlib.MAX_WBITS) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(bytes(size)) + packer.flush()


@pytest.mark.parametrize(("data", "dictionary"), [
    pytest.param(deflated(3 * MB), b"/Filter /FlateDecode", id="zlib"),
    pytest.param(deflated(3 * MB), b"/Filter 5 0 R", id="zlib, filter elsewhere"),
    pytest.param(deflated(3 * MB, 16 + zlib.MAX_WBITS), b"", id="gzip"),
    pytest.param(deflated(3 * MB, -zlib.MAX_WBITS), b"/Filter [/FlateDecode]", id="raw deflate"),
])
def test_every_flate_stream_is_inflated_and_counted(data: bytes, dictionary: bytes) -> None:
    pdf = pdf_with(data, dictionary)
    assert bombs.pdf_excess(pdf, 3 * MB, 0) is None  # exactly at the cap
    assert bombs.pdf_excess(pdf, 3 * MB - 1, 0) == "total"


def test_streams_add_up_and_what_is_not_flate_is_not_inflated() -> None:
    twice = pdf_with(deflated(2 * MB)) + pdf_with(deflated(2 * MB))
    assert bombs.pdf_excess(twice, 4 * MB, 0) is None
    assert bombs.pdf_excess(twice, 4 * MB - 1, 0) == "total"
    jpeg = make_jpeg(64, 64)  # DCTDecode: copied as it is, never inflated
    assert bombs.pdf_excess(pdf_with(jpeg, b"/Filter /DCTDecode"), 1, 0) is None
    assert bombs.pdf_excess(pdf_with(b"garbage" * 1000), 1, 0) is None  # claims Flate, is not


def test_one_stream_past_pypdfs_cap_is_told_apart_and_images_are_not_inflated() -> None:
    contents = pdf_with(deflated(3 * MB))
    image = pdf_with(deflated(3 * MB), b"/Type /XObject /Subtype /Image /Filter /FlateDecode")
    assert bombs.pdf_excess(contents, 10 * MB, 2 * MB) == "stream"
    assert bombs.pdf_excess(image, 10 * MB, 2 * MB) is None
    assert bombs.pdf_excess(image, 1, 2 * MB) is None  # neither counted nor inflated
    assert bombs.pdf_excess(image + contents, 3 * MB - 1, 0) == "total"  # the contents count


def test_headers_past_any_real_pictures_are_unreadable_not_walked_forever() -> None:
    jpeg = make_jpeg(8, 8)
    endless = jpeg[:2] + b"\xff\xfe\x00\x02" * (bombs.MAX_SEGMENTS + 1) + jpeg[2:]
    with pytest.raises(DocumentError, match=re.escape("'x.jpg' is not a readable JPEG image")):
        check_bombs("x.jpg", Kind.JPEG, endless)
    png = make_png(8, 8)
    chunks = png[:8] + b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00" * (bombs.MAX_SEGMENTS + 1)
    with pytest.raises(DocumentError, match=re.escape("'x.png' is not a readable PNG image")):
        check_bombs("x.png", Kind.PNG, chunks + png[8:])


def test_a_tiff_directory_chain_that_loops_or_is_cut_off_ends_the_walk() -> None:
    tiff = bytearray(make_tiff_bomb((100, 100), (200, 200)))
    first = struct.unpack_from("<I", tiff, 4)[0]
    second_next = first + 2 * (2 + 12 * 9 + 4) - 4
    struct.pack_into("<I", tiff, second_next, first)  # the second page points back at the first
    assert list(bombs.picture_sizes(Kind.TIFF, bytes(tiff), 100)) == [(100, 100), (200, 200)]
    assert list(bombs.picture_sizes(Kind.TIFF, bytes(tiff[:first + 20]), 100)) == []
    three = make_tiff_bomb((10, 10), (20, 20), (13000, 13000))
    assert list(bombs.picture_sizes(Kind.TIFF, three, 1)) == [(10, 10), (20, 20)]  # max_pages + 1
