"""Memory of the real `fax-bridge serve` process: RSS idle, peak RSS receiving one 25 MB mail,
peak while several 25 MB mails arrive at once, and RSS over 10 000 small mails (no growth).

A fax gateway receives scans of tens of megabytes, and runs for months: the memory one large
mail costs must be a small multiple of its size (the target: peak above idle at most 5x the
mail's size; a naive `email.message_from_bytes` costs about 9x), large mails should be parsed a
bounded number at a time, and RSS must not creep up with the number of mails handled.

Each phase starts a fresh service (`tests.process.ServeProcess`: `python -m bridge serve` with
the test settings of `tests.settings.settings_for`, loopback only, mail to a Maildir) with the
FaxMAX simulator paused, so faxes are converted but never sent, and the per-sender and daily
caps lifted (`tests.loadgen.NO_SENDING_LIMITS`) so that 10 000 mails are not refused. Mails
are sent as `smtp-source` does (`tests.loadgen.smtp_session`, a new connection per mail).

- idle: VmRSS after start (cold) and after one small warm-up mail has been accepted and
  converted (warm; the reference for "above idle"). Then VmHWM is reset (`5` written to
  /proc/PID/clear_refs), so the next VmHWM is the peak of what follows alone.
- large: one mail of --megabytes MB, a PDF attachment holding one page with an uncompressed
  image of random pixels (a valid PDF, so the converter really copies it), base64-encoded.
  VmHWM at the `250` (intake); then, with VmHWM reset at the `250`, the peak until the mail
  is converted and handed to the FaxMAX client (which holds it, FaxMAX being paused).
- concurrent: --concurrent such mails sent at the same time, on a fresh service; the peak above
  idle against --concurrent x the single mail's peak above idle.
- small: --mails mails of about 2 KB (a one-page PDF each) from --sessions concurrent sessions;
  VmRSS every 1 000 mails, after the converter has caught up, and after a short rest.

The sandbox children (two pools of processes forked from the service's forkserver and reused
from job to job: one for the checks before `250`, one for conversions) are separate processes
and are not in the service's RSS. A thread here walks /proc every --period seconds and notes each
descendant's VmHWM (reset at the start of each window, as the children outlive it) and whether
it used CPU since the last sample (busy): the children's figures are sampled (a peak reached in
a child's last few milliseconds before it exits can be missed), and labelled as such. After each
phase the RSS of the whole process tree at rest is printed too.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --only small --mails 2000
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, NumberObject, StreamObject

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command, descendants, loadavg, machine, product, status_kb
from bridge.config import SmtpSettings
from bridge.simulators import FaxMaxSimulator
from tests.loadgen import FAX_RCPT, NO_SENDING_LIMITS, SENDER, MailResult, small_mail, smtp_session
from tests.process import ServeProcess
from tests.settings import settings_for

# --- the machine and /proc --------------------------------------------------------------------


def kb(pid: int, name: str) -> int:
    return status_kb(pid, name)[name]


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False if not allowed here."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_by_mapping(pid: int) -> dict[str, int]:
    """The process's resident kB per kind of mapping, from /proc/PID/smaps.

    Python's own heap (tracemalloc) is only part of VmRSS; this tells whether growth is
    anonymous memory (malloc arenas, the heap), the database's shared WAL index (-shm) or
    file pages mapped from disk."""
    kinds: dict[str, int] = {}
    kind = "anonymous"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
            path = fields[5] if len(fields) > 5 else ""
            kind = ("anonymous" if not path else path if path.startswith("[") else
                    "shared libraries" if ".so" in path else Path(path).name)
        elif fields[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0) + int(fields[1])
    return kinds


def mb(kilobytes: float) -> str:
    return f"{kilobytes / 1024:.1f} MB"


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def tree_rss(root: int) -> str:
    """RSS of the service and of each process below it, now."""
    parts = [f"service {mb(status_kb(root, 'VmRSS').get('VmRSS', 0))}"]
    total = status_kb(root, "VmRSS").get("VmRSS", 0)
    for pid, depth in descendants(root):
        rss = status_kb(pid, "VmRSS").get("VmRSS", 0)
        total += rss
        parts.append(f"{'forkserver/tracker' if depth == 1 else 'sandbox child'} {mb(rss)}")
    return f"{'; '.join(parts)}; all together {mb(total)}"


@dataclass
class Child:
    depth: int
    first_seen: float
    hwm_kb: int = 0
    rss_kb: int = 0
    last_rss_kb: int = 0
    ticks: int = -1


@dataclass
class Window:
    """What the watcher saw since the window began."""

    service_rss_max: int = 0
    children: dict[int, Child] = field(default_factory=dict)
    most_busy: int = 0  # sandbox children that used CPU between two samples, at most
    most_rss_at_once: int = 0  # the sandbox children's summed VmRSS in one sample, at most

    def sandbox(self) -> list[Child]:
        """The forkserver's children (depth 2): the sandbox pools' processes, each serving
        checks before `250` or conversions, job after job."""
        return sorted((c for c in self.children.values() if c.depth == 2),
                      key=lambda c: c.first_seen)

    def helpers(self) -> list[Child]:
        """The service's own children (depth 1): the forkserver and the resource tracker."""
        return [c for c in self.children.values() if c.depth == 1]


class Watch(threading.Thread):
    """Samples the service's VmRSS and every descendant's VmHWM every `period` seconds."""

    def __init__(self, pid: int, period: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.period = period
        self.window = Window()
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def begin(self) -> Window:
        """Start a new window; the returned one fills in until the next `begin`. The sandbox
        children live on from job to job, so their VmHWM is reset: their peaks in the window
        are the window's own."""
        with self._lock:
            for pid, depth in descendants(self.pid):
                if depth >= 2:
                    reset_peak(pid)
            self.window = Window()
            return self.window

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period)

    def sample(self) -> None:
        with self._lock:
            started_in = self.window
        rss = status_kb(self.pid, "VmRSS").get("VmRSS", 0)
        found: list[tuple[int, int, dict[str, int], int]] = []
        for pid, depth in descendants(self.pid):
            values = status_kb(pid, "VmHWM", "VmRSS")
            if values:
                found.append((pid, depth, values, cpu_ticks(pid) if depth == 2 else 0))
        now = time.monotonic()
        with self._lock:
            w = self.window
            if w is not started_in:  # read before `begin` reset the peaks: not this window's
                return
            w.service_rss_max = max(w.service_rss_max, rss)
            busy = 0
            for pid, depth, values, ticks in found:
                child = w.children.setdefault(pid, Child(depth, now))
                child.hwm_kb = max(child.hwm_kb, values.get("VmHWM", 0))
                child.rss_kb = max(child.rss_kb, values.get("VmRSS", 0))
                child.last_rss_kb = values.get("VmRSS", 0)
                if depth == 2:
                    busy += 0 <= child.ticks < ticks
                    child.ticks = ticks
            w.most_busy = max(w.most_busy, busy)
            w.most_rss_at_once = max(w.most_rss_at_once, sum(
                values.get("VmRSS", 0) for _, depth, values, _ in found if depth == 2))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def describe_children(w: Window) -> str:
    sandbox = w.sandbox()
    helpers = ", ".join(mb(c.rss_kb) for c in w.helpers()) or "-"
    if not sandbox:
        return f"no sandbox child seen; forkserver and resource tracker RSS {helpers}"
    more = " ..." if len(sandbox) > 8 else ""
    return (f"{len(sandbox)} seen; peak RSS each in this window (sampled VmHWM) "
            f"{', '.join(mb(c.hwm_kb) for c in sandbox[:8])}{more}, RSS at the window's end "
            f"{', '.join(mb(c.last_rss_kb) for c in sandbox[:8])}{more}; at most {w.most_busy} "
            f"busy at once (used CPU between two samples); their RSS together at most "
            f"{mb(w.most_rss_at_once)}; forkserver and resource tracker RSS {helpers}")


# --- mails ------------------------------------------------------------------------------------


def large_pdf(raw_bytes: int, seed: int) -> bytes:
    """A valid one-page PDF of about `raw_bytes`: an uncompressed greyscale image of random
    pixels (as incompressible as a scan's JPEG data)."""
    side = int(raw_bytes ** 0.5)
    writer = PdfWriter()
    page = writer.add_blank_page(595, 842)
    image = StreamObject()
    image.set_data(random.Random(seed).randbytes(side * side))
    image.update({NameObject("/Type"): NameObject("/XObject"),
                  NameObject("/Subtype"): NameObject("/Image"),
                  NameObject("/Width"): NumberObject(side),
                  NameObject("/Height"): NumberObject(side),
                  NameObject("/ColorSpace"): NameObject("/DeviceGray"),
                  NameObject("/BitsPerComponent"): NumberObject(8)})
    contents = StreamObject()
    contents.set_data(b"q 595 0 0 842 0 0 cm /Im0 Do Q")
    page[NameObject("/Contents")] = writer._add_object(contents)
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/XObject"): DictionaryObject(
        {NameObject("/Im0"): writer._add_object(image)})})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def large_mail(megabytes: float, seed: int) -> bytes:
    """A mail of about `megabytes` MB on the wire: a scan as a PDF attachment, base64 (76
    characters and CRLF per 57 bytes)."""
    raw = int((megabytes * 1_000_000 - 3000) * 57 / 78)
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = FAX_RCPT
    msg["Subject"] = f"large scan {seed}"
    msg["Message-ID"] = f"<large-{seed}@example.com>"
    msg.set_content("see attachment\n")
    msg.add_attachment(large_pdf(raw, seed), maintype="application", subtype="pdf",
                       filename="scan.pdf")
    return msg.as_bytes(policy=SMTP)


# --- the service ------------------------------------------------------------------------------


@dataclass
class Service:
    process: ServeProcess
    faxmax: FaxMaxSimulator
    watch: Watch
    cold_idle: int = 0
    idle: int = 0
    idle_tree: str = ""

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def unconverted(self) -> int:
        return int(str(self.process.query(
            "SELECT COUNT(*) FROM messages WHERE state = 'received'")[0][0]))

    async def converted(self, timeout: float = 1800) -> float:
        """Wait until the converter has caught up; the seconds it took."""
        started = time.monotonic()
        while self.unconverted():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{self.unconverted()} mails still unconverted")
            await asyncio.sleep(0.2)
        return time.monotonic() - started


async def start_service(tmp: Path, max_message_bytes: int, period: float) -> Service:
    faxmax = FaxMaxSimulator(token="sim-token")
    await faxmax.start()
    faxmax.pause()
    settings = settings_for(tmp, faxmax.url, numbers=NO_SENDING_LIMITS,
                            faxmax={"timeout": 3600.0},
                            smtp={"max_message_bytes": max_message_bytes})
    process = ServeProcess(settings, tmp)
    await process.start()
    assert process.proc is not None
    service = Service(process, faxmax, Watch(process.proc.pid, period))
    service.watch.start()
    await asyncio.sleep(2)  # let start-up finish (listeners are bound before the workers run)
    service.cold_idle = kb(service.pid, "VmRSS")
    # warm-up: one small mail through intake and conversion, so that the code paths every
    # mail takes (and the forkserver) exist before anything is measured
    [result] = await smtp_session(process.smtp_port, [small_mail(99, 0)])
    if result.code != 250:
        raise AssertionError(f"warm-up mail refused: {result}")
    await service.converted()
    await asyncio.sleep(1)
    service.idle = kb(service.pid, "VmRSS")
    service.idle_tree = tree_rss(service.pid)
    if not reset_peak(service.pid):
        print("  (VmHWM could not be reset: peaks below include start-up)")
    return service


async def stop_service(service: Service) -> None:
    service.watch.stop()
    await service.faxmax.stop()  # drops the held sends, so the service stops at once
    await service.process.stop()


def replies(results: Sequence[MailResult]) -> str:
    codes = Counter(r.code for r in results)
    return ", ".join(f"{n} x {code}" for code, n in sorted(codes.items()))


# --- phases -----------------------------------------------------------------------------------


@dataclass
class LargeOutcome:
    above_idle_kb: int
    mail_bytes: int


async def one_large(args: argparse.Namespace, cap: int) -> LargeOutcome:
    mail = large_mail(args.megabytes, 1)
    print(f"\n[large] one mail of {len(mail):,} bytes ({len(mail) / 1e6:.1f} MB; PDF "
          f"attachment, base64); smtp.max_message_bytes {cap:,}; load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        service = await start_service(Path(tmp), cap, args.period)
        try:
            window = service.watch.begin()
            started = time.perf_counter()
            [result] = await smtp_session(service.process.smtp_port, [mail])
            elapsed = time.perf_counter() - started
            intake_peak = kb(service.pid, "VmHWM")
            intake_window = window
            window = service.watch.begin()
            reset_peak(service.pid)
            converting = await service.converted()
            await asyncio.sleep(2)  # the sender reads the PDF and starts the upload
            handled_peak = kb(service.pid, "VmHWM")
            after = kb(service.pid, "VmRSS")
            await asyncio.sleep(5)
            rested = kb(service.pid, "VmRSS")
            rested_tree = tree_rss(service.pid)
        finally:
            await stop_service(service)
    above = intake_peak - service.idle
    print(f"  reply {result.code} {result.text} after {elapsed:.2f} s ('.' -> reply "
          f"{(result.latency or 0):.2f} s)")
    print(f"  service RSS idle: {mb(service.cold_idle)} cold, {mb(service.idle)} after a warm-up "
          "mail (the reference)")
    print(f"  service peak RSS to the 250 (VmHWM): {mb(intake_peak)}; above idle {mb(above)} = "
          f"{above * 1024 / len(mail):.2f}x the mail's size (target <= 5x)")
    print(f"  sandbox children until the 250 (the check before it): "
          f"{describe_children(intake_window)}")
    print(f"  then converted in {converting:.1f} s; service peak RSS after the 250 (VmHWM reset "
          f"at the 250), until converted and handed to the FaxMAX client: {mb(handled_peak)} "
          f"(above idle {mb(handled_peak - service.idle)}); RSS then {mb(after)}, "
          f"{mb(rested)} 5 s later")
    print(f"  sandbox children after the 250 (conversion): {describe_children(window)}")
    print(f"  idle afterwards, the whole process tree: {rested_tree}")
    print(f"  (before the mail: {service.idle_tree})")
    return LargeOutcome(above, len(mail))


async def concurrent_large(args: argparse.Namespace, cap: int,
                           single: LargeOutcome | None) -> None:
    mails = [large_mail(args.megabytes, 10 + n) for n in range(args.concurrent)]
    print(f"\n[concurrent] {args.concurrent} mails of {len(mails[0]) / 1e6:.1f} MB sent at the "
          f"same time, each on its own connection; load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        service = await start_service(Path(tmp), cap, args.period)
        try:
            window = service.watch.begin()
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(smtp_session(service.process.smtp_port, [m])
                                              for m in mails))
            elapsed = time.perf_counter() - started
            peak = kb(service.pid, "VmHWM")
            intake_window = window
            window = service.watch.begin()
            reset_peak(service.pid)
            converting = await service.converted()
            await asyncio.sleep(2)
            handled_peak = kb(service.pid, "VmHWM")
            await asyncio.sleep(5)
            rested_tree = tree_rss(service.pid)
        finally:
            await stop_service(service)
    results = [r for outcome in outcomes for r in outcome]
    above = peak - service.idle
    print(f"  replies: {replies(results)} in {elapsed:.2f} s ('.' -> reply "
          f"{', '.join(f'{r.latency or 0:.2f}' for r in results)} s)")
    print(f"  service RSS idle {mb(service.idle)}; peak to the last 250 {mb(peak)}, above idle "
          f"{mb(above)} = {above * 1024 / sum(len(m) for m in mails):.2f}x the mails' total size")
    if single is not None:
        print(f"  against {args.concurrent} x the single mail's peak above idle "
              f"({args.concurrent} x {mb(single.above_idle_kb)} = "
              f"{mb(args.concurrent * single.above_idle_kb)}): "
              f"{above / (args.concurrent * single.above_idle_kb):.2f}")
    print(f"  sandbox children until the last 250 (the checks before 250, and any conversion "
          f"begun meanwhile): {describe_children(intake_window)}")
    print(f"  converted in {converting:.1f} s; service peak after the last 250 (VmHWM reset "
          f"there), until converted and handed to the FaxMAX client {mb(handled_peak)} (above "
          f"idle {mb(handled_peak - service.idle)})")
    print(f"  sandbox children after the last 250 (conversions): {describe_children(window)}")
    print(f"  idle afterwards, the whole process tree: {rested_tree}")


async def many_small(args: argparse.Namespace, cap: int) -> None:
    print(f"\n[small] {args.mails:,} mails of about 2 KB (a one-page PDF each), {args.sessions} "
          f"sessions at once, a new connection per mail; load average {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        service = await start_service(Path(tmp), cap, args.period)
        series: list[tuple[int, int, int, float, str]] = [
            (0, service.idle, 0, 0.0, loadavg())]
        mappings: dict[int, dict[str, int]] = {}
        results: list[MailResult] = []
        started = time.perf_counter()
        lock = asyncio.Lock()
        queue = iter(range(args.mails))
        window = service.watch.begin()

        async def session(s: int) -> None:
            for n in queue:
                [result] = await smtp_session(service.process.smtp_port, [small_mail(s, n)])
                async with lock:
                    results.append(result)
                    if len(results) % args.every == 0:
                        series.append((len(results), kb(service.pid, "VmRSS"),
                                       service.unconverted(), time.perf_counter() - started,
                                       loadavg()))
                        mappings[len(results)] = rss_by_mapping(service.pid)

        try:
            await asyncio.gather(*(session(s) for s in range(args.sessions)))
            elapsed = time.perf_counter() - started
            backlog = service.unconverted()
            converting = await service.converted()
            drained = kb(service.pid, "VmRSS")
            await asyncio.sleep(10)
            rested = kb(service.pid, "VmRSS")
            rested_tree = tree_rss(service.pid)
            peak = kb(service.pid, "VmHWM")
            stored = int(str(service.process.query("SELECT COUNT(*) FROM messages")[0][0]))
        finally:
            await stop_service(service)
    print(f"  replies: {replies(results)} in {elapsed:.1f} s ({len(results) / elapsed:.1f} "
          f"mail/s); stored {stored - 1} (+1 warm-up)")
    print(f"  service RSS idle: {mb(service.cold_idle)} cold, {mb(service.idle)} warm")
    print("  mails   VmRSS      unconverted  time       load average")
    for n, rss, backlog_then, at, load in series:
        print(f"  {n:>6,}  {mb(rss):>9}  {backlog_then:>11,}  {at:7.1f} s  {load}")
    print(f"  at the last 250 the converter had {backlog:,} mails to go; caught up "
          f"{converting:.1f} s later: RSS {mb(drained)}; after 10 s of rest {mb(rested)}")
    by_count = {n: rss for n, rss, _, _, _ in series}
    if 2000 in by_count and args.mails in by_count and args.mails > 2000:
        growth = by_count[args.mails] - by_count[2000]
        print(f"  growth from the 2,000th to the {args.mails:,}th mail: {growth / 1024:+.1f} MB "
              f"({growth / 1024 / (args.mails - 2000) * 1000:+.2f} MB per 1,000 mails); from idle"
              f" to the last: {(by_count[args.mails] - service.idle) / 1024:+.1f} MB")
    if 2000 in mappings and args.mails in mappings and args.mails > 2000:
        first, last = mappings[2000], mappings[args.mails]
        grown = sorted(((last.get(k, 0) - first.get(k, 0), k) for k in first.keys() | last.keys()),
                       reverse=True)
        print("  of it, by mapping (smaps Rss, 2,000th → last mail): " + ", ".join(
            f"{k} {mb(first.get(k, 0))} → {mb(last.get(k, 0))}" for d, k in grown if abs(d) >= 64))
    print(f"  service peak RSS over the run (VmHWM since the warm-up): {mb(peak)}")
    print(f"  sandbox children over the run (sampled every {args.period * 1000:g} ms): "
          f"{len(window.sandbox()):,} seen, largest peak "
          f"{mb(max((c.hwm_kb for c in window.sandbox()), default=0))}, at most "
          f"{window.most_busy} busy at once; forkserver and resource tracker RSS at most "
          f"{', '.join(mb(c.rss_kb) for c in window.helpers()) or '-'}")
    print(f"  idle at the end, the whole process tree: {rested_tree}")
    print(f"  (after the warm-up: {service.idle_tree})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("large", "concurrent", "small"))
    parser.add_argument("--megabytes", type=float, default=25.0)
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every N mails")
    parser.add_argument("--period", type=float, default=0.005,
                        help="seconds between /proc samples of the service and its children")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(product())
    print("command:", command())
    print(f"load average at start: {loadavg()}")
    cap = max(SmtpSettings().max_message_bytes, int(args.megabytes * 1_000_000) + 100_000)
    single = None
    if args.only in (None, "large"):
        single = await one_large(args, cap)
    if args.only in (None, "concurrent"):
        await concurrent_large(args, cap, single)
    if args.only in (None, "small"):
        await many_small(args, cap)
    print(f"\nload average at the end: {loadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
