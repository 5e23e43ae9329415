"""The practical ceiling for SMTP intake: Postfix's own durable intake. A private Postfix
instance whose smtpd puts every mail it accepts on hold, driven by `smtp-source`.

The instance is `tests/postfix.py`'s `PostfixInstance` (its own configuration, queue, data
directory and log in one directory, mode 0755, `inet_interfaces = 127.0.0.1`, an smtpd on a free
loopback port, every daemon outside a chroot, `mail_owner` the system's `postfix` user; started
with `postfix -c DIR start`, stopped with `postfix -c DIR stop` and removed afterwards, even when
the run fails). Its main.cf is `deploy/postfix/main.cf` as shipped (fax.local is a relay domain
routed to the bridge, local clients may send to it) plus the test instance's lines, plus one
line of this module's:

    smtpd_data_restrictions = check_client_access static:HOLD

At DATA, smtpd looks the client up in a `static:` table, which answers `HOLD` to any lookup;
`HOLD` (access(5)) flags the mail for the hold queue and lets the dialogue go on. cleanup(8)
writes the queue file in `incoming/`, renames it into `hold/`, fsyncs it, and only then tells
smtpd, which answers `250 2.0.0 Ok: queued as ID`. The queue manager never sees held mail, so
nothing is delivered (fax.local's next hop in the transport map is a closed port and is never
tried). That is Postfix's whole durable intake and nothing more: the practical ceiling for a
gateway that acknowledges only what is on disk.

What is measured, per run: `smtp-source -s SESSIONS -m MAILS -F FILE -f SENDER -t RCPT` (MAILS in
all, spread over SESSIONS parallel sessions, one mail per connection, smtp-source's default;
`--reuse` adds `-d`, one connection per session), timed from its start to its exit. FILE is one
of `bench/intake_mails.py`'s mails (the same bytes `bench/intake.py` sends the bridge, but one
mail for all: smtp-source sends the file as it is, plus an empty line before the final `.`,
2 bytes). First `--warmup` mails (at least one per session) go through untimed, so the run sees
running daemons, as a server in service does. Printed: mails/s, the CPU time of the instance's
process tree per mail (master and every daemon, the ones that exited meanwhile included), and
after the run the queues by `postqueue -j`: every mail must be in `hold`, none anywhere else.
smtp-source aborts on any reply it does not expect, so a non-zero exit is a failure of the run.

The trace (`--trace-mails`, needs strace): `strace -f -ttt -T -y -e trace=fsync,fdatasync,write`
on the instance's whole process tree while that many more mails go through. For every
`250 ... queued as ID` that smtpd writes, it checks that cleanup's fsync of `queue/hold/ID` had
returned 0 before that write began (strace's timestamps and durations), and it counts the syncs
per mail by file. strace slows every system call: this pass is never timed.

Needs root (Postfix's daemons change user), Postfix and smtp-source (Debian package `postfix`,
/usr/sbin/smtp-source). `bench/intake.py` runs this ceiling in every round beside the bridge.

    .venv/bin/python bench/ceiling_postfix.py
    .venv/bin/python bench/ceiling_postfix.py --sizes 5KB --sessions 20 --mails 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import descendants, machine
from bench.intake_mails import RCPT, SENDER, templates
from tests.postfix import SBIN_PATH, PostfixInstance, run, skip_reason

T = TypeVar("T")
CLOSED_PORT = 9  # fax.local's next hop in the instance's transport map: never tried, all held
HOLD_MAIN_CF = """
# ---- bench/ceiling_postfix.py: every mail that smtpd accepts goes on hold (access(5) HOLD);
# cleanup(8) writes it to hold/, fsyncs it, then smtpd answers 250; nothing is delivered ----
smtpd_data_restrictions = check_client_access static:HOLD
"""
HELO = "bench.example"
QUEUED = re.compile(r'^write\(\d+<[^>]*>, "250 [0-9.]+ Ok: queued as ([0-9A-Za-z]+)')
SYNC = re.compile(r"^(?:fsync|fdatasync)\(\d+<([^>]*)>")
DONE = re.compile(r"\)\s*=\s*(-?\d+)(?:\s+[A-Z]+\s+\([^)]*\))?\s*<([\d.]+)>\s*$")


def smtp_source_path() -> str | None:
    return shutil.which("smtp-source", path=SBIN_PATH)


def missing() -> str | None:
    """Why this ceiling cannot run here, or None when it can."""
    reason = skip_reason()
    if reason is None and smtp_source_path() is None:
        reason = ("smtp-source is not installed (it ships in the Debian package postfix as "
                  "/usr/sbin/smtp-source)")
    return reason


class HoldingPostfix(PostfixInstance):
    """A private Postfix (tests/postfix.py) whose smtpd holds every mail; in `parent` if given,
    so that its queue is on the same file system as the servers it is compared with."""

    def __init__(self, parent: Path | None = None) -> None:
        super().__init__(fax_bridge_port=CLOSED_PORT)
        if parent is not None:
            for place in (parent.resolve(), *parent.resolve().parents):
                if not place.stat().st_mode & 0o001:
                    self.root.rmdir()
                    raise RuntimeError(f"{place} is not searchable by others (mode o+x): "
                                     f"Postfix's daemons, as user postfix, cannot reach "
                                     f"a queue under {parent}")
            self.root.rmdir()
            self.root = Path(tempfile.mkdtemp(prefix="bench-postfix-", dir=parent))
            self.root.chmod(0o755)
            self.conf = self.root / "conf"
            self.maillog = self.root / "maillog"
            self.mail = self.root / "mail"

    def main_cf(self) -> str:
        return super().main_cf() + HOLD_MAIN_CF

    @property
    def hold_dir(self) -> Path:
        return self.root / "queue" / "hold"

    def master_pid(self) -> int:
        return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    async def queues(self) -> Counter[str]:
        """How many mails each queue holds, by `postqueue -c DIR -j`."""
        result = await run("postqueue", "-c", str(self.conf), "-j", timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"postqueue -j failed: {result.output}")
        return Counter(json.loads(line)["queue_name"] for line in result.stdout.splitlines()
                       if line.strip())


def tree_cpu_ns(master: int) -> float:
    """CPU seconds used so far by the instance: master and its live daemons from
    /proc/PID/task/TID/schedstat (nanoseconds), plus the daemons that exited meanwhile (master's
    cutime + cstime). Not `bench.common.tree_cpu`: Postfix runs some forty daemons that each use
    a few milliseconds, and /proc/PID/stat counts them in 10 ms ticks, rounded down one by one."""
    total = 0.0
    for pid in [master, *(p for p, _ in descendants(master))]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{master}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime cstime
    return total


# --- smtp-source ---------------------------------------------------------------------------


def smtp_source_file(data: bytes, path: Path) -> Path:
    """Write DATA bytes as they go on the wire (CRLF, dot-stuffed, no final `.` line) as
    smtp-source's -F wants them: it dot-stuffs each line and appends CRLF to it itself."""
    path.write_bytes(re.sub(rb"(?m)^\.", b"", data).replace(b"\r\n", b"\n"))
    return path


@dataclass
class SourceRun:
    argv: list[str]
    mails: int
    elapsed: float
    returncode: int
    output: str

    @property
    def rate(self) -> float:
        return self.mails / self.elapsed if self.returncode == 0 else 0.0


async def smtp_source(port: int, message_file: Path, *, sessions: int, mails: int,
                      reuse: bool = False, timeout: float = 900.0) -> SourceRun:
    """Run smtp-source to 127.0.0.1:port; the clock runs from its start to its exit."""
    program = smtp_source_path()
    assert program is not None, "smtp-source is not installed"
    argv = [program, "-s", str(sessions), "-m", str(mails), "-F", str(message_file),
            "-f", SENDER, "-t", RCPT, "-M", HELO, *(["-d"] if reuse else []),
            f"127.0.0.1:{port}"]
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        out += f"\n(killed after {timeout:.0f} s)".encode()
    elapsed = time.perf_counter() - started
    assert proc.returncode is not None
    return SourceRun(argv, mails, elapsed, proc.returncode, out.decode(errors="replace"))


# --- the trace: every 250 after the fsync of its queue file ----------------------------------


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    head: str  # the call as strace printed it, from its name on
    result: int


def calls(trace: str) -> Iterator[Call]:
    """The system calls of an `strace -f -ttt -T` file; a call that another process interrupted
    in the output (`<unfinished ...>`, then `<... resumed>`) is joined again."""
    pending: dict[str, tuple[float, str]] = {}
    for line in trace.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, stamp, rest = parts
        try:
            start = float(stamp)
        except ValueError:
            continue
        if rest.startswith("<..."):
            if pid in pending and (done := DONE.search(rest)):
                began, head = pending.pop(pid)
                yield Call(began, began + float(done[2]), head, int(done[1]))
        elif rest.endswith("<unfinished ...>"):
            pending[pid] = (start, rest)
        elif done := DONE.search(rest):
            yield Call(start, start + float(done[2]), rest, int(done[1]))


@dataclass
class HoldTrace:
    mails: int = 0  # mails smtp-source sent in the pass
    acks: int = 0  # `250 ... queued as ID` that smtpd wrote
    synced_first: int = 0  # of which hold/ID had been fsynced (returned 0) before the write
    unsynced: list[str] = field(default_factory=list)  # queue ids answered before their fsync
    syncs: Counter[str] = field(default_factory=Counter)  # successful syncs by file
    failed_syncs: int = 0

    def per_mail(self, n: int) -> float:
        return n / self.acks if self.acks else float("nan")

    def text(self) -> str:
        where = ", ".join(f"{k} {self.per_mail(n):.2f}" for k, n in sorted(self.syncs.items()))
        total = self.per_mail(self.syncs.total())
        return (f"{self.acks} x 250 for {self.mails} mails, {self.synced_first} after the fsync "
                f"of their queue file in hold/; syncs per mail {total:.2f} "
                f"({where or 'none'}); failed syncs {self.failed_syncs}")


def check_trace(trace: str, instance: HoldingPostfix, since: float, until: float) -> HoldTrace:
    held = HoldTrace()
    synced: dict[str, float] = {}  # queue id -> when the first sync of hold/ID returned
    acks: list[tuple[str, float]] = []
    hold = str(instance.hold_dir)
    for call in sorted(calls(trace), key=lambda c: c.start):
        if not since <= call.start <= until:
            continue
        if found := SYNC.match(call.head):
            path = found[1]
            if call.result != 0:
                held.failed_syncs += 1
            elif os.path.dirname(path) == hold:
                held.syncs["queue file in hold/"] += 1
                synced.setdefault(os.path.basename(path), call.end)
            else:
                held.syncs[f"other: {os.path.relpath(path, instance.root)}"] += 1
        elif call.result > 0 and (found := QUEUED.match(call.head)):
            acks.append((found[1], call.start))
    held.acks = len(acks)
    for queue_id, at in acks:
        if synced.get(queue_id, at + 1) <= at:
            held.synced_first += 1
        else:
            held.unsynced.append(queue_id)
    return held


async def traced(instance: HoldingPostfix, work: Callable[[], Awaitable[T]],
                 out: Path) -> tuple[HoldTrace, T]:
    """Run `work()` with strace attached to the instance's whole process tree."""
    master = instance.master_pid()
    pids = [master, *(p for p, _ in descendants(master))]
    args = ["strace", "-f", "-ttt", "-T", "-y", "-s", "64", "-e",
            "trace=fsync,fdatasync,write", "-o", str(out)]
    for pid in pids:
        args += ["-p", str(pid)]
    strace = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
    assert strace.stderr is not None
    attached = 0
    while attached < len(pids):  # one "Process N attached" each (Postfix's daemons: 1 thread)
        try:
            line = await asyncio.wait_for(strace.stderr.readline(), 2 if attached else 30)
        except TimeoutError:
            break
        if not line:
            raise RuntimeError("strace exited before attaching; is ptrace allowed here?")
        attached += b"attached" in line
    since = time.time()
    try:
        result = await work()
    finally:
        until = time.time()
        strace.send_signal(signal.SIGINT)  # detaches from every traced process
        await asyncio.wait_for(strace.communicate(), 60)
    text = await asyncio.to_thread(out.read_text, errors="replace")
    return check_trace(text, instance, since, until), result


# --- one run ---------------------------------------------------------------------------------


@dataclass
class PostfixRun:
    size: str
    sessions: int
    load1: float
    mails: int = 0
    ok: int = 0
    elapsed: float = float("nan")
    cpu: float = float("nan")
    queues: Counter[str] = field(default_factory=Counter)
    expected_held: int = 0
    trace: HoldTrace | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else float("nan")

    @property
    def cpu_per_mail(self) -> float:
        return 1000 * self.cpu / self.ok if self.ok else float("nan")


async def measure(size: str, data: bytes, *, sessions: int, mails: int, warmup: int,
                  reuse: bool = False, trace_mails: int = 0,
                  parent: Path | None = None) -> PostfixRun:
    """One run on a fresh instance: warm-up, the timed smtp-source run, the trace if asked, the
    queues; the instance is stopped and removed at the end whatever happens."""
    result = PostfixRun(size, sessions, os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="bench-postfix-run-", dir=parent) as name:
        tmp = Path(name)
        message = smtp_source_file(data, tmp / "mail.eml")
        instance: HoldingPostfix | None = None
        try:
            instance = HoldingPostfix(parent)
            await instance.start()
            sent = 0

            port = instance.smtpd_port

            async def source(n: int) -> SourceRun:
                nonlocal sent
                done = await smtp_source(port, message, sessions=sessions,
                                         mails=n, reuse=reuse)
                sent += n
                if done.returncode != 0:
                    result.problems.append(f"smtp-source exited {done.returncode}: "
                                           f"{done.output.strip()[-300:]!r}")
                return done

            await source(max(warmup, sessions))
            cpu = tree_cpu_ns(instance.master_pid())
            timed = await source(mails)
            result.cpu = tree_cpu_ns(instance.master_pid()) - cpu
            result.mails, result.elapsed = mails, timed.elapsed
            result.ok = mails if timed.returncode == 0 else 0
            if trace_mails and shutil.which("strace"):
                result.trace, _ = await traced(instance, lambda: source(trace_mails),
                                               tmp / "strace.txt")
                result.trace.mails = trace_mails
                if result.trace.unsynced or result.trace.acks != trace_mails:
                    result.problems.append(f"trace: {result.trace.text()}; answered before "
                                           f"their fsync: {result.trace.unsynced[:5]}")
            result.expected_held = sent
            result.queues = await instance.queues()
            if result.queues != Counter({"hold": sent}):
                result.problems.append(f"queues {dict(result.queues)} for {sent} mails sent, "
                                       f"all of which should be in hold")
            result.problems += [f"maillog: {line}" for line in instance.problems()[:5]]
        except (AssertionError, RuntimeError, OSError) as exc:  # the instance would not start
            result.problems.append(f"{type(exc).__name__}: {str(exc).strip()[:2000]}")
        finally:
            if instance is not None:
                await instance.stop()
    return result


def describe(r: PostfixRun) -> str:
    return (f"{r.ok}/{r.mails} x 250, {r.rate:.1f} msgs/s, cpu {r.cpu_per_mail:.2f} ms/mail, "
            f"queues after {dict(r.queues)}, load average before {r.load1:.2f}")


async def main() -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--sizes", default="5KB,300KB", help="mail sizes, of 5KB and 300KB")
    parser.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    parser.add_argument("--mails", type=int, default=500,
                        help="timed mails per run, in all (bench/intake.py: 25 per session)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed mails first (at least one per session)")
    parser.add_argument("--reuse", action="store_true",
                        help="smtp-source -d: all of a session's mails on one connection")
    parser.add_argument("--trace-mails", type=int, default=100,
                        help="mails of the strace pass (0: none)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per size, each on a fresh "
                        "instance")
    parser.add_argument("--dir", type=Path, default=None, help="where the instances live "
                        "(default: the system's temporary directory)")
    args = parser.parse_args()
    if (reason := missing()) is not None:
        print(f"Postfix ceiling not measured: {reason}")
        return 2
    if args.trace_mails and shutil.which("strace") is None:
        parser.error("strace is not installed; use --trace-mails 0")
    print(f"machine: {machine()}")
    print("command:", shlex.join([sys.executable, *sys.argv]), flush=True)
    clean = True
    for size in args.sizes.split(","):
        template = templates()[size]
        rates = []
        for round_ in range(1, args.rounds + 1):
            r = await measure(size, template.data(f"postfix-{size}"), sessions=args.sessions,
                              mails=args.mails, warmup=args.warmup, reuse=args.reuse,
                              trace_mails=args.trace_mails if round_ == 1 else 0,
                              parent=args.dir)
            print(f"  {size} ({template.size} bytes) x{args.sessions} round {round_}: "
                  f"{describe(r)}", flush=True)
            if r.trace is not None:
                print(f"    trace: {r.trace.text()}")
            for problem in r.problems:
                print(f"    PROBLEM: {problem}")
            clean = clean and not r.problems
            rates.append(r.rate)
        if len(rates) > 1:
            print(f"  {size}: median {statistics.median(rates):.1f} msgs/s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
