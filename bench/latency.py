"""End-to-end latency of the real `fax-bridge serve` process, one item at a time.

Three figures, each with p50/p99 (nearest rank; with 50 samples p99 is the largest) and the
plan's target, reported and never asserted:

1. `250` -> FaxMAX has the send request: a mail with a one-page PDF goes in by SMTP; from the
   moment the client reads `250` to the moment the FaxMAX simulator has read the whole send
   request (its `fax_file` included). In between: conversion in a sandboxed process, the
   sender's claim, the multipart upload. Target: p50 < 50 ms.
2. push `2xx` -> email at the relay: an `INCOMING_FAX` push carrying a 2-page G4 TIFF of about
   100 KB (the fax of `bench/webhook.py`); from the moment the client reads the push's 200 to
   the moment an SMTP relay sink has the whole email. In between: TIFF -> PDF in a sandboxed
   process, composing the email, the outbox commit, the SMTP hand-over. Target: p50 < 200 ms.
3. final `.` -> `250` with FaxMAX answering normally, then with FaxMAX holding every send call
   for 60 s (`Fault.stall(60)`, the bridge's `faxmax.timeout` raised to 120 s so it really
   waits; its 4 send slots stay busy). The mails are spaced `--stall-gap` seconds apart in
   both runs, so the stalled run spans more than 60 s and sees held calls end and new ones
   start. Target: the `250` latency does not move.

Every item is sent only after the previous one has gone all the way (figure 1: FaxMAX has it;
figure 2: the relay has it; figure 3: the mail is converted), so these are latencies, not
queueing under a flood. The service is a child process (`tests.process.ServeProcess`, test
settings of `tests.settings.settings_for`, sending caps lifted); the FaxMAX simulator (a
subclass that timestamps each send request), the relay sink and the clients run in this
process on one event loop, so every time is read from the same `time.perf_counter`. A fresh
service and database serve each figure. Any reply other than `250` or `200` fails the run.

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --mails 50 --pushes 50 --stall-gap 1.3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import email
import itertools
import json
import math
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiosmtpd.smtp import SMTP

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import loadavg, machine, percentile
from bench.webhook import fax_tiff
from bridge.simulators import Fault, FaxMaxSimulator
from tests.docfactory import make_pdf
from tests.loadgen import (
    FAX_RCPT,
    NO_SENDING_LIMITS,
    RECEIVING_NUMBER,
    ROUTED_TO,
    SENDER,
    dot_stuffed,
    send_on_one_connection,
)
from tests.mails import fax_mail
from tests.process import ServeProcess
from tests.settings import settings_for

STALL_SECONDS = 60.0
JOB_STATES = "SELECT state, COUNT(*) FROM jobs GROUP BY state"
EPOCH = time.time() - time.perf_counter()
"""Added to a `perf_counter` reading, gives the wall clock the service's log lines carry."""
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
PDF_READY = re.compile(r"bridge\.workers\.converter: message \d+: .* ready to fax")
CLAIMED = re.compile(r"bridge\.workers\.sender: job \d+: sending ")
FAX_QUEUED = re.compile(r"bridge\.workers\.inbox: fax \d+: .* queued for ")


def logged_at(log: str, pattern: re.Pattern[str]) -> list[float]:
    """When each service log line matching `pattern` was written, on the `perf_counter`
    scale (the log has millisecond resolution and local time)."""
    times = []
    for line in log.splitlines():
        if pattern.search(line) and (found := LOG_TIME.match(line)):
            moment = datetime.datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f")
            times.append(moment.timestamp() - EPOCH)
    return times


# --- timestamping stand-ins for FaxMAX and the relay -----------------------------------------


class TimedFaxMax(FaxMaxSimulator):
    """The FaxMAX simulator, noting when each send call arrived, was read and was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived: list[float] = []  # the handler started (headers in)
        self.read: list[float] = []  # the whole multipart body was read
        self.answered: list[tuple[float, float]] = []  # (arrived, answered) per finished call

    async def _handle_send(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        self.arrived.append(started)
        try:
            return await super()._handle_send(request)
        finally:
            self.answered.append((started, time.perf_counter()))

    def _evaluate(self, form: Any) -> Any:
        self.read.append(time.perf_counter())
        return super()._evaluate(form)

    async def wait_for_read(self, n: int, timeout: float) -> float:
        await self._wait_until(lambda: len(self.read) >= n, timeout,
                               lambda: f"{n} send requests read (have {len(self.read)})")
        return self.read[n - 1]


@dataclass
class TimedRelay:
    """An SMTP relay sink noting when each email was complete (the final `.` received)."""

    arrivals: list[tuple[float, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrivals.append((time.perf_counter(), bytes(envelope.content)))
        self.arrived.set()
        return "250 2.0.0 OK"

    async def wait_for(self, n: int, timeout: float) -> tuple[float, bytes]:
        async with asyncio.timeout(timeout):
            while len(self.arrivals) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.arrivals[n - 1]


@contextlib.asynccontextmanager
async def relay_sink() -> Any:
    relay = TimedRelay()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        await server.wait_closed()


# --- clients ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    code: int
    text: str
    dot_at: float  # the final `.` was written
    reply_at: float  # its reply was read


async def send_mail(port: int, mail: bytes) -> Sent:
    """One mail on a new connection, as a mail client sends it."""
    [result] = await send_on_one_connection(port, [dot_stuffed(mail)], mail_from=SENDER,
                                            rcpt=FAX_RCPT)
    if result.latency is None or result.replied_at is None:  # refused before the end of data
        now = time.perf_counter()
        return Sent(result.code, f"{result.stage}: {result.text}", now, now)
    return Sent(result.code, result.text, result.replied_at - result.latency,
                result.replied_at)


# Every mail goes to one number, and this simulator pushes no final status: with the line held
# until one comes (`faxmax.per_number_concurrency`, issue 21), the second fax would wait
# `line_hold`. The figure is the path's latency, not the line's, so each fax has its own.
ONE_LINE_UNHELD = {"per_number_concurrency": 10_000}


def mail_bytes(n: int, pdf: bytes) -> bytes:
    msg = fax_mail(("invoice.pdf", "application/pdf", pdf), to=FAX_RCPT, sender=SENDER,
                   subject=f"Invoice {n}", message_id=f"<latency-{n}@example.com>")
    return msg.as_bytes(policy=SMTP_POLICY)


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)

    def add_stages(self, points: Sequence[tuple[str, Sequence[float]]], first: int) -> None:
        """Split the figure at the named points in time (the first is where it starts; one
        value per item, warm-ups first); items before `first` are not counted."""
        for (_, earlier), (name, later) in itertools.pairwise(points):
            self.stages[name] = [b - a for a, b in zip(earlier, later, strict=False)][first:]

    def ms(self, q: float) -> float:
        return 1000 * percentile(self.seconds, q) if self.seconds else math.nan


async def faxmax_figure(args: argparse.Namespace, workdir: Path) -> tuple[Figure, Figure]:
    """Figure 1, and the 250 latencies of the same mails."""
    to_faxmax = Figure("250 -> FaxMAX has the send request (1-page PDF mail)")
    intake = Figure("final '.' -> 250 (the same mails)")
    simulator = TimedFaxMax(token="sim-token")
    await simulator.start()
    pdf = make_pdf(1)
    async with relay_sink() as relay:
        settings = settings_for(workdir, simulator.url, relay.port, numbers=NO_SENDING_LIMITS,
                                faxmax={"timeout": 120.0, **ONE_LINE_UNHELD})
        p = ServeProcess(settings, workdir)
        await p.start()
        to_faxmax.notes.append(f"load average at the start {loadavg()}")
        replies: list[float] = []
        try:
            for n in range(-args.warmup, args.mails):
                sent = await send_mail(p.smtp_port, mail_bytes(n, pdf))
                if sent.code != 250:
                    to_faxmax.failures.append(f"mail {n}: {sent.code} {sent.text}")
                    continue
                replies.append(sent.reply_at)
                read_at = await simulator.wait_for_read(len(simulator.read) + 1, 60)
                if n >= 0:
                    to_faxmax.seconds.append(read_at - sent.reply_at)
                    intake.seconds.append(sent.reply_at - sent.dot_at)
                await asyncio.sleep(args.gap)
            log = p.log()
            to_faxmax.add_stages([("250", replies),
                                  ("250 -> PDF ready (converter's log line)",
                                   logged_at(log, PDF_READY)),
                                  ("-> job claimed (sender's log line)", logged_at(log, CLAIMED)),
                                  ("-> FaxMAX has the request", simulator.read)],
                                 args.warmup)
            to_faxmax.notes.append(f"load average at the end {loadavg()}")
            to_faxmax.notes.append(
                f"FaxMAX send requests read {len(simulator.read)} for "
                f"{args.warmup + args.mails} mails; ERROR lines in the service log: "
                f"{p.log().count(' ERROR ')}")
        finally:
            await simulator.stop()
            await p.stop()
    return to_faxmax, intake


async def email_figure(args: argparse.Namespace, workdir: Path) -> tuple[Figure, Figure]:
    """Figure 2, and the push answer times of the same pushes."""
    tiff = fax_tiff()
    to_email = Figure(f"push 2xx -> email at the relay ({len(tiff) // 1000} KB 2-page TIFF)")
    answer = Figure("push sent -> 200 (the same pushes)")
    simulator = FaxMaxSimulator(token="sim-token")  # builds the events; nothing is sent
    await simulator.start()
    async with relay_sink() as relay, aiohttp.ClientSession() as client:
        settings = settings_for(workdir, simulator.url, relay.port,
                                routing={"default": (ROUTED_TO,)})
        p = ServeProcess(settings, workdir)
        await p.start()
        to_email.notes.append(f"load average at the start {loadavg()}")
        answers: list[float] = []
        try:
            for n in range(-args.warmup, args.pushes):
                event = simulator.incoming_event(tiff=tiff, cld=RECEIVING_NUMBER,
                                                 cli=f"903125550{n + 100:03d}",
                                                 fax_id=f"latency-{n}")
                body = json.dumps([event]).encode()
                started = time.perf_counter()
                async with client.post(p.push_url, data=body,
                                       headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    status = r.status
                answered = time.perf_counter()
                if status != 200:
                    to_email.failures.append(f"push {n}: {status}")
                    continue
                answers.append(answered)
                mailed_at, raw = await relay.wait_for(len(relay.arrivals) + 1, 60)
                problem = fax_email_problem(raw)
                if problem:
                    to_email.failures.append(f"push {n}: {problem}")
                if n >= 0:
                    to_email.seconds.append(mailed_at - answered)
                    answer.seconds.append(answered - started)
                await asyncio.sleep(args.gap)
            to_email.add_stages([("200", answers),
                                 ("200 -> PDF made, email in the outbox (inbox's log line)",
                                  logged_at(p.log(), FAX_QUEUED)),
                                 ("-> email at the relay", [t for t, _ in relay.arrivals])],
                                args.warmup)
            to_email.notes.append(f"load average at the end {loadavg()}")
            to_email.notes.append(
                f"emails at the relay {len(relay.arrivals)} for {args.warmup + args.pushes} "
                f"pushes, each to {ROUTED_TO} with the fax as a PDF; ERROR lines in the "
                f"service log: {p.log().count(' ERROR ')}")
        finally:
            await p.stop()
            await simulator.stop()
    return to_email, answer


def fax_email_problem(raw: bytes) -> str:
    """What is wrong with an email that should carry a received fax as a PDF, or ''."""
    msg = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    pdfs = [part for part in msg.iter_attachments()
            if part.get_content_type() == "application/pdf"]
    if msg["To"] is None or ROUTED_TO not in str(msg["To"]):
        return f"addressed to {msg['To']}"
    if len(pdfs) != 1 or not pdfs[0].get_content().startswith(b"%PDF-"):
        return "no PDF attached"
    return ""


def log_around(log: str, moment: float, seconds: float = 1.0) -> list[str]:
    """The service's log lines stamped within `seconds` of `moment` (a `time.time()`): what it
    was doing when a mail was slow, before its temporary directory goes."""
    near = []
    for line in log.splitlines():
        try:
            at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if abs(at - moment) <= seconds:
            near.append(line)
    return near


async def intake_figure(args: argparse.Namespace, workdir: Path, *, stalled: bool) -> Figure:
    """Figure 3, one way: mails spaced `--stall-gap` apart, each waited for until converted."""
    how = (f"FaxMAX holding every call {STALL_SECONDS:g} s" if stalled
           else "FaxMAX answering normally")
    figure = Figure(f"final '.' -> 250, {how}")
    simulator = TimedFaxMax(token="sim-token")
    if stalled:
        simulator.faults.extend([Fault.stall(STALL_SECONDS)] * (args.mails + args.warmup + 10))
    await simulator.start()
    pdf = make_pdf(1)
    async with relay_sink() as relay:
        settings = settings_for(workdir, simulator.url, relay.port, numbers=NO_SENDING_LIMITS,
                                faxmax={"timeout": 2 * STALL_SECONDS, **ONE_LINE_UNHELD})
        p = ServeProcess(settings, workdir)
        await p.start()
        figure.notes.append(f"load average at the start {loadavg()}")
        started, wall_started = time.perf_counter(), time.time()
        sent_at: list[float] = []
        try:
            for n in range(-args.warmup, args.mails):
                began = time.perf_counter()
                sent = await send_mail(p.smtp_port, mail_bytes(n, pdf))
                if sent.code != 250:
                    figure.failures.append(f"mail {n}: {sent.code} {sent.text}")
                    continue
                if n >= 0:
                    figure.seconds.append(sent.reply_at - sent.dot_at)
                    sent_at.append(sent.dot_at - started)
                deadline = time.perf_counter() + 60
                while p.query("SELECT COUNT(*) FROM messages WHERE state = 'received'")[0][0]:
                    if time.perf_counter() > deadline:
                        raise RuntimeError("a mail was not converted within 60 s")
                    await asyncio.sleep(0.01)
                await asyncio.sleep(max(0.0, args.stall_gap - (time.perf_counter() - began)))
            elapsed = time.perf_counter() - started
            held = [done - begun for begun, done in simulator.answered]
            figure.notes.append(f"load average at the end {loadavg()}")
            figure.notes.append(
                f"{args.warmup + args.mails} mails over {elapsed:.1f} s; FaxMAX got "
                f"{simulator.calls} send calls, answered {len(held)}"
                + (f" after {min(held):.1f}-{max(held):.1f} s each" if held else "")
                + f", {simulator.calls - len(held)} still held at the end; jobs by state "
                f"{ {str(k): v for k, v in p.query(JOB_STATES)} }; "
                f"ERROR lines in the service log: {p.log().count(' ERROR ')}")
            slowest = sorted(zip(figure.seconds, sent_at, strict=True), reverse=True)[:3]
            answered = sorted({round(done - started, 1) for _, done in simulator.answered})
            figure.notes.append(
                "slowest (time from the first mail): "
                + ", ".join(f"{1000 * s:.1f} ms at {at:.1f} s" for s, at in slowest)
                + (f"; the held calls were answered at {', '.join(f'{t} s' for t in answered)}"
                   if stalled and answered else ""))
            median = sorted(figure.seconds)[len(figure.seconds) // 2] if slowest else 0.0
            worst, worst_at = slowest[0] if slowest else (0.0, 0.0)
            if slowest and worst > 10 * median:
                near = log_around(p.log(), wall_started + worst_at)
                figure.notes.append(f"the service's log within 1 s of the slowest mail "
                                    f"({len(near)} lines, the last 40):")
                figure.notes.extend(f"    {line}" for line in near[-40:])
        finally:
            await simulator.stop()  # drops the held calls, so the service stops at once
            await p.stop()
    return figure


# --- report ----------------------------------------------------------------------------------


def table(rows: Sequence[tuple[Figure, str, str]]) -> None:
    header = ("figure", "n", "p50", "p99", "max", "target", "verdict")
    lines: list[tuple[str, ...]] = [header]
    for figure, target, verdict in rows:
        lines.append((figure.name, str(len(figure.seconds)), f"{figure.ms(50):.1f} ms",
                      f"{figure.ms(99):.1f} ms", f"{figure.ms(100):.1f} ms", target, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(w) if i in (1, 2, 3, 4) else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())


def under(figure: Figure, limit_ms: float) -> str:
    p50 = figure.ms(50)
    return (f"{'met' if p50 < limit_ms else 'NOT met'} "
            f"(p50 {p50 / limit_ms:.2f}x the limit)")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=50, help="per mail figure")
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3, help="items sent first, not counted")
    parser.add_argument("--gap", type=float, default=0.2,
                        help="seconds of quiet after each item of figures 1 and 2")
    parser.add_argument("--stall-gap", type=float, default=1.3,
                        help="seconds from one mail to the next in figure 3 (both runs)")
    parser.add_argument("--only", choices=("faxmax", "email", "stall"))
    args = parser.parse_args()
    figures: list[Figure] = []
    rows: list[tuple[Figure, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        if args.only in (None, "faxmax"):
            (Path(tmp) / "faxmax").mkdir()
            to_faxmax, intake = await faxmax_figure(args, Path(tmp) / "faxmax")
            figures += [to_faxmax, intake]
            rows += [(to_faxmax, "p50 < 50 ms", under(to_faxmax, 50)), (intake, "", "")]
        if args.only in (None, "email"):
            (Path(tmp) / "email").mkdir()
            to_email, answer = await email_figure(args, Path(tmp) / "email")
            figures += [to_email, answer]
            rows += [(to_email, "p50 < 200 ms", under(to_email, 200)), (answer, "", "")]
        if args.only in (None, "stall"):
            (Path(tmp) / "normal").mkdir()
            (Path(tmp) / "stalled").mkdir()
            normal = await intake_figure(args, Path(tmp) / "normal", stalled=False)
            stalled = await intake_figure(args, Path(tmp) / "stalled", stalled=True)
            figures += [normal, stalled]
            moved = (f"p50 {stalled.ms(50) - normal.ms(50):+.1f} ms, "
                     f"p99 {stalled.ms(99) - normal.ms(99):+.1f} ms")
            rows += [(normal, "", ""), (stalled, "does not move", moved)]
    print("Latency, one item at a time, against the real `fax-bridge serve`")
    print()
    table(rows)
    print()
    for figure in figures:
        if not figure.notes and not figure.stages:
            continue
        print(f"{figure.name}:")
        for name, seconds in figure.stages.items():
            if seconds:
                print(f"  {name}: p50 {1000 * percentile(seconds, 50):.1f} ms, "
                      f"p99 {1000 * percentile(seconds, 99):.1f} ms")
        for note in figure.notes:
            print(f"  {note}")
    failures = [f"{figure.name}: {failure}" for figure in figures for failure in figure.failures]
    for failure in failures[:20]:
        print(f"FAILURE {failure}")
    print()
    print(f"Machine: {machine()}")
    print(f"Command: {shlex.join(['.venv/bin/python', 'bench/latency.py', *sys.argv[1:]])}")
    if failures:
        print(f"RUN FAILED: {len(failures)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
