"""Office documents -> PDF through the product's LibreOffice (`bridge.office.converter`): a
10-page DOCX and a 5-sheet XLSX, cold and warm, p50 of 5 each; LibreOffice's peak RSS; and the
lag of the event loop that waits for it. Run by `bench/documents.py --only office`.

The documents are made here, deterministically, as office workers write them: the DOCX has 10
pages of paragraphs in Turkish, Japanese and English (python-docx, Calibri, so LibreOffice
uses its metric twin Carlito) with a 6 x 12 table on every page; the XLSX has 5 sheets of 200
rows x 12 columns of numbers, dates and words (openpyxl). Each PDF is checked: its page count
(the DOCX's must be 10) and that its text has the words.

- cold: a new `OfficeConverter` per conversion, as after a start or after LibreOffice was
  replaced (every `MAX_CONVERSIONS` documents, or after a failure): LibreOffice's start with a
  new profile is in the time.
- warm: one `OfficeConverter`, started once (`warm_up`, as the service does at its start),
  then the 5 conversions: what a document costs in a running service.
Peak RSS: LibreOffice's (`soffice.bin`, the process that reads the document) VmHWM, reset
before each warm conversion, read after it; the worker that drives it (`soffice_worker.py`)
beside it. Lag: a 5 ms sampler on this loop throughout, as bench/documents.py's other parts.
"""

from __future__ import annotations

import io
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import docx
import openpyxl
import pypdf
from docx.enum.text import WD_BREAK

from bench.common import children, status_kb
from bench.documents import mb, reset_peak, spread, while_sampled
from bridge import office
from bridge.config import Settings
from bridge.office.converter import OfficeConverter

ROUNDS = 5
TURKISH = ("teklif", "fatura", "sipariş", "ödeme", "teslimat", "müşteri", "tutar", "şubat",
           "ağustos", "İstanbul", "çalışma", "görüşme")
JAPANESE = ("見積書", "請求書", "御中", "注文", "支払", "納品", "東京都", "株式会社", "担当者",
            "金額", "合計", "お願い致します")
ENGLISH = ("invoice", "order", "delivery", "payment", "total", "amount", "terms", "contract")


def _sentence(rng: random.Random, words: int = 14) -> str:
    pool = TURKISH + JAPANESE + ENGLISH
    return " ".join(rng.choice(pool) for _ in range(words)).capitalize() + "."


def make_docx(pages: int = 10) -> bytes:
    rng = random.Random(10)
    document = docx.Document()
    for page in range(1, pages + 1):
        document.add_heading(f"Teklif {page} / 見積書 {page}", level=1)
        for _ in range(4):
            document.add_paragraph(" ".join(_sentence(rng) for _ in range(3)))
        table = document.add_table(rows=6, cols=12)
        for row in table.rows:
            for cell in row.cells:
                cell.text = str(rng.randint(1, 9999))
        last = document.add_paragraph(_sentence(rng))
        if page < pages:
            last.add_run().add_break(WD_BREAK.PAGE)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_xlsx(sheets: int = 5, rows: int = 200, columns: int = 12) -> bytes:
    rng = random.Random(5)
    book = openpyxl.Workbook()
    start = date(2026, 1, 1)
    for index in range(sheets):
        sheet = book.active if index == 0 else book.create_sheet()
        assert sheet is not None
        sheet.title = f"Ay {index + 1}"
        sheet.append(["Tarih", "Müşteri", "見積書", *(f"K{c}" for c in range(4, columns + 1))])
        for row in range(rows):
            sheet.append([start + timedelta(days=row), rng.choice(TURKISH),
                          rng.choice(JAPANESE),
                          *(round(rng.uniform(0, 10_000), 2) for _ in range(columns - 3))])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _check(pdf: Path, pages: int | None, words: tuple[str, ...]) -> int:
    reader = pypdf.PdfReader(pdf)
    text = " ".join(page.extract_text() for page in reader.pages)
    missing = [w for w in words if w not in text]
    if missing or (pages is not None and len(reader.pages) != pages):
        raise SystemExit(f"{pdf.name}: {len(reader.pages)} pages, words missing: {missing}")
    return len(reader.pages)


def _office_pids(converter: OfficeConverter) -> tuple[int, int] | None:
    """The worker's pid and LibreOffice's (its child), while one runs."""
    running = converter._running  # the bench reads the product's state; it changes nothing
    if running is None:
        return None
    worker = running.process.pid
    found = [pid for pid in children(worker)
             if Path(f"/proc/{pid}/comm").read_text().strip().startswith("soffice")]
    return (worker, found[0]) if found else None


def _converter(found: office.Office, work: Path) -> OfficeConverter:
    settings = Settings().documents
    return OfficeConverter(found, seconds=settings.timeout,
                           memory_bytes=settings.office_memory_mb * 2**20,
                           work_dir=work / "profiles")


async def _cold(found: office.Office, work: Path, source: Path) -> list[float]:
    times = []
    for round_ in range(ROUNDS):
        fresh = _converter(found, work)
        started = time.perf_counter()
        await fresh.convert(source, work / f"cold-{source.name}-{round_}.pdf", "office",
                            source.name)
        times.append(time.perf_counter() - started)
        await fresh.close()
    return times


@dataclass
class _Warm:
    times: list[float] = field(default_factory=list)
    peaks_kb: list[int] = field(default_factory=list)  # LibreOffice's, per conversion
    driver_peaks_kb: list[int] = field(default_factory=list)
    targets: list[Path] = field(default_factory=list)


async def _warm(kept: OfficeConverter, work: Path, source: Path) -> _Warm:
    """The conversions alone: their PDFs are checked after, off the sampled loop."""
    warm = _Warm()
    pids = _office_pids(kept)
    for round_ in range(ROUNDS):
        if pids:
            reset_peak(pids[0])
            reset_peak(pids[1])
        target = work / f"warm-{source.name}-{round_}.pdf"
        warm.targets.append(target)
        started = time.perf_counter()
        await kept.convert(source, target, "office", source.name)
        warm.times.append(time.perf_counter() - started)
        if pids:
            warm.peaks_kb.append(status_kb(pids[1], "VmHWM")["VmHWM"])
            warm.driver_peaks_kb.append(status_kb(pids[0], "VmHWM")["VmHWM"])
    return warm


def _runs(times: list[float]) -> str:
    return (f"p50 {statistics.median(times):.2f} s (runs: "
            f"{', '.join(f'{t:.2f}' for t in times)})")


async def office_documents() -> None:
    settings = Settings().documents
    found = office.availability(settings)
    if not isinstance(found, office.Office):
        print(f"   not measured: Office conversion {found.describe()}")
        return
    print(f"   {found.describe()}; memory cap {settings.office_memory_mb} MB, "
          f"time limit {settings.timeout:g} s")
    inputs = {"docx": (make_docx(), 10, ("見積書", "İstanbul", "Teklif 10")),
              "xlsx": (make_xlsx(), None, ("Müşteri", "見積書"))}
    with tempfile.TemporaryDirectory(prefix="office-bench-") as tmp:
        work = Path(tmp)
        for name, (data, pages, words) in inputs.items():
            source = work / f"in.{name}"
            source.write_bytes(data)
            print(f"   {name}: {len(data):,} bytes")
            cold, _, lag = await while_sampled(_cold(found, work, source))
            print(f"     cold (LibreOffice started for it): {_runs(cold)}; loop lag "
                  f"{spread([v for _, v in lag.samples])}")
            kept = _converter(found, work)
            await kept.warm_up()
            warm, _, lag = await while_sampled(_warm(kept, work, source))
            await kept.close()
            made = {_check(target, pages, words) for target in warm.targets}
            peak = mb(max(warm.peaks_kb)) if warm.peaks_kb else "n/a"
            driver = mb(max(warm.driver_peaks_kb)) if warm.driver_peaks_kb else "n/a"
            print(f"     warm: {_runs(warm.times)}, {'/'.join(map(str, made))} pages; peak RSS "
                  f"LibreOffice {peak}, its driver {driver}; loop lag "
                  f"{spread([v for _, v in lag.samples])}")


async def office_service(mails: int = 5) -> None:
    """The real service on this loop, LibreOffice kept warm by it; the mail client and FaxMAX
    on another loop (`Outside`). `mails` DOCX and as many XLSX mails sent at once: the loop's
    lag until the last fax is at FaxMAX, and how long each mail took from its `250`."""
    from bench.documents import Outside, until
    from bridge.app import Bridge
    from bridge.simulators import FaxMaxSimulator
    from tests.mails import fax_mail
    from tests.settings import settings_for
    from tests.smtp_client import smtp_send

    docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    documents = [("offer.docx", docx_type, make_docx()), ("sheets.xlsx", xlsx_type, make_xlsx())]
    outside = Outside()
    faxmax = FaxMaxSimulator(token="sim-token")
    await outside.call(faxmax.start())
    try:
        with tempfile.TemporaryDirectory(prefix="office-service-") as tmp:
            settings = settings_for(Path(tmp), faxmax.url, documents={"office": "auto"},
                                    faxmax={"cover_page": "never"})
            bridge = Bridge(settings)
            await bridge.start()
            office_converter = bridge.pipeline.office if bridge.pipeline else None
            assert office_converter is not None, "LibreOffice is not available here"
            await until(lambda: office_converter._running, "LibreOffice's start")

            async def send_all() -> list[float]:
                accepted = []
                for n in range(mails):
                    for name, mimetype, data in documents:
                        result = await outside.call(smtp_send(
                            bridge.smtp_port, fax_mail((name, mimetype, data),
                                                       message_id=f"<{n}-{name}@bench>")))
                        assert result.data and result.data[0] == 250, result
                        accepted.append(time.perf_counter())
                await until(lambda: len(faxmax.requests) >= 2 * mails or None,
                            "every fax at FaxMAX")
                return accepted

            try:
                started = time.perf_counter()
                accepted, elapsed, lag = await while_sampled(send_all())
            finally:
                await bridge.stop()
            print(f"   {mails} DOCX + {mails} XLSX mails sent one after another, all at FaxMAX "
                  f"{elapsed:.1f} s after the first was sent (the last 250 after "
                  f"{accepted[-1] - started:.1f} s); loop lag "
                  f"{spread([v for _, v in lag.samples])}")
    finally:
        await outside.call(faxmax.stop())
        outside.close()
