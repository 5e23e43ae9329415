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
     not refused: `numbers.max_faxes_per_sender_per_hour`, `max_faxes_per_hour`,
     `max_pages_per_sender_per_day` and `max_pages_per_day` (caps by design),
     `smtp.max_connections_per_client` (20 sessions that reconnect for every mail briefly hold
     21 connections while the server still closes the last one), and `faxmax.timeout` (so
     held sends do not time out and retry);
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
    .venv/bin/python bench/intake.py --sizes 5KB --office-backlog 30 --postfix-sessions none

`--office-backlog N`: the bridge (not the ceiling) runs with `documents.office = "auto"` and is
sent N mails of a 10-page DOCX before each timed run; the timed mails come in while LibreOffice
converts them, and how many it converted meanwhile is printed (none is a failure of the run).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ceiling_postfix
from bench.ceiling_postfix import smtp_source, smtp_source_file
from bench.common import machine, tree_cpu
from bench.intake_mails import RCPT, SENDER, MailTemplate, templates
from bench.intake_report import BRIDGE_BY_SMTP_SOURCE, Run, ms, report
from bench.intake_syncs import count_syncs
from bridge.simulators import FaxMaxSimulator
from tests.loadgen import MailResult, send_on_one_connection
from tests.process import ServeProcess
from tests.settings import settings_for

HERE = Path(__file__).resolve().parent
CEILING = HERE / "ceiling_smtp.py"
LOAD_IS_NOT_REFUSED: dict[str, dict[str, Any]] = {
    "numbers": {"max_faxes_per_sender_per_hour": 10_000_000,
                "max_faxes_per_hour": 10_000_000,
                "max_pages_per_sender_per_day": 10_000_000,
                "max_pages_per_day": 10_000_000},
    "smtp": {"max_connections_per_client": 100},
    "faxmax": {"timeout": 3600.0},
}


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

    def __init__(self, workdir: Path, office: bool = False) -> None:
        self.workdir = workdir
        self.office = office  # documents.office = "auto": LibreOffice starts with the service
        self.simulator = FaxMaxSimulator(token="sim-token")
        self.process: ServeProcess | None = None

    async def start(self) -> None:
        await self.simulator.start()
        self.simulator.pause()
        documents = {"documents": {"office": "auto" if self.office else "off"}}
        settings = settings_for(self.workdir, self.simulator.url, None, **LOAD_IS_NOT_REFUSED,
                                **documents)
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

    def office_conversions(self) -> int:
        """Documents LibreOffice has converted so far, by the service's log."""
        assert self.process is not None
        return self.process.log().count("converted by LibreOffice")

    async def queue_office_mails(self, count: int) -> int:
        """`count` mails of a 10-page DOCX (bench/office_documents.py's), for the converter
        to work on in the background while the timed mails come in; once LibreOffice has
        converted the first, so the backlog is under way. Returns how many were accepted."""
        from bench.office_documents import make_docx
        from tests.mails import fax_mail
        from tests.smtp_client import smtp_send

        docx = ("offer.docx", "application/vnd.openxmlformats-officedocument."
                "wordprocessingml.document", make_docx())
        accepted = 0
        for n in range(count):
            result = await smtp_send(self.port, fax_mail(docx, message_id=f"<office-{n}@b>"))
            accepted += bool(result.data and result.data[0] == 250)
        deadline = time.monotonic() + 60
        while not self.office_conversions():
            if time.monotonic() > deadline:
                raise RuntimeError("LibreOffice converted nothing within 60 s")
            await asyncio.sleep(0.05)
        return accepted

    async def stop(self) -> None:
        await self.simulator.stop()  # drops the held sends, so the service stops at once
        if self.process is not None:
            await self.process.stop()


# --- one run ---------------------------------------------------------------------------------


def mails_per_session(args: argparse.Namespace, sessions: int) -> int:
    return int(args.mails) if args.mails else max(25, 200 // sessions)


async def measure(kind: type[Ceiling | Bridge], template: MailTemplate, sessions: int,
                  args: argparse.Namespace, round_: int) -> Run:
    run = Run(template.name, sessions, kind.name, os.getloadavg()[0], round_)
    with tempfile.TemporaryDirectory(prefix=f"intake-{kind.name}-", dir=args.dir) as name:
        tmp = Path(name)
        backlog = args.office_backlog if kind is Bridge else 0
        server = Bridge(tmp / "server", office=bool(backlog)) if kind is Bridge else kind(
            tmp / "server")
        (tmp / "server").mkdir()
        await server.start()
        try:
            sent = 0
            if args.warmup:
                replies, _, _ = await load(server.port, template, 1, args.warmup,
                                           args.per_connection, "warmup")
                run.failures += [r for r in replies if r.code != 250]
                sent += len(replies)
            converted_before = 0
            if isinstance(server, Bridge) and backlog:
                sent += await server.queue_office_mails(backlog)
                converted_before = server.office_conversions()
            cpu = tree_cpu(server.pid)
            replies, run.elapsed, counters = await load(
                server.port, template, sessions, mails_per_session(args, sessions),
                args.per_connection, "timed")
            run.cpu = tree_cpu(server.pid) - cpu
            if isinstance(server, Bridge) and backlog:
                converted = server.office_conversions() - converted_before
                print(f"    with {backlog} Office mails queued first: LibreOffice converted "
                      f"{converted} of them during the timed run")
                if converted == 0:
                    run.problems.append("no Office document was converted during the run")
            sent += len(replies)
            run.mails = len(replies)
            run.ok = sum(1 for r in replies if r.code == 250)
            run.latencies = [r.latency for r in replies if r.code == 250 and r.latency]
            run.late_dot = counters.late_dot
            run.failures += [r for r in replies if r.code != 250]
            if round_ == 1 and args.commit_mails and not args.no_strace:
                async def send() -> list[MailResult]:
                    replies, _, _ = await load(server.port, template, sessions,
                                               max(1, args.commit_mails // sessions),
                                               args.per_connection, "strace")
                    return replies

                run.syncs, replies = await count_syncs(server, send, tmp)
                run.syncs.mails = sum(1 for r in replies if r.code == 250)
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
    parser.add_argument("--office-backlog", type=int, default=0, metavar="N",
                        help="the bridge runs with LibreOffice and gets N mails of a 10-page "
                        "DOCX before each timed run, converted while the timed mails come in")
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
