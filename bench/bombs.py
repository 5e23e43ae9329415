"""What the checks against bombs before `250` cost (issue 21, docs/RELIABILITY.md B11).

1. On documents that are not bombs: `documents.check_bombs` (the raw scan that inflates and
   counts a PDF's Flate streams, the walk of a picture's headers) against the parse the
   conversion does after `250` anyway (`documents.pdf_page_count`: pypdf, strict, every page's
   contents inflated), on the intake benchmark's two PDFs (`bench/intake_mails.py`), the
   demo's sample PDF and a 20-page PDF of text, each measured in the same run: the check
   must be a small fraction of one parse, so that no PDF is in effect parsed twice.
2. Each bomb of `tests/test_bombs.py` through the real service (in this process, FaxMAX
   simulator, Maildir): the reply, the time from the start of the SMTP session to the reply,
   and the peak RSS (VmHWM, reset just before the mail) of the service and of each child of
   the sandbox that checks mail before `250`.

    .venv/bin/python bench/bombs.py
"""

from __future__ import annotations

import asyncio
import io
import logging
import statistics
import sys
import tempfile
import time
import timeit
import zlib
from dataclasses import replace
from pathlib import Path

import img2pdf
from PIL import Image, ImageDraw
from pypdf import PdfWriter
from pypdf.generic import NameObject, StreamObject

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.intake_mails import scan_pdf, small_pdf
from bridge import documents
from bridge.app import Bridge
from bridge.config import Settings
from bridge.documents import Kind
from bridge.samples import sample_pdf
from bridge.simulators import FaxMaxSimulator
from tests.docfactory import (
    make_jpeg_bomb,
    make_pdf_bomb,
    make_png_hidden_bomb,
    make_tiff_bomb,
)
from tests.mails import fax_mail
from tests.peaks import children_peaks, peak_mb, reset_children, reset_peak
from tests.smtp_client import smtp_send


def scanned_pdf(pages: int = 20) -> bytes:
    """Grey A4 scans at 200 dpi with lines of text, as img2pdf makes a PDF of PNGs: one Flate
    image per page (3.9 MB inflated each), which the conversion copies without inflating."""
    scans = []
    for page in range(pages):
        image = Image.new("L", (1654, 2339), 255)
        draw = ImageDraw.Draw(image)
        for line in range(60):
            draw.text((150, 150 + line * 35), f"page {page + 1} line {line + 1} " * 6, fill=0)
        out = io.BytesIO()
        image.save(out, "PNG")
        scans.append(out.getvalue())
    pdf: bytes = img2pdf.convert(scans)
    return pdf


def vector_pdf(pages: int = 20) -> bytes:
    """Pages drawn by their content streams (text and lines, ~150 KB each inflated, Flate),
    which the conversion inflates: a word processor's or a CAD program's PDF."""
    writer = PdfWriter()
    for page_number in range(pages):
        page = writer.add_blank_page(595, 842)
        operations = "".join(
            f"BT /F1 9 Tf 40 {800 - line * 12} Td (page {page_number + 1} line {line + 1}) Tj ET "
            f"{40 + line} {790 - line * 12} m {555 - line} {790 - line * 12} l S\n"
            for line in range(64)) * 20
        stream = StreamObject()
        stream.set_data(zlib.compress(operations.encode(), 6))
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def best_of(func: object, repeat: int = 7) -> float:
    """The fastest of `repeat` timings of `func()`, each the mean of enough calls."""
    timer = timeit.Timer(func)  # type: ignore[arg-type]
    number, _ = timer.autorange()
    return min(timer.repeat(repeat, number)) / number


def check_against_parse() -> None:
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # img2pdf's xref, which pypdf mends
    print("\n1. check before 250 vs the conversion's parse, per PDF (best of 7)")
    print(f"{'PDF':<32}{'bytes':>10}{'check_bombs':>14}{'pypdf parse':>14}{'ratio':>8}")
    for name, pdf in [("intake 5 KB mail's (G4 page)", small_pdf()),
                      ("intake 300 KB mail's (JPEG scan)", scan_pdf()),
                      ("samples.sample_pdf (JPEG page)", sample_pdf()),
                      ("20 grey scans (Flate images)", scanned_pdf()),
                      ("20 vector pages (Flate contents)", vector_pdf())]:
        check = best_of(lambda pdf=pdf: documents.check_bombs("a.pdf", Kind.PDF, pdf))
        parse = best_of(lambda pdf=pdf: documents.pdf_page_count("a.pdf", pdf))
        print(f"{name:<32}{len(pdf):>10}{check * 1e3:>11.3f} ms{parse * 1e3:>11.3f} ms"
              f"{check / parse:>7.2f}x")


BOMBS = [
    ("TIFF 13000x13000, directory at the end", "picture.tiff", "image/tiff",
     make_tiff_bomb((13000, 13000))),
    ("TIFF, second page 13000x13000", "scan.tiff", "image/tiff",
     make_tiff_bomb((1728, 2292), (13000, 13000))),
    ("JPEG 13000x13000 behind 4 KB", "photo.jpg", "image/jpeg", make_jpeg_bomb(13000, 13000)),
    ("PNG 13000x13000, second header", "photo.png", "image/png",
     make_png_hidden_bomb(13000, 13000, second_header=True)),
    ("PDF, contents inflating to 300 MB", "report.pdf", "application/pdf", make_pdf_bomb(300)),
]


async def through_the_service() -> None:
    print("2. bombs through SMTP (median of 5 sends each; peaks over all 5)")
    simulator = FaxMaxSimulator(token="t")
    await simulator.start()
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings()
        settings = replace(
            base, data_dir=tmp,
            smtp=replace(base.smtp, listen="127.0.0.1:0", trusted_networks=("127.0.0.0/8",)),
            http=replace(base.http, listen="127.0.0.1:0", push_token="x" * 20),
            faxmax=replace(base.faxmax, enabled=True, url=simulator.url, token="t"))
        bridge = Bridge(settings)
        await bridge.start()
        assert bridge.pipeline is not None
        inspector = bridge.pipeline.inspector
        for label, name, mimetype, data in BOMBS:
            mail = fax_mail((name, mimetype, data)).as_bytes()
            children = await reset_children(inspector)
            reset_peak()
            times, replies = [], set()
            for _ in range(5):
                started = time.perf_counter()
                result = await smtp_send(bridge.smtp_port, mail)
                times.append(time.perf_counter() - started)
                replies.add(result.data and f"{result.data[0]} {result.data[1][:60]}…")
            _, service = peak_mb()
            peaks = await children_peaks(inspector)
            same = "same children" if set(peaks) == children else "CHILDREN REPLACED"
            print(f"{label} ({len(data):,} bytes): {' / '.join(sorted(map(str, replies)))}; "
                  f"{statistics.median(times) * 1e3:.0f} ms; peak service {service:.1f} MB, "
                  f"children {max(peaks.values()):.1f} MB ({same})")
        print(f"jobs stored: {await bridge.store.jobs.counts()}")
        await bridge.stop()
    await simulator.stop()


if __name__ == "__main__":
    asyncio.run(through_the_service())  # first: this process's peak is the service's
    check_against_parse()
