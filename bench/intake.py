"""SMTP intake of `fax-bridge serve` against two ceilings, in one run: messages/s, the time from
the final `.` to `250`, and durable syncs (commits) per acknowledged mail.

What is measured, for each mail size x number of concurrent sessions:

- sizes: ~5 KB (text plus a small real one-page PDF, a bilevel CCITT G4 page) and ~300 KB (a
  real one-page PDF of ~220 KB, a greyscale JPEG "scan", base64 in the mail). Both PDFs are
  built with Pillow and open with pypdf; every mail has its own Message-ID and Subject
  (`bench/intake_mails.py`).
- sessions: 1 and 20 (`--sessions`); each session sends `--mails` mails one after another (by
  default 200 with one session, so that p99 rests on more than the slowest mail, and 25 per
  session with 20, so that the whole script takes a few minutes), a new SMTP connection per
  mail as `smtp-source` does by default (`--per-connection` to reuse one).
- servers, one after the other, each on a fresh database in a fresh directory, in `--rounds`
  rounds (3) of ceiling then bridge (then Postfix, then the bridge by smtp-source), so that
  the machine's drift (its speed changes by half within minutes) falls on all; the strace pass
  runs in the first round:
  1. the ceiling, `bench/ceiling_smtp.py` as its own process: a bare aiosmtpd server that
     parses each mail with `email` `policy.default`, decodes its attachments and commits it to
     SQLite (aiosqlite, WAL, `synchronous=FULL`), one commit per mail, then answers `250`;
  2. the real `fax-bridge serve` (`tests.process.ServeProcess`, test settings of
     `tests.settings.settings_for`: loopback senders trusted) with the FaxMAX simulator paused,
     so nothing is sent and the queue only grows. Settings raised so that the load itself is
     not refused: `numbers.max_faxes_per_sender_per_hour`, `max_pages_per_sender_per_day` and
     `max_pages_per_day` (caps by design), `smtp.max_connections_per_client` (20 sessions that
     reconnect for every mail briefly hold 21 connections while the server still closes the
     last one), and `faxmax.timeout` (so held sends do not time out and retry);
  3. at the session counts of `--postfix-sessions` (20), two more in every round. The practical
     ceiling, `bench/ceiling_postfix.py`: a fresh private Postfix (`tests/postfix.py`'s
     instance) whose smtpd puts every mail on hold (`smtpd_data_restrictions =
     check_client_access static:HOLD`: cleanup fsyncs the queue file in hold/ before smtpd
     answers `250`, and nothing is delivered), driven by `smtp-source -s SESSIONS -m MAILS -F
     FILE`; then a fresh bridge driven by smtp-source in the same way (`bridge/smtp-source`).
     The ratio to Postfix is the ratio of these two: smtp-source against smtp-source, the same
     mail (one file, so one Message-ID for all), sessions and number of mails, a new connection
     per mail (with `--per-connection` above 1 both get `-d`, one connection per session, the
     nearest smtp-source has). Not the run of 2, whose Python client shares the two cores with
     the server and may cost the bridge more than smtp-source costs Postfix. In every round,
     not once per size: a Postfix run takes seconds (start, 500 mails at several hundred a
     second, stop) and the machine drifts within minutes, so each round's ratio is taken
     between runs seconds apart and judged, like the others, on the median over rounds. No
     latencies (smtp-source times nothing); Postfix's CPU is read from schedstat (some forty
     daemons of a few ms each); Postfix's strace pass (first round, `--commit-mails` mails)
     checks that each `250` came after the fsync of its queue file. No target: the ratio is
     reported beside the others. Without Postfix, smtp-source or root, one line says so and
     everything else runs.

The client is the load tests' socket-level SMTP client, `tests.loadgen.send_on_one_connection`.
For each mail it hands everything but the terminating `.` line to the kernel (the transport's write
buffer limit is 0, so `drain()` returns only when the buffer is empty), then writes `.\\r\\n`
and starts the clock at once; the clock stops when the reply line has arrived. So the latency
is "final `.` -> reply", not the upload. msgs/s is mails answered `250` divided by the time
from the first connection to the last reply (connection setup included, as with smtp-source).
`--warmup` mails go first on one session and are not counted (the bridge's sandbox forkserver
starts on the first mail). Any reply other than `250` (or a lost connection) is a failure of
the run, not a data point: it is counted, printed, and the script exits with status 1; so is
a store that does not hold exactly one row per `250`, and an ERROR line in the bridge's log.
Also printed: the CPU time the server's process tree used per mail in the timed run (from
/proc; the sandbox children the bridge's forkserver reaped, and its converter, included). On a
shared machine this, rather than the wall clock, says how much work each server does per mail.

Commits per acknowledged mail: after the timed run, `strace -f -ttt -y -e
trace=fsync,fdatasync` is attached to the server's whole process tree (the bridge's sandbox
forkserver and the children it forks included) while `--commit-mails` more mails go through
with the same number of sessions; strace slows every system call, which is why this is a
separate pass, never timed. Only syncs that begin between two readings of the store (just
before the first mail, just after the last reply) are counted, by their strace timestamps.
The syncs are sorted by the file they name: the SQLite WAL, the SQLite database (written only
by a checkpoint), other files, directories. In WAL mode with `synchronous=FULL` SQLite syncs the
WAL once per commit, plus once on a checkpoint and once on the first commit after the WAL is
restarted; the database file is synced once per checkpoint. So SQLite commits are estimated as
WAL syncs - 2 x database syncs (the ceiling, which does exactly one commit per mail, checks the
estimate). For the bridge, its workers' durable commits during the pass, counted from the
store (one per job the sender claimed; a finished conversion commits without a sync of its
own), are taken off to give intake commits per mail; other periodic transactions that change
nothing write no WAL frame.

The machine (cores, CPU model, Python), the command and the load average before each run are
printed: the numbers only mean something against the ceiling of the same round. The targets
(bridge at 20 sessions >= 0.8x the ceiling's msgs/s; at one session p50 and p99 <= 1.5x the
ceiling's; at most one commit per acknowledged mail) are judged on the median of the rounds'
ratios, each round's printed beside it, and reported, not asserted; so is the bridge's ratio to
Postfix (no target).

    .venv/bin/python bench/intake.py
    .venv/bin/python bench/intake.py --mails 50 --sessions 1,20 --commit-mails 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ceiling_postfix
from bench.ceiling_postfix import HoldTrace, smtp_source, smtp_source_file
from bench.common import descendants, machine, percentile, tree_cpu
from bench.intake_mails import RCPT, SENDER, MailTemplate, templates
from bridge.simulators import FaxMaxSimulator
from tests.loadgen import MailResult, send_on_one_connection
from tests.process import ServeProcess
from tests.settings import settings_for

HERE = Path(__file__).resolve().parent
CEILING = HERE / "ceiling_smtp.py"
BRIDGE_BY_SMTP_SOURCE = "bridge/smtp-source"  # the bridge driven as the Postfix ceiling is
LOAD_IS_NOT_REFUSED: dict[str, dict[str, Any]] = {
    "numbers": {"max_faxes_per_sender_per_hour": 10_000_000,
                "max_pages_per_sender_per_day": 10_000_000,
                "max_pages_per_day": 10_000_000},
    "smtp": {"max_connections_per_client": 100},
    "faxmax": {"timeout": 3600.0},
}
SYNC_CALL = re.compile(r"^(fsync|fdatasync)\((\d+)<([^>]*)>")
RESUMED = re.compile(r"^<\.\.\. (fsync|fdatasync) resumed>")
RESULT = re.compile(r"\)\s*=\s*(-?\d+)")


# --- the SMTP client ---------------------------------------------------------------------------


@dataclass
class Counters:
    late_dot: int = 0  # final `.` that did not fit the socket buffer at once (clock started late)

    def count_late_dot(self) -> None:
        self.late_dot += 1


async def session(port: int, template: MailTemplate, tags: Sequence[str], per_connection: int,
                  counters: Counters) -> list[MailResult]:
    replies: list[MailResult] = []
    for start in range(0, len(tags), per_connection):
        replies += await send_on_one_connection(
            port, [template.data(tag) for tag in tags[start:start + per_connection]],
            mail_from=SENDER, rcpt=RCPT, late_dot=counters.count_late_dot)
    return replies


async def load(port: int, template: MailTemplate, sessions: int, mails: int,
               per_connection: int, label: str) -> tuple[list[MailResult], float, Counters]:
    counters = Counters()
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(
        session(port, template, [f"{label}-{s}-{n}" for n in range(mails)], per_connection,
                counters)
        for s in range(sessions)))
    return [r for o in outcomes for r in o], time.perf_counter() - started, counters


# --- servers -----------------------------------------------------------------------------------


class Server:
    """A server under test: its port, its process tree's root, its store."""

    name: str
    port: int
    pid: int
    db_path: Path
    data_dir: Path

    async def stop(self) -> None:
        raise NotImplementedError

    def count(self, sql: str) -> int:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()

    def worker_commits(self) -> int:
        """Commits the server makes after `250` for work of its own (none for the ceiling)."""
        return 0


class Ceiling(Server):
    name = "ceiling"

    def __init__(self, workdir: Path) -> None:
        self.data_dir = workdir
        self.db_path = workdir / "ceiling.sqlite3"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CEILING), "--port", "0", "--db", str(self.db_path),
            stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode()
        found = re.search(r"listening on [^:]+:(\d+)", line)
        if not found:
            raise SystemExit(f"the ceiling server did not start: {line!r}")
        self.port = int(found[1])
        self.pid = self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.communicate(), 30)


class Bridge(Server):
    name = "bridge"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.simulator = FaxMaxSimulator(token="sim-token")
        self.process: ServeProcess | None = None

    async def start(self) -> None:
        await self.simulator.start()
        self.simulator.pause()
        settings = settings_for(self.workdir, self.simulator.url, None, **LOAD_IS_NOT_REFUSED)
        settings = replace(settings, shutdown_timeout=5)
        self.process = ServeProcess(settings, self.workdir)
        await self.process.start()
        assert self.process.proc is not None
        self.port = self.process.smtp_port
        self.pid = self.process.proc.pid
        self.db_path = self.process.db_path
        self.data_dir = settings.data_path

    def worker_commits(self) -> int:
        """One synced commit per job the sender claimed (the claim is committed before FaxMAX
        is called, which the paused simulator then holds). A finished conversion commits
        with `synchronous=NORMAL`, syncing nothing: it is durable with the next commit."""
        return self.count("SELECT COUNT(*) FROM jobs WHERE state != 'queued'")

    def errors(self) -> list[str]:
        assert self.process is not None
        return [line for line in self.process.log().splitlines()
                if " ERROR " in line or "Traceback" in line]

    async def stop(self) -> None:
        await self.simulator.stop()  # drops the held sends, so the service stops at once
        if self.process is not None:
            await self.process.stop()


# --- commits, counted with strace ------------------------------------------------------------


@dataclass
class Syncs:
    mails: int = 0
    wal: int = 0
    db: int = 0
    files: int = 0
    dirs: int = 0
    failed: int = 0
    worker_commits: int = 0
    by_place: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.wal + self.db + self.files + self.dirs

    @property
    def commits(self) -> int:
        """SQLite commits: one WAL sync each; a checkpoint adds one WAL sync, the first commit
        after it one more (the new WAL header), and one sync of the database file."""
        return self.wal - 2 * self.db

    def per_mail(self, n: int) -> float:
        return n / self.mails if self.mails else math.nan


def classify(trace: str, server: Server, since: float, until: float) -> Syncs:
    """Sort the syncs of an `strace -f -ttt -y -o` file that began between `since` and `until`
    (epoch seconds) by the file they name. A call that another thread interrupted in the output
    is split in two lines (`fsync(5</x> <unfinished ...>`, then `<... fsync resumed>) = 0`); it
    is counted once, at the time of its first line, with the result of its second."""
    syncs = Syncs()
    wal, db = f"{server.db_path}-wal", str(server.db_path)
    calls: list[tuple[str, int]] = []  # (path, result)
    pending: dict[str, tuple[float, str]] = {}  # pid -> when and on which path it began
    for line in trace.splitlines():
        pid, stamp, rest = ([*line.split(None, 2), "", ""])[:3]
        try:
            when = float(stamp)
        except ValueError:
            continue
        if found := SYNC_CALL.search(rest):
            if "<unfinished" in rest:
                pending[pid] = (when, found[3])
            elif (done := RESULT.search(rest)) and since <= when <= until:
                calls.append((found[3], int(done[1])))
        elif RESUMED.search(rest) and pid in pending and (done := RESULT.search(rest)):
            began, path = pending.pop(pid)
            if since <= began <= until:
                calls.append((path, int(done[1])))
    for path, code in calls:
        if code != 0:
            syncs.failed += 1
        elif path == wal:
            syncs.wal += 1
        elif path == db:
            syncs.db += 1
        else:
            place = os.path.relpath(path, server.data_dir).split(os.sep)[0]
            if os.path.isdir(path):
                syncs.dirs += 1
                syncs.by_place[f"dir {place}"] += 1
            else:
                syncs.files += 1
                syncs.by_place[f"file in {place}"] += 1
    syncs.failed += sum(since <= when <= until for when, _ in pending.values())  # never resumed
    return syncs


async def count_syncs(server: Server, template: MailTemplate, sessions: int, mails: int,
                      per_connection: int, label: str, tmp: Path) -> tuple[Syncs, list[MailResult]]:
    out = tmp / f"strace-{server.name}.txt"
    args = ["strace", "-f", "-ttt", "-y", "-e", "trace=fsync,fdatasync", "-o", str(out)]
    pids = [server.pid, *(p for p, _ in descendants(server.pid))]
    for pid in pids:
        args += ["-p", str(pid)]
    threads = sum(len(os.listdir(f"/proc/{pid}/task")) for pid in pids)
    strace = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
    assert strace.stderr is not None
    attached = 0
    # "Process N attached" for every thread of every process (threads made later are followed
    # by -f); a thread that ended meanwhile never reports, hence the quiet-period fallback.
    while attached < threads:
        try:
            line = await asyncio.wait_for(strace.stderr.readline(), 2 if attached else 30)
        except TimeoutError:
            break
        if not line:
            raise SystemExit("strace exited before attaching; is ptrace allowed here?")
        attached += b"attached" in line
    # The window: from just before the first count of the workers' commits to just after the
    # second; only syncs that began inside it are counted (the workers go on meanwhile).
    since = time.time()
    before = server.worker_commits()
    replies, _, _ = await load(server.port, template, sessions, max(1, mails // sessions),
                               per_connection, label)
    after = server.worker_commits()
    until = time.time()
    strace.send_signal(signal.SIGINT)  # detaches from every traced process
    await asyncio.wait_for(strace.communicate(), 30)
    syncs = classify(out.read_text(errors="replace"), server, since, until)
    syncs.mails = sum(1 for r in replies if r.code == 250)
    syncs.worker_commits = after - before
    return syncs, replies


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    size: str
    sessions: int
    server: str
    load1: float
    round: int = 1
    mails: int = 0
    ok: int = 0
    elapsed: float = math.nan
    latencies: list[float] = field(default_factory=list)
    late_dot: int = 0
    cpu: float = math.nan  # CPU seconds of the server's process tree during the timed run
    stored: int = 0
    expected_stored: int = 0
    syncs: Syncs | None = None
    hold: HoldTrace | None = None  # Postfix's strace pass
    failures: list[MailResult] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # of the smtp-source runs and Postfix

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else math.nan

    @property
    def cpu_per_mail(self) -> float:
        return 1000 * self.cpu / self.ok if self.ok else math.nan

    @property
    def p50(self) -> float:
        return 1000 * percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return 1000 * percentile(self.latencies, 99)


def mails_per_session(args: argparse.Namespace, sessions: int) -> int:
    return int(args.mails) if args.mails else max(25, 200 // sessions)


async def measure(kind: type[Ceiling | Bridge], template: MailTemplate, sessions: int,
                  args: argparse.Namespace, round_: int) -> Run:
    run = Run(template.name, sessions, kind.name, os.getloadavg()[0], round_)
    with tempfile.TemporaryDirectory(prefix=f"intake-{kind.name}-", dir=args.dir) as name:
        tmp = Path(name)
        server = kind(tmp / "server")
        (tmp / "server").mkdir()
        await server.start()
        try:
            sent = 0
            if args.warmup:
                replies, _, _ = await load(server.port, template, 1, args.warmup,
                                           args.per_connection, "warmup")
                run.failures += [r for r in replies if r.code != 250]
                sent += len(replies)
            cpu = tree_cpu(server.pid)
            replies, run.elapsed, counters = await load(
                server.port, template, sessions, mails_per_session(args, sessions),
                args.per_connection, "timed")
            run.cpu = tree_cpu(server.pid) - cpu
            sent += len(replies)
            run.mails = len(replies)
            run.ok = sum(1 for r in replies if r.code == 250)
            run.latencies = [r.latency for r in replies if r.code == 250 and r.latency]
            run.late_dot = counters.late_dot
            run.failures += [r for r in replies if r.code != 250]
            if round_ == 1 and args.commit_mails and not args.no_strace:
                run.syncs, replies = await count_syncs(server, template, sessions,
                                                       args.commit_mails, args.per_connection,
                                                       "strace", tmp)
                sent += len(replies)
                run.failures += [r for r in replies if r.code != 250]
            run.expected_stored = sent - len(run.failures)
            run.stored = server.count("SELECT COUNT(*) FROM messages")
            if isinstance(server, Bridge):
                run.log_errors = server.errors()
        finally:
            await server.stop()
    return run


async def measure_bridge_by_smtp_source(template: MailTemplate, sessions: int,
                                        args: argparse.Namespace, round_: int) -> Run:
    """The bridge as the Postfix ceiling is measured: warm-up and timed run by smtp-source, the
    same mail for all (smtp-source sends one file), no latencies, no strace pass."""
    run = Run(template.name, sessions, BRIDGE_BY_SMTP_SOURCE, os.getloadavg()[0], round_)
    with tempfile.TemporaryDirectory(prefix="intake-bridge-smtp-source-", dir=args.dir) as name:
        tmp = Path(name)
        message = smtp_source_file(template.data(f"smtp-source-{round_}"), tmp / "mail.eml")
        server = Bridge(tmp / "server")
        (tmp / "server").mkdir()
        await server.start()
        try:
            reuse = args.per_connection > 1
            warm = await smtp_source(server.port, message, sessions=sessions,
                                     mails=max(args.warmup, sessions), reuse=reuse)
            cpu = tree_cpu(server.pid)
            timed = await smtp_source(server.port, message, sessions=sessions,
                                      mails=sessions * mails_per_session(args, sessions),
                                      reuse=reuse)
            run.cpu = tree_cpu(server.pid) - cpu
            run.mails, run.elapsed = timed.mails, timed.elapsed
            run.ok = timed.mails if timed.returncode == 0 else 0
            run.problems += [f"smtp-source exited {done.returncode}: "
                             f"{done.output.strip()[-300:]!r}"
                             for done in (warm, timed) if done.returncode != 0]
            run.expected_stored = warm.mails + timed.mails
            run.stored = server.count("SELECT COUNT(*) FROM messages")
            run.log_errors = server.errors()
        finally:
            await server.stop()
    return run


async def measure_postfix(template: MailTemplate, sessions: int, args: argparse.Namespace,
                          round_: int) -> Run:
    """`bench/ceiling_postfix.py` on a fresh instance; its strace pass in the first round."""
    traced = args.commit_mails if round_ == 1 and not args.no_strace else 0
    r = await ceiling_postfix.measure(
        template.name, template.data(f"postfix-{round_}"), sessions=sessions,
        mails=sessions * mails_per_session(args, sessions), warmup=args.warmup,
        reuse=args.per_connection > 1, trace_mails=traced,
        parent=Path(args.dir) if args.dir else None)
    return Run(template.name, sessions, "postfix", r.load1, round_, mails=r.mails, ok=r.ok,
               elapsed=r.elapsed, cpu=r.cpu, stored=r.queues["hold"],
               expected_stored=r.expected_held, hold=r.trace, problems=r.problems)


# --- report ----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def syncs_text(s: Syncs | None, hold: HoldTrace | None = None) -> tuple[str, str, str]:
    if hold is not None:
        where = " ".join(f"{k} {hold.per_mail(n):.2f}" for k, n in sorted(hold.syncs.items()))
        return f"{hold.per_mail(hold.syncs.total()):.2f}", where, "-"
    if s is None:
        return "-", "-", "-"
    parts = f"wal {s.per_mail(s.wal):.2f} db {s.per_mail(s.db):.2f}"
    if s.files or s.dirs:
        parts += f" files {s.per_mail(s.files):.2f} dirs {s.per_mail(s.dirs):.2f}"
    intake = s.commits - s.worker_commits
    return (f"{s.per_mail(s.total):.2f}", parts, f"{s.per_mail(intake):.2f}")


def report(runs: list[Run]) -> bool:
    head = ("size", "sessions", "round", "server", "mails", "msgs/s", "p50 ms", "p99 ms",
            "cpu ms/mail", "load1",
            "x msgs/s", "x p50", "x p99", "x postfix", "syncs/mail", "of which", "commits/mail")
    rows = [head]
    ceilings = {(r.size, r.sessions, r.round): r for r in runs if r.server == "ceiling"}
    postfixes = {(r.size, r.sessions, r.round): r for r in runs if r.server == "postfix"}
    for r in runs:
        c = ceilings.get((r.size, r.sessions, r.round))
        pf = postfixes.get((r.size, r.sessions, r.round))
        is_bridge = r.server == "bridge" and c is not None
        total, parts, commits = syncs_text(r.syncs, r.hold)
        rows.append((r.size, str(r.sessions), str(r.round), r.server, str(r.ok), f"{r.rate:.1f}",
                     ms(r.p50), ms(r.p99), f"{r.cpu_per_mail:.1f}", f"{r.load1:.2f}",
                     ratio(r.rate, c.rate) if is_bridge and c else "",
                     ratio(r.p50, c.p50) if is_bridge and c else "",
                     ratio(r.p99, c.p99) if is_bridge and c else "",
                     ratio(r.rate, pf.rate) if r.server == BRIDGE_BY_SMTP_SOURCE and pf else "",
                     total, parts, commits))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j in (0, 3, 15) else cell.rjust(w)
                        for j, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("x = bridge / ceiling of the same size, sessions and round. cpu ms/mail: CPU time of the "
          "server's process tree in the timed run (sandbox children and, for the bridge, the "
          "converter included) per mail; load1: the 1-minute load average before the run. "
          "syncs/mail: fsync + fdatasync of the whole process tree per mail acknowledged in the "
          "strace pass; commits/mail: SQLite commits (WAL syncs - 2 x db syncs) less the "
          "workers' (sends claimed), per mail. postfix: bench/ceiling_postfix.py, smtpd holding "
          "every mail, driven by smtp-source (one file for every mail; its cpu from schedstat); "
          f"{BRIDGE_BY_SMTP_SOURCE}: the bridge driven by smtp-source alike; x postfix = "
          f"{BRIDGE_BY_SMTP_SOURCE} / postfix msgs/s of the same size, sessions and round.")
    for r in runs:
        if r.hold is not None:
            print(f"  {r.size} x{r.sessions} postfix strace pass: {r.hold.text()}")
    for r in runs:
        if r.syncs and r.syncs.by_place:
            where = ", ".join(f"{k} {r.syncs.per_mail(n):.2f}"
                              for k, n in sorted(r.syncs.by_place.items()))
            print(f"  {r.size} x{r.sessions} {r.server}: other syncs per mail: {where}; "
                  f"worker commits in the pass (sends claimed): "
                  f"{r.syncs.worker_commits} for "
                  f"{r.syncs.mails} mails")
    print("\ntargets (reported, not asserted), on the median of the rounds' ratios:")
    pairs: dict[tuple[str, int], list[tuple[Run, Run]]] = {}
    for r in runs:
        c = ceilings.get((r.size, r.sessions, r.round))
        if r.server == "bridge" and c is not None:
            pairs.setdefault((r.size, r.sessions), []).append((r, c))
    for (size, sessions), rounds in pairs.items():
        checks = []
        if sessions >= 20:
            checks.append(("msgs/s", [r.rate / c.rate for r, c in rounds], ">=", 0.8))
        if sessions == 1:
            checks.append(("p50", [r.p50 / c.p50 for r, c in rounds], "<=", 1.5))
            checks.append(("p99", [r.p99 / c.p99 for r, c in rounds], "<=", 1.5))
        for what, ratios, sense, target in checks:
            x = statistics.median(ratios)
            met = x >= target if sense == ">=" else x <= target
            each = ", ".join(f"{v:.2f}x" for v in ratios)
            print(f"  {size} x{sessions}: {what} {x:.2f}x the ceiling (target {sense} "
                  f"{target}x): {'met' if met else 'MISSED'}; rounds {each}")
    against_postfix: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        pf = postfixes.get((r.size, r.sessions, r.round))
        if r.server == BRIDGE_BY_SMTP_SOURCE and pf is not None and pf.rate and r.rate:
            against_postfix.setdefault((r.size, r.sessions), []).append(r.rate / pf.rate)
    for (size, sessions), ratios in against_postfix.items():
        print(f"  {size} x{sessions}: msgs/s {statistics.median(ratios):.2f}x Postfix's durable "
              f"intake (no target; both driven by smtp-source); rounds "
              f"{', '.join(f'{v:.2f}x' for v in ratios)}")
    for r in runs:
        c = ceilings.get((r.size, r.sessions, r.round))
        if r.server != "bridge" or c is None:
            continue
        if r.syncs is not None:
            intake = r.syncs.per_mail(r.syncs.commits - r.syncs.worker_commits)
            print(f"  {r.size} x{r.sessions}: intake commits per mail {intake:.2f} "
                  f"(target <= 1): {'met' if intake <= 1.05 else 'MISSED'}; "
                  f"all durable syncs per mail {r.syncs.per_mail(r.syncs.total):.2f} "
                  f"(ceiling {c.syncs.per_mail(c.syncs.total) if c.syncs else math.nan:.2f})")
    clean = True
    for r in runs:
        notes = []
        if r.failures:
            clean = False
            codes = Counter(f"{f.stage} {f.code}" for f in r.failures)
            notes.append(f"{len(r.failures)} mails not answered 250: {dict(codes)}; e.g. "
                         f"{r.failures[0].text!r}")
        if r.stored != r.expected_stored:
            clean = False
            notes.append(f"stored {r.stored} for {r.expected_stored} x 250")
        if r.log_errors:
            clean = False
            notes.append(f"{len(r.log_errors)} ERROR lines in the log, e.g. {r.log_errors[0]}")
        if r.problems:
            clean = False
            notes += r.problems
        if r.late_dot:
            notes.append(f"{r.late_dot} final '.' waited for socket space (clock started after)")
        for note in notes:
            print(f"  {r.size} x{r.sessions} round {r.round} {r.server}: {note}")
    if not clean:
        print("\nRUN FAILED: a refusal or a lost mail is a failure of the run, not a data point")
    return clean


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=None,
                        help="timed mails per session (default: 200 with one session, else "
                        "max(25, 200 / sessions))")
    parser.add_argument("--sessions", default="1,20", help="comma-separated session counts")
    parser.add_argument("--sizes", default="5KB,300KB", help="5KB, 300KB or both")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="mails per SMTP connection (smtp-source's default: 1)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed mails before each run")
    parser.add_argument("--commit-mails", type=int, default=100,
                        help="mails sent in the strace pass, spread over the sessions")
    parser.add_argument("--no-strace", action="store_true", help="skip the strace pass")
    parser.add_argument("--rounds", type=int, default=3,
                        help="ceiling then bridge (then Postfix and the bridge by smtp-source), "
                        "this many times for each size and number of "
                        "sessions (the strace pass in the first); the targets are judged on "
                        "the median of the rounds' ratios")
    parser.add_argument("--dir", default=None, help="where the servers' data goes "
                        "(default: the system's temporary directory)")
    parser.add_argument("--postfix-sessions", default="20",
                        help="comma-separated session counts (of --sessions) at which the "
                        "Postfix ceiling and the bridge driven by smtp-source run in each round; "
                        "'none' for neither")
    args = parser.parse_args()
    if not args.no_strace and shutil.which("strace") is None:
        parser.error("strace is not installed; use --no-strace")
    postfix_at = {int(n) for n in args.postfix_sessions.split(",") if n.strip().isdigit()}
    postfix_missing = ceiling_postfix.missing() if postfix_at else None
    mails = templates()
    print(f"machine: {machine()}")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    for name in args.sizes.split(","):
        t = mails[name]
        print(f"mail {name}: {t.size} bytes of DATA, PDF attachment {t.pdf_bytes} bytes")
    counts = ", ".join(f"{mails_per_session(args, int(n))} with {n} session(s)"
                       for n in args.sessions.split(","))
    print(f"timed mails per session: {counts}; {args.warmup} warm-up mails first, "
          f"{args.per_connection} per connection; strace pass: "
          f"{'none' if args.no_strace else f'{args.commit_mails} mails'}", flush=True)
    if postfix_missing is not None:
        print(f"Postfix ceiling not measured: {postfix_missing}")
        postfix_at = set()
    elif postfix_at:
        connections = ("-d: one connection per session" if args.per_connection > 1
                       else "a new connection per mail")
        print(f"Postfix ceiling at {sorted(postfix_at)} session(s): a fresh private Postfix "
              f"holding every mail, then the bridge again, both driven by smtp-source "
              f"({connections})")
    print(flush=True)
    runs = []
    for name in args.sizes.split(","):
        for sessions in (int(s) for s in args.sessions.split(",")):
            servers = [Ceiling.name, Bridge.name]
            if sessions in postfix_at:
                servers += ["postfix", BRIDGE_BY_SMTP_SOURCE]
            for round_, server in itertools.product(range(1, args.rounds + 1), servers):
                if server == "postfix":
                    run = await measure_postfix(mails[name], sessions, args, round_)
                elif server == BRIDGE_BY_SMTP_SOURCE:
                    run = await measure_bridge_by_smtp_source(mails[name], sessions, args, round_)
                else:
                    kind = Ceiling if server == Ceiling.name else Bridge
                    run = await measure(kind, mails[name], sessions, args, round_)
                print(f"  {name} x{sessions} round {round_} {run.server}: "
                      f"{run.ok}/{run.mails} x 250, {run.rate:.1f} msgs/s, "
                      f"p50 {ms(run.p50)} ms, p99 {ms(run.p99)} ms, "
                      f"load average before {run.load1:.2f}", flush=True)
                runs.append(run)
    print(f"\nmachine: {machine()}\n")
    return 0 if report(runs) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
