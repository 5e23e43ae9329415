"""Part 4 of bench/documents.py: the pictures in emails, per page, on the same documents.

`previews.fax_pictures` (page 1 at 600 px and up to four thumbnails) on the received fax TIFF,
and `previews.printed_page` (page 1 of the sent PDF as a fax prints it) at each resolution,
timed in this process (the service runs them in a sandbox child: the same work, plus the
hand-over that part 1 measures). The ceiling, measured in the same run on the same TIFF, is
the conversion the service already does for every received fax (`inbox.to_pdf`), per page.

    .venv/bin/python bench/documents.py --only previews
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bridge import previews
from bridge.workers.inbox import to_pdf

ROUNDS = 5


def _median_seconds(func: Callable[..., Any], *args: Any) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        func(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def preview_figures(tiff: bytes, tiff_pages: int, pdf: bytes) -> None:
    shown = 1 + min(previews.MAX_THUMBNAILS, tiff_pages - 1)
    ceiling = _median_seconds(to_pdf, tiff) / tiff_pages
    pictures = previews.fax_pictures(tiff)
    preview = _median_seconds(previews.fax_pictures, tiff) / shown
    print(f"   ceiling: TIFF -> PDF {ceiling * 1000:.1f} ms per page ({tiff_pages} pages, "
          f"median of {ROUNDS})")
    print(f"   received fax pictures: {preview * 1000:.1f} ms per page shown ({shown} pages: "
          f"page 1 {len(pictures[0].png):,} bytes {pictures[0].width}x{pictures[0].height}, "
          f"thumbnails {', '.join(f'{len(p.png):,}' for p in pictures[1:])} bytes), "
          f"{preview / ceiling:.1f}x the ceiling")
    for resolution in ("normal", "fine", "superfine"):
        picture = previews.printed_page(pdf, resolution)
        seconds = _median_seconds(previews.printed_page, pdf, resolution)
        print(f"   report page 1 as printed ({resolution}): {seconds * 1000:.1f} ms, "
              f"{len(picture.png):,} bytes {picture.width}x{picture.height} mode 1, "
              f"{seconds / ceiling:.1f}x the ceiling")
