"""Webhook throughput: FaxMAX `INCOMING_FAX` pushes with a ~100 KB TIFF at 20 connections,
`fax-bridge serve` against a bare ceiling, in one run.

What is measured, in rounds of the ceiling first and then the real service (a fresh process and
a fresh database each time): the ceiling is `bench/ceiling_http.py`, a bare aiohttp handler
that JSON-decodes a push, base64-decodes the TIFF and does `INSERT OR IGNORE` + commit per
request (aiosqlite, WAL, `synchronous=FULL`); the service is `tests.process.ServeProcess` with
the test settings of `tests.settings.settings_for`, received faxes routed to one address and
emails written to a Maildir, so no relay runs in this process. Every push is a distinct fax
(its own id) carrying the same real 2-page G4 fax TIFF of about 100 KB (text-like lines, made
with Pillow); the bridge sniffs and accepts it, and its inbox converts it to PDF and mails it
during the run, as in production.

- warm-up: 2 x concurrency pushes, not counted; for the bridge the run then waits until they
  are mailed, so both servers start the timed phase idle;
- timed phase: `--pushes` pushes over `--concurrency` keep-alive connections (an aiohttp
  client in this process); pushes/s = pushes answered 200 / wall time; p50/p99 (nearest rank)
  from sending a request to reading its whole answer; CPU time (user + system, from /proc) per
  push of the server process, of it with its child processes (the bridge's sandboxed
  conversions), and of this load generator. Any answer other than 200 (or a lost connection,
  shown as 0) fails the run, and so does a stored row count that differs from the faxes sent;
- traced phase, first round only: after the bridge's inbox has drained, `--traced-pushes`
  more pushes with `strace -f -y -e trace=fsync,fdatasync -p PID` attached to the server
  process (all its threads); the tracer stops the process at every system call, so it is kept
  out of the timed phase. Syncs are told apart by path: the SQLite WAL, the SQLite database
  file, the fax image files and their directory, anything else (the inbox's and mailer's
  Maildir files). With `synchronous=FULL` a commit syncs the WAL once; a checkpoint syncs the
  WAL and then the database, and the next commit restarts the WAL and syncs its header once
  more, so commits = WAL syncs - 2 x database syncs (the ceiling, one commit per push by
  construction, checks the rule). "commits/push" divides the commits made in the traced
  window by the pushes answered 200 in it; for the bridge they include the inbox's and the
  mailer's commits for faxes mailed meanwhile, which the notes count.

Why: the plan's target is that the webhook at 20 connections reaches at least 1.0x the
ceiling. On a shared 2-core machine the rate of one server swings with what else runs, so the
servers alternate for `--rounds` rounds and the ratio is taken within each round; the median
ratio is reported against the target, never asserted.

    .venv/bin/python bench/webhook.py
    .venv/bin/python bench/webhook.py --pushes 2000 --concurrency 20 --rounds 3
"""


from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import random
import re
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import loadavg, machine, percentile
from bridge.simulators import FaxMaxSimulator
from tests.docfactory import FAX_DPI, FAX_PAGE_SIZE
from tests.loadgen import RECEIVING_NUMBER, ROUTED_TO
from tests.process import ServeProcess
from tests.settings import settings_for

CEILING = Path(__file__).resolve().parent / "ceiling_http.py"
READY = re.compile(r"listening on (http://\S+)")
SYNC = re.compile(r"\b(?:fsync|fdatasync)\(\d+<([^>]*)>")


# --- the fax ---------------------------------------------------------------------------------


def _text_page(rng: random.Random, lines: int) -> Image.Image:
    """A fine-resolution fax page with `lines` lines of glyph-like strokes from the top."""
    image = Image.new("1", FAX_PAGE_SIZE, 1)
    draw = ImageDraw.Draw(image)
    width, _ = FAX_PAGE_SIZE
    top = 120
    for _ in range(lines):
        x = 110
        while x < width - 160:
            for _ in range(rng.randint(2, 9)):  # a word
                for _ in range(rng.randint(3, 5)):  # a glyph: a few strokes in a 17x22 cell
                    x0, y0 = x + rng.randint(0, 10), top + rng.randint(0, 18)
                    draw.rectangle((x0, y0, x0 + rng.choice((2, 3, 9, 12)),
                                    y0 + rng.choice((2, 3, 18))), fill=0)
                x += 17
            x += 14
        top += 36
    return image


def _g4_tiff(pages: int, lines: int, seed: int) -> bytes:
    rng = random.Random(seed)
    per_page = [lines // pages + (1 if p < lines % pages else 0) for p in range(pages)]
    frames = [_text_page(rng, n) for n in per_page]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", compression="group4", dpi=FAX_DPI, save_all=True,
                   append_images=frames[1:], strip_size=2**30)
    return buffer.getvalue()


def fax_tiff(target_bytes: int = 100_000, pages: int = 2, seed: int = 7) -> bytes:
    """A G4 fax TIFF of `pages` typed-looking pages (one strip each, as fax software writes),
    the smallest one with at least `target_bytes`: text lines are added until it is that big."""
    most = pages * 58  # lines that fit on the pages (36 px apart from 120 px down)
    if len(_g4_tiff(pages, most, seed)) < target_bytes:
        raise ValueError(f"{pages} page(s) of text stay under {target_bytes} bytes")
    low, high = 1, most
    while low < high:
        middle = (low + high) // 2
        if len(_g4_tiff(pages, middle, seed)) >= target_bytes:
            high = middle
        else:
            low = middle + 1
    return _g4_tiff(pages, low, seed)


def push_bodies(tiff: bytes, prefix: str, n: int) -> list[bytes]:
    """`n` push bodies as FaxMAX sends them (a JSON array of one INCOMING_FAX event, built by
    the simulator), each a distinct fax: ids `prefix-0`, `prefix-1`, ..."""
    event = FaxMaxSimulator().incoming_event(tiff=tiff, cld=RECEIVING_NUMBER, fax_id="x")
    rng = random.Random(prefix)
    return [json.dumps([{**event, "id": f"{prefix}-{i}",
                         "cli": f"90312{rng.randrange(10**7):07d}"}]).encode()
            for i in range(n)]


# --- the client ------------------------------------------------------------------------------


@dataclass
class Phase:
    statuses: list[int]
    latencies: list[float]
    elapsed: float

    @property
    def ok(self) -> int:
        return sum(1 for s in self.statuses if s == 200)

    @property
    def failed(self) -> int:
        return len(self.statuses) - self.ok

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed


async def post_pushes(url: str, bodies: Sequence[bytes], concurrency: int) -> Phase:
    """POST every body over `concurrency` keep-alive connections, one request each at a time."""
    pending = iter(bodies)
    statuses: list[int] = []
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            for body in pending:  # shared: each body is taken by exactly one worker
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError, OSError):
                    status = 0
                latencies.append(time.perf_counter() - started)
                statuses.append(status)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Phase(statuses, latencies, elapsed)


# --- counting syncs --------------------------------------------------------------------------


@dataclass
class Syncs:
    wal: int = 0
    database: int = 0
    fax_files: int = 0
    other: int = 0
    examples: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.wal + self.database + self.fax_files + self.other

    @property
    def commits(self) -> int:
        return self.wal - 2 * self.database

    @classmethod
    def parse(cls, text: str) -> Syncs:
        syncs = cls()
        for line in text.splitlines():
            if "resumed>" in line or not (found := SYNC.search(line)):
                continue
            path = found[1]
            if path.endswith("-wal"):
                syncs.wal += 1
            elif path.endswith((".sqlite3", ".sqlite")):
                syncs.database += 1
            elif "/inbound/" in path or path.endswith("/inbound"):
                syncs.fax_files += 1
            else:
                syncs.other += 1
                syncs.examples[re.sub(r"[^/]*$", "*", path)] += 1
        return syncs


class Tracer:
    """`strace -f -y -e trace=fsync,fdatasync -p PID`, attached until `stop()`."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "strace", "-f", "-y", "-e", "trace=fsync,fdatasync", "-o", str(self.out),
            "-p", str(self.pid), stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        line = await asyncio.wait_for(self.proc.stderr.readline(), 30)
        if b"attached" not in line:
            raise RuntimeError(f"strace did not attach: {line!r}")

    async def stop(self) -> Syncs:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)  # strace detaches and flushes its output
        await asyncio.wait_for(self.proc.communicate(), 30)
        return Syncs.parse(self.out.read_text(errors="replace"))


# --- one server ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of process `pid` (all its threads), and of it together with
    every process below it (the bridge's forkserver and its sandboxed conversions): live
    processes count their own time and that of the children they have reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited meanwhile; its time is in its parent's reaped children
        proc = int(stat.parent.name)
        parents[proc] = int(fields[1])
        own = int(fields[11]) + int(fields[12])
        times[proc] = (own, own + int(fields[13]) + int(fields[14]))
    tree, grew = {pid}, True
    while grew:
        below = {proc for proc, parent in parents.items() if parent in tree} - tree
        tree |= below
        grew = bool(below)
    main = times.get(pid, (0, 0))[0]
    return main / tick, sum(times[proc][1] for proc in tree if proc in times) / tick


@dataclass
class Result:
    name: str
    round: int
    timed: Phase
    cpu_main: float  # server CPU seconds in the timed phase: the server process itself
    cpu_tree: float  # ... with its child processes
    cpu_client: float  # this process (the load generator) in the timed phase
    stored: int
    expected: int
    notes: list[str]
    traced: Phase | None = None
    syncs: Syncs | None = None

    @property
    def failed(self) -> int:
        return self.timed.failed + (self.traced.failed if self.traced else 0)


async def exercise(
    name: str, round_: int, url: str, pid: int, tiff: bytes, args: argparse.Namespace,
    workdir: Path, *, settle: Callable[[], Awaitable[str]],
    stored: Callable[[], Awaitable[int]],
    progress: Callable[[], tuple[int, int]] = lambda: (0, 0),
) -> Result:
    """Warm up, settle, time (and in the first round: settle, trace): the phases every
    server goes through alike."""
    notes = []
    warmup = await post_pushes(
        url, push_bodies(tiff, f"{name}{round_}-warm", 2 * args.concurrency), args.concurrency)
    if warmup.failed:
        notes.append(f"warm-up: {warmup.failed} answers other than 200 "
                     f"{dict(Counter(warmup.statuses))}")
    notes.append(await settle())
    bodies = push_bodies(tiff, f"{name}{round_}-timed", args.pushes)
    before, main_before, tree_before = loadavg(), *cpu_seconds(pid)
    client_before = time.process_time()
    timed = await post_pushes(url, bodies, args.concurrency)
    client = time.process_time() - client_before
    main_after, tree_after = cpu_seconds(pid)
    notes.append(f"load average before the timed phase {before}, after {loadavg()}")
    del bodies
    result = Result(name, round_, timed, main_after - main_before, tree_after - tree_before,
                    client, 0, len(warmup.statuses) + len(timed.statuses), notes)
    if round_ == 1:
        notes.append(await settle())
        tracer = Tracer(pid, workdir / f"{name}.strace")
        traced_bodies = push_bodies(tiff, f"{name}{round_}-traced", args.traced_pushes)
        mailed, sent = progress()
        await tracer.start()
        try:
            result.traced = await post_pushes(url, traced_bodies, args.concurrency)
        finally:
            result.syncs = await tracer.stop()
        mailed_after, sent_after = progress()
        notes.append(
            f"traced phase: {result.traced.ok} x 200 at {result.traced.rate:.1f} pushes/s "
            "under strace" + (f"; meanwhile the inbox mailed {mailed_after - mailed} faxes "
                              f"and the mailer delivered {sent_after - sent} emails (1 + 2 "
                              "commits each)" if name == "bridge" else ""))
        result.expected += len(result.traced.statuses)
    result.stored = await stored()
    return result


async def run_ceiling(round_: int, tiff: bytes, args: argparse.Namespace,
                      workdir: Path) -> Result:
    db_path = workdir / "ceiling.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CEILING), "--port", "0", "--db", str(db_path),
        stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = READY.search(ready)
        if not found:
            raise RuntimeError(f"ceiling did not start: {ready!r}")

        async def settle() -> str:
            return "nothing runs after the answer"

        async def stored() -> int:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
            try:
                return int(db.execute("SELECT COUNT(*) FROM inbound").fetchone()[0])
            finally:
                db.close()

        return await exercise("ceiling", round_, found[1], proc.pid, tiff, args, workdir,
                              settle=settle, stored=stored)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def run_bridge(round_: int, tiff: bytes, args: argparse.Namespace,
                     workdir: Path) -> Result:
    simulator = FaxMaxSimulator(token="sim-token")  # only its URL is needed: nothing is sent
    await simulator.start()
    settings = settings_for(workdir, simulator.url, routing={"default": (ROUTED_TO,)})
    p = ServeProcess(settings, workdir)
    await p.start()
    assert p.proc is not None

    def count(sql: str) -> int:
        return int(str(p.query(sql)[0][0]))

    async def settle() -> str:
        """Wait until every stored fax is mailed (inbox and mailer idle)."""
        started = time.perf_counter()
        backlog = count("SELECT COUNT(*) FROM inbound WHERE state = 'received'")
        deadline = started + args.drain_timeout
        while (count("SELECT COUNT(*) FROM inbound WHERE state = 'received'")
               + count("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the inbox did not drain in {args.drain_timeout} s")
            await asyncio.sleep(0.2)
        return (f"{backlog} faxes were still to be converted and mailed at the end of the "
                f"phase; drained in {time.perf_counter() - started:.1f} s")

    async def stored() -> int:
        return count("SELECT COUNT(*) FROM inbound")

    def progress() -> tuple[int, int]:
        return (count("SELECT COUNT(*) FROM inbound WHERE state = 'mailed'"),
                count("SELECT COUNT(*) FROM outbox WHERE state = 'sent'"))

    try:
        result = await exercise("bridge", round_, p.push_url, p.proc.pid, tiff, args,
                                workdir, settle=settle, stored=stored, progress=progress)
        if round_ > 1:
            backlog = count("SELECT COUNT(*) FROM inbound WHERE state = 'received'")
            result.notes.append(f"{backlog} faxes were still to be converted and mailed at "
                                "the end of the timed phase")
        result.notes.append(f"ERROR lines in the service log: {p.log().count(' ERROR ')}")
        return result
    finally:
        await p.stop()
        await simulator.stop()


# --- report ----------------------------------------------------------------------------------


def report(results: Sequence[Result], args: argparse.Namespace, tiff: bytes) -> None:
    print(f"Webhook: {args.pushes} INCOMING_FAX pushes at {args.concurrency} connections per "
          f"server and round, each a distinct fax with a {len(tiff):,}-byte 2-page G4 TIFF "
          f"({len(push_bodies(tiff, 'x', 1)[0]):,}-byte body)")
    print()
    header = ("round", "server", "200s", "other", "pushes/s", "p50", "p99", "ratio",
              "commits/push", "fsyncs/push", "server CPU/push", "+children", "client CPU/push")
    rows: list[tuple[str, ...]] = [header]
    ceilings = {r.round: r.timed.rate for r in results if r.name == "ceiling"}
    ratios = []
    for r in results:
        ceiling = ceilings.get(r.round)
        ratio = r.timed.rate / ceiling if ceiling else math.nan
        if r.name == "bridge" and ceiling:
            ratios.append(ratio)
        traced_ok = max(1, r.traced.ok) if r.traced else 1
        ms = 1000 / max(1, r.timed.ok)
        rows.append((
            str(r.round),
            "ceiling (bare aiohttp + aiosqlite)" if r.name == "ceiling" else "fax-bridge serve",
            str(r.timed.ok), str(r.timed.failed), f"{r.timed.rate:.1f}",
            f"{1000 * percentile(r.timed.latencies, 50):.1f} ms",
            f"{1000 * percentile(r.timed.latencies, 99):.1f} ms",
            f"{ratio:.2f}x", f"{r.syncs.commits / traced_ok:.2f}" if r.syncs else "-",
            f"{r.syncs.total / traced_ok:.2f}" if r.syncs else "-",
            f"{r.cpu_main * ms:.2f} ms", f"{r.cpu_tree * ms:.2f} ms",
            f"{r.cpu_client * ms:.2f} ms"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 1 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    print()
    if ratios:
        middle = sorted(ratios)[len(ratios) // 2]
        print(f"Target: webhook >= 1.0x the ceiling at {args.concurrency} connections: "
              f"ratio per round {', '.join(f'{x:.2f}x' for x in ratios)}; median "
              f"{middle:.2f}x, {'met' if middle >= 1.0 else 'NOT met'} (reported, not asserted)")
    for r in results:
        print(f"round {r.round}, {r.name}: stored {r.stored} rows for {r.expected} distinct "
              "faxes pushed")
        if r.syncs and r.traced:
            s = r.syncs
            print(f"  traced {r.traced.ok} pushes: WAL syncs {s.wal}, database syncs "
                  f"{s.database} (checkpoints), so commits {s.commits}; fax image "
                  f"file+directory syncs {s.fax_files}, other syncs {s.other}"
                  + (f" ({', '.join(f'{p} {n}' for p, n in s.examples.most_common(4))})"
                     if s.other else ""))
        for note in r.notes:
            print(f"  {note}")
    print()
    print("CPU/push: CPU time (user + system) in the timed phase per push answered 200, of the "
          "server process (all threads), of it with its child processes (the bridge's "
          "sandboxed conversions), and of the load generator.")
    print(f"Machine: {machine()}")
    print(f"Command: {shlex.join(['.venv/bin/python', 'bench/webhook.py', *sys.argv[1:]])}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=1000,
                        help="timed pushes per server and round")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3,
                        help="ceiling then bridge, this many times (strace in the first)")
    parser.add_argument("--traced-pushes", type=int, default=300)
    parser.add_argument("--tiff-bytes", type=int, default=100_000)
    parser.add_argument("--drain-timeout", type=float, default=900.0)
    parser.add_argument("--only", choices=("ceiling", "bridge"),
                        help="one server (no ratio against the other)")
    args = parser.parse_args()
    tiff = fax_tiff(args.tiff_bytes)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        for round_ in range(1, args.rounds + 1):
            for name, run in (("ceiling", run_ceiling), ("bridge", run_bridge)):
                if args.only not in (None, name):
                    continue
                workdir = Path(tmp) / f"{name}-{round_}"
                workdir.mkdir()
                results.append(await run(round_, tiff, args, workdir))
    report(results, args, tiff)
    failed = sum(r.failed for r in results)
    missing = [f"{r.name} {r.round}" for r in results if r.stored != r.expected]
    if failed or missing:
        print(f"RUN FAILED: {failed} answers other than 200; rows missing in {missing or 'none'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
