"""OCR of received faxes (`bridge.ocr`, `documents.ocr`): seconds per page, and push -> email
latency with and without it. Run by `bench/documents.py --only ocr`.

1. per page: fax pages made here (bench/documents.py's `fax_tiff`, 38 lines of typed English
   words and a table per page, read with `tur+eng` as a FaxMAX fax is; and pages of Japanese
   text in Noto Sans CJK, read with `jpn+eng` as a 秒速FAX Plus one), as the PDF the inbox makes
   of them, through the product's `Ocr.read` (OCRmyPDF in its own process group, capped, one
   Tesseract thread). Wall seconds per page and the CPU seconds of the programs it ran
   (`RUSAGE_CHILDREN`); the ceiling beside it, measured in the same run: `tesseract` alone on
   each page's image, the least any OCR of the page costs here.
2. service: the real service (`bridge.app.Bridge`) with `documents.ocr` "off", then "auto",
   the FaxMAX simulator pushing a fax of the same pages, timed until its email reaches an SMTP
   relay sink (all on this loop); p50 of `ROUNDS`.
"""

from __future__ import annotations

import asyncio
import io
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bridge import documents, ocr
from bridge.alert_texts import Said
from bridge.config import Settings

ROUNDS = 3
JAPANESE = ("請求書のお知らせ", "東京都千代田区丸の内一丁目", "株式会社 見積書 御中",
            "合計金額 お支払い", "ご確認をお願い致します", "担当者 納品 注文 支払")


def japanese_tiff(pages: int) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    from bench.documents import FAX_DPI, FAX_SIZE

    face = ImageFont.truetype("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 40)
    frames = []
    for page in range(pages):
        image = Image.new("1", FAX_SIZE, 1)
        draw = ImageDraw.Draw(image)
        for n in range(30):
            draw.text((120, 120 + 66 * n), f"{page + 1}-{n} " + JAPANESE[(n + page) % 6],
                      font=face, fill=0)
        frames.append(image)
    out = io.BytesIO()
    frames[0].save(out, format="TIFF", compression="group4", dpi=FAX_DPI, save_all=True,
                   append_images=frames[1:])
    return out.getvalue()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tesseract_alone(reader: ocr.Reader, tiff: bytes, langs: str, work: Path) -> float:
    """Seconds `tesseract` takes on the pages' images, one thread, nothing around it."""
    from PIL import Image, ImageSequence

    pngs = []
    with Image.open(io.BytesIO(tiff)) as image:
        for n, frame in enumerate(ImageSequence.Iterator(image)):
            pngs.append(work / f"page-{n}.png")
            frame.save(pngs[-1])
    started = time.perf_counter()
    for png in pngs:
        subprocess.run([reader.tesseract, str(png), "-", "-l", langs], check=True,
                       capture_output=True, env={"OMP_THREAD_LIMIT": "1"})
    return time.perf_counter() - started


async def ocr_pages(pages: int) -> None:
    settings = Settings()
    found = ocr.find(("eng", "jpn", "tur"))
    if not isinstance(found, ocr.Reader):
        print(f"   OCR {found.describe()}")
        return
    print(f"   OCR {found.describe()}")
    from bench.documents import fax_tiff

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        async def alert(cause: str, text: Said) -> None:
            print(f"   alert {cause}: {text.summary()}")

        reader = ocr.Ocr(found, seconds=settings.documents.ocr_timeout,
                         memory_bytes=settings.documents.ocr_memory_mb * 2**20,
                         work_dir=work / "ocr", alert=alert)
        for what, tiff, langs in ((f"{pages} English fax pages", fax_tiff(pages), "tur+eng"),
                                  (f"{pages} Japanese fax pages", japanese_tiff(pages),
                                   "jpn+eng")):
            pdf, _ = documents.tiff_to_pdf("the fax", tiff)
            cpu = children_cpu()
            started = time.perf_counter()
            text = await reader.read(pdf, pages, langs, 0)
            wall = time.perf_counter() - started
            cpu = children_cpu() - cpu
            ceiling = await asyncio.to_thread(tesseract_alone, found, tiff, langs, work)
            excerpt = text.excerpt.replace("\n", " / ")[:60] if text else "(failed)"
            print(f"   {what} ({langs}): {wall / pages:.2f} s per page wall, "
                  f"{cpu / pages:.2f} s CPU per page; tesseract alone {ceiling / pages:.2f} s "
                  f"per page; excerpt {excerpt!r}")


async def push_to_email(pages: int) -> None:
    from aiosmtpd.smtp import SMTP

    from bench.documents import fax_tiff
    from bridge.app import Bridge
    from bridge.simulators import FaxMaxSimulator
    from tests.relay import RelaySink
    from tests.settings import PUSH_TOKEN, settings_for

    tiff = fax_tiff(pages)
    relay = RelaySink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    faxmax = FaxMaxSimulator(token="sim-token", push_delay=0.01, push_retry_interval=0.05)
    await faxmax.start()
    try:
        for setting in ("off", "auto"):
            with tempfile.TemporaryDirectory() as tmp:
                settings = settings_for(Path(tmp), faxmax.url, relay.port,
                                        routing={"default": ("frontdesk@example.com",)},
                                        documents={"ocr": setting})
                bridge = Bridge(settings)
                await bridge.start()
                faxmax.push_url = (f"http://127.0.0.1:{bridge.http_port}/faxmax/push/"
                                   f"{PUSH_TOKEN}")
                times = []
                try:
                    for n in range(ROUNDS + 1):  # the first warms the sandbox up
                        before = len(relay.messages)
                        started = time.perf_counter()
                        await faxmax.push_incoming(tiff=tiff, cld="902121110000",
                                                   fax_id=f"{setting}-{n}")
                        await relay.wait_for(before + 1, timeout=300)
                        times.append(time.perf_counter() - started)
                finally:
                    await bridge.stop()
                print(f"   documents.ocr = {setting!r}: push of a {pages}-page fax -> email at "
                      f"the relay: p50 {statistics.median(times[1:]):.2f} s of {ROUNDS} "
                      f"({', '.join(f'{t:.2f}' for t in times[1:])}; first {times[0]:.2f} s)")
    finally:
        await faxmax.stop()
        server.close()
        await server.wait_closed()
