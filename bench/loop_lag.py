"""Event-loop lag of the real service while it refuses a header bomb, a TIFF bomb and a PDF
bomb (docs/RELIABILITY.md B2, B6, B7): the loop must stay responsive (lag under 100 ms).

The bridge runs in this process, on this loop, with the FaxMAX simulator and a Maildir; a
sampler sleeps 5 ms at a time and records how late it wakes; the bombs are sent with aiosmtplib.

    .venv/bin/python bench/loop_lag.py
"""

from __future__ import annotations

import asyncio
import io
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app import Bridge
from bridge.config import Settings
from bridge.simulators import FaxMaxSimulator
from tests.docfactory import make_pdf_bomb
from tests.mails import fax_mail, header_bomb
from tests.smtp_client import smtp_send
from tests.waits import wait_until


async def sample(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - started - 0.005)


def tiff_bomb() -> bytes:
    out = io.BytesIO()
    Image.new("1", (30000, 30000), 1).save(out, "TIFF", compression="group4")
    return out.getvalue()


async def main() -> None:
    simulator = FaxMaxSimulator(token="t")
    await simulator.start()
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings()
        settings = replace(
            base, data_dir=tmp,
            smtp=replace(base.smtp, listen="127.0.0.1:0", trusted_networks=("127.0.0.0/8",),
                         inspect_timeout=2),
            http=replace(base.http, listen="127.0.0.1:0", push_token="x" * 20),
            faxmax=replace(base.faxmax, enabled=True, url=simulator.url, token="t"))
        bridge = Bridge(settings)
        await bridge.start()
        bombs: dict[str, bytes | EmailMessage] = {
            "header bomb (60 KB folded Content-Type)": header_bomb(),
            "TIFF bomb (30000x30000 G4)": fax_mail(("bomb.tif", "image/tiff", tiff_bomb())),
            "PDF bomb (360 MB content stream)": fax_mail(("bomb.pdf", "application/pdf",
                                                          make_pdf_bomb(360))),
        }
        for name, mail in bombs.items():
            lags: list[float] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(lags, stop))
            started = time.perf_counter()
            result = await smtp_send(bridge.smtp_port, mail)
            await wait_until(bridge.store.jobs.to_convert, [])  # conversion has run
            elapsed = time.perf_counter() - started
            stop.set()
            await sampler
            jobs = await bridge.store.jobs.counts()
            print(f"{name}: reply {result.data}; jobs {jobs}; {elapsed:.2f}s; loop lag "
                  f"max {max(lags) * 1000:.1f} ms, p99 "
                  f"{statistics.quantiles(lags, n=100)[98] * 1000:.1f} ms over {len(lags)} samples")
        await bridge.stop()
    await simulator.stop()


if __name__ == "__main__":
    asyncio.run(main())
