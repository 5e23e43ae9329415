"""The table and the verdicts of `bench/intake.py`: one `Run` per server, size, number of
sessions and round; ratios within a round, targets on the median of the rounds' ratios."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from bench.ceiling_postfix import HoldTrace
from bench.common import percentile
from bench.intake_syncs import Syncs

BRIDGE_BY_SMTP_SOURCE = "bridge/smtp-source"  # the bridge driven as the Postfix ceiling is


class Reply(Protocol):
    """A mail's verdict (`tests.test_load.MailResult`)."""

    @property
    def code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def stage(self) -> str: ...


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
    failures: list[Reply] = field(default_factory=list)
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
