"""Document conversion: a received 30-page CCITT G4 fax TIFF -> PDF, and a mail of a 20-page
PDF plus 5 JPEG photos -> the one PDF that is faxed. Wall seconds, peak RSS of the process doing
the work, and event-loop lag while it runs.

Conversion parses hostile input with Pillow and pypdf, so the service does it in a sandboxed
child (`bridge.sandbox.Sandbox`: forked from a forkserver, under `RLIMIT_AS`); the event loop
must only wait, and the child's memory must stay far below its cap (`documents.memory_mb`).

The documents are made here, deterministically: 30 fine-resolution fax pages (1728 x 2292, 204 x
196 dpi) of typed text, a table and a signature, saved as one multi-page G4 TIFF with one strip
per page, as fax software (spandsp, HylaFAX) writes it (`--tiff-strips pillow`: Pillow's default
of several strips per page instead); a 20-page text PDF (Helvetica, Flate-compressed content
streams); 5 photo-like JPEGs of 1.2-2.0 megapixels (about 0.3-0.4 MB each, as phones write them).

Two ways, each timed with a 5 ms sampler on the calling event loop (as bench/loop_lag.py):

1. direct: the functions the workers run, in the product's `Sandbox` (a pool of children
   forked from a forkserver and reused from job to job), with the service's limits:
   `bridge.workers.inbox.to_pdf` (a received TIFF), then `bridge.mime.inspect_stored` (the
   checks before `250`) and `bridge.workers.converter.prepare` (attachments -> one PDF). Each
   pool has run one trivial job first, as in a running service. Each job runs inside a thin
   wrapper that resets the child's VmHWM at the job's start and returns it, the child's CPU
   time and the job's start and end times with the result, so the job's peak RSS is exact and
   the wall time splits into reaching the child, the work, and handing the result back.
   (`getrusage(RUSAGE_CHILDREN)` cannot see these children: they are the forkserver's.)
2. service: the real service (`bridge.app.Bridge`) alone on this process's loop; the mail
   client, the FaxMAX simulator and an SMTP relay sink on a second loop in a thread. The mail
   is sent over SMTP and timed until the fax's PDF reaches FaxMAX; the TIFF is pushed by FaxMAX
   as an INCOMING_FAX event and timed until its email, with the PDF, reaches the relay. Child
   RSS here comes from /proc, sampled every 5 ms (labelled as sampled). `Sandbox.run` is
   wrapped in this process only to note when each child runs, so the lag during conversion is
   told apart from the lag over the whole run, which also holds the service's own work on its
   loop (reading the mail's DATA, the push's JSON, composing and relaying the email).

The /proc sampler is a separate process (`--sample-tree PID`), so it shares no GIL with the loop
being measured. Each run first records the loop's lag for 1 s of idleness (with the sampler
running), because on a shared machine other processes' CPU use shows up as lag too.
`--slow-steps MS` (a profiling aid; asyncio debug mode slows everything) names every step that
held the loop longer than MS milliseconds.

    .venv/bin/python bench/documents.py
    .venv/bin/python bench/documents.py --only direct --tiff-strips pillow
    .venv/bin/python bench/documents.py --only service --slow-steps 20
    .venv/bin/python bench/documents.py --only office
    .venv/bin/python bench/documents.py --only previews
    .venv/bin/python bench/documents.py --only ocr --ocr-pages 3

3. office: a 10-page DOCX and a 5-sheet XLSX through LibreOffice, cold and warm (see
   bench/office_documents.py).
4. previews: the pictures in emails, per page (bench/previews.py).
5. ocr: received fax pages through OCRmyPDF and Tesseract, seconds per page against Tesseract
   alone, and push -> email latency with `documents.ocr` off and on (see bench/ocr_documents.py).
"""

from __future__ import annotations

# Only light imports at module level: every sandbox child re-imports this script as
# `__mp_main__` (multiprocessing does so for the main script of the parent), so anything
# heavy here would be paid, in time and RSS, by every child measured.
import argparse
import asyncio
import io
import itertools
import json
import logging
import os
import random
import re
import select
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import children, command, descendants, loadavg, machine, product, status_kb
from bridge import sandbox as sandbox_module
from bridge.config import Settings
from bridge.sandbox import Limits, Sandbox

if TYPE_CHECKING:
    from bridge.app import Bridge
    from bridge.simulators import FaxMaxSimulator
    from tests.relay import RelaySink

T = TypeVar("T")

FAX_SIZE = (1728, 2292)  # fine resolution: A4-wide scan line, 196 lines per inch
FAX_DPI = (204, 196)
PHOTO_SIZES = ((1600, 1200), (1440, 1080), (1280, 960), (1200, 1600), (1632, 1224))
WORDS = ("invoice", "order", "delivery", "payment", "account", "total", "amount", "date",
         "customer", "number", "item", "quantity", "price", "tax", "shipment", "contract",
         "signature", "reference", "page", "terms", "conditions", "balance", "due", "received",
         "office", "fax", "phone", "address", "street", "city", "postal", "code")


# --- measurement helpers --------------------------------------------------------------------


@dataclass
class Seen:
    depth: int
    name: str
    hwm_kb: int = 0
    rss_kb: int = 0
    last_rss_kb: int = 0


def reset_peak(pid: int | str) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux 4.0+); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def sample_tree(root: int, period: float) -> None:
    """`--sample-tree PID`: sample the RSS of PID and the peak RSS (VmHWM) of each of its
    descendants every `period` seconds until stdin closes, then print them as JSON.

    It runs as a process of its own, so the event loop being measured neither does the
    sampling nor shares its GIL with it. The sandbox's children are a pool that serves job
    after job, so their VmHWM is reset first: the peaks reported are this window's. VmHWM only
    grows, so the last sample of a child is its peak up to that moment; what a short-lived
    process allocates in its last milliseconds can be missed."""
    root_rss_max = 0
    seen: dict[int, Seen] = {}
    me = os.getpid()
    for pid, depth in descendants(root):
        if depth >= 2:
            reset_peak(pid)
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], period)[0]:
        root_rss_max = max(root_rss_max, status_kb(root, "VmRSS").get("VmRSS", 0))
        stack = [(c, 1) for c in children(root)]
        while stack:
            pid, depth = stack.pop()
            values = status_kb(pid, "VmHWM", "VmRSS")
            if not values or pid == me:
                continue
            found = seen.get(pid)
            if found is None:
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    name = "?"
                found = seen[pid] = Seen(depth, name)
            found.hwm_kb = max(found.hwm_kb, values.get("VmHWM", 0))
            found.rss_kb = max(found.rss_kb, values.get("VmRSS", 0))
            found.last_rss_kb = values.get("VmRSS", 0)
            stack += [(c, depth + 1) for c in children(pid)]
    print(json.dumps({"root_rss_max": root_rss_max,
                      "seen": {pid: vars(found) for pid, found in seen.items()}}))


@dataclass
class Tree:
    root_rss_max: int
    seen: dict[int, Seen]

    def children_hwm(self) -> list[int]:
        """Peak RSS of each sandbox child (the forkserver's children: depth 2)."""
        return [s.hwm_kb for s in self.seen.values() if s.depth == 2]

    def pool(self) -> str:
        """The sandbox children: each one's peak in the window and its RSS at the end."""
        kids = [s for s in self.seen.values() if s.depth == 2]
        if not kids:
            return "none seen"
        return (f"{len(kids)}, peak RSS in this run (VmHWM, sampled every 5 ms) "
                f"{', '.join(mb(k.hwm_kb) for k in kids)}; RSS at the end "
                f"{', '.join(mb(k.last_rss_kb) for k in kids)}")

    def forkservers(self) -> list[Seen]:
        return [s for s in self.seen.values() if s.depth == 1]


class TreeSampler:
    """`async with TreeSampler(pid) as sampler:` ... `sampler.tree` afterwards."""

    def __init__(self, root: int, period: float = 0.005) -> None:
        self.root = root
        self.period = period
        self.tree = Tree(0, {})
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> TreeSampler:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--sample-tree", str(self.root), "--period",
            str(self.period), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        await self._proc.stdout.readline()  # "ready"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()
        out, _ = await self._proc.communicate()
        found = json.loads(out)
        self.tree = Tree(found["root_rss_max"],
                         {int(pid): Seen(**s) for pid, s in found["seen"].items()})


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


@dataclass
class Lag:
    """How late a 5 ms sleep wakes up on the loop, with the time of each sample; and how much
    CPU the loop's thread used meanwhile and how often the kernel preempted it. A loop that
    lags while its thread used little CPU was waiting for a CPU (a busy machine), not busy."""

    samples: list[tuple[float, float]] = field(default_factory=list)  # (woke at, lag)
    cpu: float = 0.0
    preempted: int = 0
    seconds: float = 0.0

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at <= end]


async def sample_lag(lag: Lag, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        woke = time.perf_counter()
        lag.samples.append((woke, woke - started - 0.005))


def spread(lags: list[float]) -> str:
    if len(lags) < 2:
        return f"{len(lags)} sample(s)"
    p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
    return (f"max {max(lags) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms over {len(lags)} "
            f"samples")


def thread_counters() -> tuple[float, int]:
    """CPU seconds of the calling thread, and how often the kernel has preempted it."""
    preempted = 0
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            preempted = int(line.split()[1])
    return time.thread_time(), preempted


def busy(cpu: float, preempted: int, seconds: float) -> str:
    return (f"loop thread on CPU {cpu * 1000:.0f} ms of {seconds * 1000:.0f} ms "
            f"({100 * cpu / seconds if seconds else 0:.0f}%), preempted {preempted} times")


async def while_sampled(work: Awaitable[T]) -> tuple[T, float, Lag]:
    """Run `work` on this loop with the lag sampler alongside; its result, seconds, lag."""
    lag = Lag()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_lag(lag, stop))
    cpu, preempted = thread_counters()
    started = time.perf_counter()
    try:
        result = await work
    finally:
        elapsed = time.perf_counter() - started
        cpu_after, preempted_after = thread_counters()
        lag.cpu, lag.preempted, lag.seconds = (cpu_after - cpu, preempted_after - preempted,
                                               elapsed)
        stop.set()
        await sampler
    return result, elapsed, lag


async def idle_lag(seconds: float = 1.0) -> str:
    """The loop's lag while it has nothing to do: what the machine alone costs."""
    _, _, lag = await while_sampled(asyncio.sleep(seconds))
    return (f"{spread([v for _, v in lag.samples])}; "
            f"{busy(lag.cpu, lag.preempted, lag.seconds)}")


@dataclass(frozen=True)
class Measured:
    """What a wrapped sandbox child reports about itself."""

    result: Any
    hwm_kb: int  # the child's peak RSS during this job (VmHWM reset at its start)
    rss_at_start_kb: int
    work_cpu_seconds: float  # of func alone
    began: float  # time.monotonic() (system-wide on Linux) when func was called
    ended: float
    pid: int
    job: int  # how many measured jobs this child has run, this one included (pooled children)
    nice: int


_JOBS = itertools.count(1)


def measured(func: Callable[..., Any], *args: Any) -> Measured:
    """Runs in the sandbox child: `func(*args)`, plus the child's own peak RSS and times."""
    began = time.monotonic()
    job = next(_JOBS)
    cpu_before = time.process_time()
    start_rss = status_kb("self", "VmRSS").get("VmRSS", 0)
    reset_peak("self")  # a pooled child has run other jobs: their peak is not this one's
    result = func(*args)
    work_cpu = time.process_time() - cpu_before
    ended = time.monotonic()
    return Measured(result, status_kb("self", "VmHWM")["VmHWM"], start_rss, work_cpu, began,
                    ended, os.getpid(), job, os.nice(0))


# --- documents ------------------------------------------------------------------------------


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def fax_tiff(pages: int, one_strip: bool = True) -> bytes:
    """A fax as fax software writes it: bilevel, G4, fine resolution, typed text on every
    page, each page one strip (`one_strip=False`: Pillow's default strips of about 64 KB)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(1728)
    font = ImageFont.load_default(size=26)
    heading = ImageFont.load_default(size=44)
    frames = []
    for page in range(1, pages + 1):
        image = Image.new("1", FAX_SIZE, 1)
        draw = ImageDraw.Draw(image)
        draw.text((120, 80), f"FAX  {page}/{pages}  from +81 3 6868 0000", font=font, fill=0)
        draw.text((120, 160), f"Invoice {4200 + page}", font=heading, fill=0)
        y = 260
        for _ in range(38):
            draw.text((120, y), words(rng, rng.randint(8, 13)).capitalize() + ".", font=font,
                      fill=0)
            y += 38
        top = y + 30
        for row in range(9):  # a table
            draw.line((120, top + row * 44, 1608, top + row * 44), fill=0, width=2)
            if row < 8:
                for col, x in enumerate((130, 700, 1000, 1300)):
                    text = words(rng, 2) if col == 0 else f"{rng.randint(1, 9999):,}"
                    draw.text((x, top + row * 44 + 8), text, font=font, fill=0)
        for x in (120, 690, 990, 1290, 1608):
            draw.line((x, top, x, top + 8 * 44), fill=0, width=2)
        sig = [(1100 + i * 12, 2120 + int(30 * ((i * 7919) % 13) / 13)) for i in range(40)]
        draw.line(sig, fill=0, width=3)  # a signature
        for _ in range(400):  # line noise, as a real fax has
            x, y0 = rng.randrange(FAX_SIZE[0]), rng.randrange(FAX_SIZE[1])
            draw.point((x, y0), fill=0)
        frames.append(image)
    out = io.BytesIO()
    strips: dict[str, Any] = {"strip_size": 2**30} if one_strip else {}
    frames[0].save(out, format="TIFF", compression="group4", dpi=FAX_DPI, save_all=True,
                   append_images=frames[1:], **strips)
    return out.getvalue()


def text_pdf(pages: int) -> bytes:
    """A typical office PDF: `pages` A4 pages of Helvetica text, Flate-compressed."""
    from pypdf import PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, StreamObject

    rng = random.Random(20)
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica")}))
    for page_number in range(1, pages + 1):
        page = writer.add_blank_page(595, 842)
        lines = [f"BT /F1 16 Tf 56 790 Td (Contract 2026-{page_number:03d}) Tj ET"]
        for n in range(58):
            lines.append(f"BT /F1 10 Tf 56 {760 - n * 12} Td ({words(rng, 14)}) Tj ET")
        lines.append("0.5 w 56 50 m 539 50 l S")
        stream = StreamObject()
        stream.set_data(zlib.compress("\n".join(lines).encode()))
        stream[NameObject("/Filter")] = NameObject("/FlateDecode")
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
            {NameObject("/F1"): font})})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def photo(n: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG: smooth gradients, shapes and sensor noise, as a phone writes it."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(n)
    width, height = size
    base = Image.linear_gradient("L").resize(size)
    channels = [Image.blend(base.rotate(rng.choice((0, 90, 180, 270))).resize(size),
                            Image.effect_noise(size, 60).filter(ImageFilter.GaussianBlur(1.2)),
                            0.5)
                for _ in range(3)]
    image = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(20, min(size) // 4)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    grain = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    image = Image.blend(image, grain, 0.15)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88, dpi=(72, 72))
    return out.getvalue()


@dataclass(frozen=True)
class Inputs:
    tiff: bytes
    tiff_pages: int
    pdf: bytes
    pdf_pages: int
    photos: tuple[bytes, ...]
    mail: bytes


def make_inputs(tiff_pages: int, pdf_pages: int, one_strip: bool) -> Inputs:
    from email.policy import SMTP

    from tests.mails import fax_mail

    tiff = fax_tiff(tiff_pages, one_strip)
    pdf = text_pdf(pdf_pages)
    photos = tuple(photo(n, size) for n, size in enumerate(PHOTO_SIZES))
    attachments = [("contract.pdf", "application/pdf", pdf)] + [
        (f"IMG_{4711 + n}.jpg", "image/jpeg", data) for n, data in enumerate(photos)]
    mail = fax_mail(*attachments, body="Please fax the contract and the photos.\n",
                    subject="Contract and site photos").as_bytes(policy=SMTP)
    return Inputs(tiff, tiff_pages, pdf, pdf_pages, photos, mail)


def pdf_page_count(data: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(data)).pages)


# --- 1. direct: the workers' functions in the product's sandbox ------------------------------


def describe(result: Any) -> str:
    """Words for what a worker function returned: pages, checked in the PDF it made."""
    from bridge.workers import converter

    if isinstance(result, converter.Prepared):
        produced, pages = Path(result.pdf_path).read_bytes(), result.pages
    elif isinstance(result, tuple):
        produced, pages = result
    else:
        return f"{len(result.attachments)} attachment(s) accepted"
    return (f"{pages} pages ({pdf_page_count(produced)} in the file, "
            f"{len(produced) / 1e6:.2f} MB)")


async def direct(inputs: Inputs, settings: Settings) -> None:
    from bridge import mime
    from bridge.workers import converter, inbox

    # with the limits bridge/pipeline.py gives them: conversions at nice 10, the checks before
    # 250 at 0
    docs = Sandbox(Limits(memory_bytes=settings.documents.memory_mb * 2**20,
                          seconds=settings.documents.timeout, nice=10))
    intake = Sandbox(Limits(memory_bytes=settings.documents.memory_mb * 2**20,
                            seconds=settings.smtp.inspect_timeout))
    # start the forkserver and a child in each pool before anything is timed, as a running
    # service has them
    await docs.run(measured, os.getpid)
    await intake.run(measured, os.getpid)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spool = work / "mail.eml"
        spool.write_bytes(inputs.mail)
        runs: list[tuple[str, str, Sandbox, Callable[..., Any], tuple[Any, ...]]] = [
            (f"TIFF fax -> PDF ({inputs.tiff_pages} pages G4, {len(inputs.tiff) / 1e6:.2f} MB)",
             "inbox.to_pdf", docs, inbox.to_pdf, (inputs.tiff,)),
            (f"mail checks before 250 ({len(inputs.mail) / 1e6:.2f} MB mail)",
             "mime.inspect_stored", intake, mime.inspect_stored, (str(spool),)),
            (f"mail -> one PDF ({inputs.pdf_pages}-page PDF + {len(inputs.photos)} JPEG)",
             "converter.prepare", docs, converter.prepare,
             (str(spool), str(work / "message-1"), settings.documents.max_pages)),
        ]
        for title, name, box, func, args in runs:
            async with TreeSampler(os.getpid()) as sampler:
                idle = await idle_lag()
                called = time.monotonic()
                report, elapsed, lag = await while_sampled(box.run(measured, func, *args))
                returned = time.monotonic()
            assert isinstance(report, Measured)
            sampled = max(sampler.tree.children_hwm(), default=0)
            pages = describe(report.result)
            print(f"  {title}: {name} in the sandbox (child {report.pid}, its job "
                  f"{report.job}, nice {report.nice})")
            print(f"    {elapsed:.2f} s wall = {report.began - called:.2f} s to reach the child"
                  f" + {report.ended - report.began:.2f} s of work ({report.work_cpu_seconds:.2f}"
                  f" s CPU) + {returned - report.ended:.2f} s to hand back the result")
            print(f"    output: {pages}")
            print(f"    child peak RSS during the job (its VmHWM, reset at the job's start) "
                  f"{mb(report.hwm_kb)}, RSS at the start {mb(report.rss_at_start_kb)}, so +"
                  f"{mb(report.hwm_kb - report.rss_at_start_kb)} for the work; the /proc "
                  f"sampler saw {mb(sampled)}")
            print(f"    loop lag meanwhile: {spread([v for _, v in lag.samples])}; "
                  f"{busy(lag.cpu, lag.preempted, lag.seconds)}")
            print(f"    idle loop just before: {idle}")


# --- 2. the service --------------------------------------------------------------------------


@dataclass
class Window:
    what: str
    start: float
    end: float = 0.0
    counters: tuple[float, int] = (0.0, 0)  # of the loop thread, at the start
    cpu: float = 0.0
    preempted: int = 0


def record_sandbox_runs(windows: list[Window]) -> Callable[[], None]:
    """Wrap `Sandbox.run` in this process to note when each child runs; returns the undo."""
    original = sandbox_module.Sandbox.run

    async def run(self: Sandbox, func: Callable[..., T], *args: Any,
                  what: str = "the document") -> T:
        window = Window(getattr(func, "__qualname__", "?"), time.perf_counter(),
                        counters=thread_counters())
        windows.append(window)
        try:
            return await original(self, func, *args, what=what)
        finally:
            window.end = time.perf_counter()
            cpu, preempted = thread_counters()
            window.cpu = cpu - window.counters[0]
            window.preempted = preempted - window.counters[1]

    sandbox_module.Sandbox.run = run  # type: ignore[method-assign]

    def undo() -> None:
        sandbox_module.Sandbox.run = original  # type: ignore[method-assign]

    return undo


def worker_tasks() -> dict[str, str]:
    """Task name -> worker name, for the tasks that run `Worker._loop` (unnamed: `gather`
    makes them), so that a slow step can name its worker."""
    found: dict[str, str] = {}
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if getattr(coro, "__qualname__", "") == "Worker._loop" and frame is not None:
            found[task.get_name()] = str(frame.f_locals["self"].name)
    return found


class Outside:
    """The world outside the service (the mail client, FaxMAX, the relay) on an event loop of
    its own, in a thread: the loop being measured runs the service alone. (The two threads
    share the GIL, which hands over every 5 ms at most.)"""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def until(found: Callable[[], T | None], what: str, timeout: float = 300) -> T:
    deadline = time.monotonic() + timeout
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.01)
    return value


async def service(inputs: Inputs) -> None:
    from aiosmtpd.smtp import SMTP

    from bridge.app import Bridge
    from bridge.simulators import FaxMaxSimulator
    from tests.relay import RelaySink
    from tests.settings import PUSH_TOKEN, settings_for

    outside = Outside()
    relay = RelaySink()
    faxmax = FaxMaxSimulator(token="sim-token", push_delay=0.01, push_retry_interval=0.05)

    async def start_outside() -> asyncio.Server:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
        relay.port = server.sockets[0].getsockname()[1]
        await faxmax.start()
        return server

    async def stop_outside(server: asyncio.Server) -> None:
        await faxmax.stop()
        server.close()
        await server.wait_closed()

    relay_server = await outside.call(start_outside())
    windows: list[Window] = []
    undo = record_sandbox_runs(windows)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(Path(tmp), faxmax.url, relay.port,
                                    routing={"default": ("frontdesk@example.com",)},
                                    faxmax={"timeout": 120.0})
            bridge = Bridge(settings)
            await bridge.start()
            await asyncio.sleep(0.1)
            SlowSteps.workers.update(worker_tasks())
            faxmax.push_url = (f"http://127.0.0.1:{bridge.http_port}/faxmax/push/"
                               f"{PUSH_TOKEN}")
            try:
                await service_runs(bridge, faxmax, relay, outside, inputs, windows)
            finally:
                await bridge.stop()
    finally:
        undo()
        await outside.call(stop_outside(relay_server))
        outside.close()


async def service_runs(bridge: Bridge, faxmax: FaxMaxSimulator, relay: RelaySink,
                       outside: Outside, inputs: Inputs, windows: list[Window]) -> None:
    from tests.docfactory import make_pdf
    from tests.mails import fax_mail
    from tests.relay import Received
    from tests.smtp_client import SmtpResult, smtp_send

    # warm-up: the first sandbox run starts the forkserver
    await outside.call(smtp_send(bridge.smtp_port,
                                 fax_mail(("warm.pdf", "application/pdf", make_pdf(1)))))
    await until(lambda: faxmax.requests or None, "the warm-up fax")
    await asyncio.sleep(0.5)
    requests_before = len(faxmax.requests)
    relay_before = len(relay.messages)

    async def mail_to_fax() -> tuple[float, SmtpResult]:
        result = await outside.call(smtp_send(bridge.smtp_port, inputs.mail))
        accepted = time.perf_counter()
        await until(lambda: faxmax.requests[requests_before:] or None, "the fax at FaxMAX")
        return accepted, result

    def fax_email() -> Received | None:
        return next((m for m in relay.messages[relay_before:]
                     if "frontdesk@example.com" in m.rcpt_tos), None)

    async def tiff_to_email() -> Received:
        await outside.call(faxmax.push_incoming(tiff=inputs.tiff, cld="902121110000",
                                                cli="903125550000"))
        return await until(fax_email, "the fax's email at the relay")

    runs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (f"mail ({inputs.pdf_pages}-page PDF + {len(inputs.photos)} JPEG, "
         f"{len(inputs.mail) / 1e6:.2f} MB) -> SMTP 250 -> converted -> PDF at FaxMAX",
         mail_to_fax),
        (f"FaxMAX push of a {inputs.tiff_pages}-page G4 TIFF ({len(inputs.tiff) / 1e6:.2f} MB)"
         " -> PDF -> email at the relay", tiff_to_email),
    ]
    for title, run in runs:
        async with TreeSampler(os.getpid()) as sampler:
            idle = await idle_lag()
            first = len(windows)
            before_rss = status_kb("self", "VmRSS")["VmRSS"]
            started = time.perf_counter()
            outcome, elapsed, lag = await while_sampled(run())
        tree = sampler.tree
        print(f"  {title}")
        if isinstance(outcome, tuple):
            accepted, result = outcome
            request = faxmax.requests[-1]
            print(f"    SMTP reply {result.data} after {accepted - started:.2f} s; PDF at FaxMAX "
                  f"after {elapsed:.2f} s: {pdf_page_count(request.document)} pages, "
                  f"{len(request.document) / 1e6:.2f} MB")
        else:
            [part] = list(outcome.message.iter_attachments())
            data = part.get_payload(decode=True)
            print(f"    email at the relay after {elapsed:.2f} s: {part.get_filename()}, "
                  f"{pdf_page_count(data)} pages, {len(data) / 1e6:.2f} MB")
        for window in windows[first:]:
            print(f"    sandbox child {window.what}: {window.end - window.start:.2f} s, loop lag "
                  f"meanwhile {spread(lag.between(window.start, window.end))}; "
                  f"{busy(window.cpu, window.preempted, window.end - window.start)}")
        print(f"    loop lag over the whole run: {spread([v for _, v in lag.samples])}; "
              f"{busy(lag.cpu, lag.preempted, lag.seconds)}")
        print(f"    idle loop just before: {idle}")
        print(f"    sandbox children (both pools): {tree.pool()}; forkserver and resource tracker"
              f" RSS {', '.join(mb(s.rss_kb) for s in tree.forkservers()) or '-'}")
        print(f"    this process (service + simulators + relay): RSS {mb(before_rss)} before, "
              f"{mb(tree.root_rss_max)} at most (sampled)")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("direct", "service", "office", "previews", "ocr"))
    parser.add_argument("--ocr-pages", type=int, default=3)
    parser.add_argument("--tiff-pages", type=int, default=30)
    parser.add_argument("--pdf-pages", type=int, default=20)
    parser.add_argument("--tiff-strips", choices=("one", "pillow"), default="one",
                        help="one strip per page (fax software) or Pillow's default strips")
    parser.add_argument("--slow-steps", type=float, metavar="MS",
                        help="profile: run the loop in asyncio debug mode and print every step "
                             "that holds it longer than MS milliseconds (slows everything)")
    parser.add_argument("--sample-tree", type=int, metavar="PID", help=argparse.SUPPRESS)
    parser.add_argument("--period", type=float, default=0.005, help=argparse.SUPPRESS)
    return parser.parse_args()


class SlowSteps(logging.Handler):
    """Prints asyncio's "Executing <Task ...> took N seconds" warnings, shortened to the
    coroutine and where it was, with the time since the start."""

    workers: ClassVar[dict[str, str]] = {}  # task name -> the worker whose loop it runs
    CORO = re.compile(r"name='([^']*)' coro=<(\S+) running at ([^>]+?)>")
    TOOK = re.compile(r"took ([\d.]+) seconds")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.started = time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        coro, took = self.CORO.search(text), self.TOOK.search(text)
        if coro:
            worker = self.workers.get(coro[1])
            what = (f"{worker} worker ({coro[2]} at {coro[3]})" if worker
                    else f"task {coro[1]}: {coro[2]} at {coro[3]}")
        else:
            what = text[:160]
        took_ms = f"{float(took[1]) * 1000:.0f} ms" if took else ""
        print(f"    [slow step at +{time.perf_counter() - self.started:.2f} s] {took_ms} {what}")


async def main(args: argparse.Namespace) -> None:
    if args.slow_steps:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = args.slow_steps / 1000
        logging.getLogger("asyncio").addHandler(SlowSteps())
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    print(f"machine: {machine()}")
    print(product())
    print("command:", command())
    print(f"load average at start: {loadavg()}")
    settings = Settings()
    if args.only not in ("office", "ocr"):
        started = time.perf_counter()
        inputs = make_inputs(args.tiff_pages, args.pdf_pages, args.tiff_strips == "one")
        print(f"inputs (made in {time.perf_counter() - started:.1f} s): TIFF {args.tiff_pages} "
              f"pages {FAX_SIZE[0]}x{FAX_SIZE[1]} G4 ({args.tiff_strips} strip(s) per page) "
              f"{len(inputs.tiff):,} bytes; PDF {args.pdf_pages} pages "
              f"{len(inputs.pdf):,} bytes; JPEG "
              f"{', '.join(f'{len(p):,}' for p in inputs.photos)} bytes "
              f"({', '.join(f'{w}x{h}' for w, h in PHOTO_SIZES)}); mail "
              f"{len(inputs.mail):,} bytes")
        if args.only in (None, "direct"):
            print("\n1. direct: the workers' functions in the product's sandbox "
                  f"(memory cap {settings.documents.memory_mb} MB)")
            await direct(inputs, settings)
            print(f"   load average: {loadavg()}")
        if args.only in (None, "service"):
            print("\n2. the service (Bridge) on this loop; the mail client, FaxMAX simulator and "
                  "relay sink on another loop, in a thread")
            await service(inputs)
            print(f"   load average: {loadavg()}")
        if args.only in (None, "previews"):
            from bench.previews import preview_figures

            print("\n4. pictures in emails, in this process (bench/previews.py)")
            preview_figures(inputs.tiff, args.tiff_pages, inputs.pdf)
            print(f"   load average: {loadavg()}")
    if args.only in (None, "office"):
        from bench.office_documents import office_documents, office_service

        print("\n3. Office documents through the product's LibreOffice "
              "(bench/office_documents.py)")
        await office_documents()
        print("   the service converting them, mails sent while it does:")
        await office_service()
        print(f"   load average: {loadavg()}")
    if args.only in (None, "ocr"):
        from bench.ocr_documents import ocr_pages, push_to_email

        print("\n4. OCR of received faxes through the product's OCRmyPDF and Tesseract "
              "(bench/ocr_documents.py)")
        await ocr_pages(args.ocr_pages)
        await push_to_email(args.ocr_pages)
        print(f"   load average: {loadavg()}")


if __name__ == "__main__":
    arguments_ = arguments()
    if arguments_.sample_tree:
        sample_tree(arguments_.sample_tree, arguments_.period)
    else:
        asyncio.run(main(arguments_))
