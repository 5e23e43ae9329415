"""Crash safety at scale (docs/RELIABILITY.md F1–F4, F10): many rounds of SIGKILL of the real
`fax-bridge serve`, at seeded random points, with the rounds of `tests/crash_rounds.py` (F10's
in `tests/crash_redial.py`), of which `tests/test_crash.py` runs a few in CI.

Each round builds a fresh world (simulators, relay sink, data directory), kills and restarts
the service, and applies the same pass criteria as the tests; this script adds up the figures
and prints one line per scenario. F1 kills 1–3 s into the intake, as the plan says (counted
from the first `250`; the CI rounds use 0.3–1.5 s to stay quick).

    .venv/bin/python bench/crash_rounds.py --rounds 20
    .venv/bin/python bench/crash_rounds.py --rounds 5 --only F3 --verbose

Exit status 1 when any round failed a criterion or could not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash_redial import RedialRound, redial_round
from tests.crash_rounds import (
    PLAN_INTAKE_KILL_WINDOW,
    SEED,
    AnyRound,
    Figures,
    IntakeRound,
    PollerRound,
    PushRound,
    RoundFn,
    SendWindowRound,
    intake_round,
    poller_round,
    push_round,
    seed_for,
    send_window_round,
)


async def intake_as_planned(rng: random.Random, workdir: Path, seed: int) -> AnyRound:
    """F1 with the plan's kill window (1–3 s), not the shorter one CI uses."""
    return await intake_round(rng, workdir, seed, kill_window=PLAN_INTAKE_KILL_WINDOW)


SCENARIOS: dict[str, tuple[str, RoundFn]] = {
    "F1": ("SIGKILL during SMTP intake (8 sessions)", intake_as_planned),
    "F2": ("SIGKILL in the FaxMAX send window", send_window_round),
    "F3": ("SIGKILL in FaxMAX webhook handling", push_round),
    "F4": ("SIGKILL in the 秒速FAX poller", poller_round),
    "F10": ("SIGKILL around the redial of a busy line", redial_round),
}


@dataclass
class Tally:
    rounds: int = 0
    failed: int = 0  # rounds that broke a criterion or could not finish
    seconds: float = 0.0
    figures: Figures = field(default_factory=Figures)
    landings: collections.Counter[str] = field(default_factory=collections.Counter)


def landings(result: AnyRound) -> list[str]:
    """Where F3's kills fell relative to the commit and the 2xx: the random ones should fall
    on both sides, or the round exercised less than it claims."""
    if isinstance(result, PushRound):
        return [f"{kind}: {point}" for kind, point in result.kill_points.items()]
    return []


def describe(result: AnyRound) -> str:
    """The round's kill point(s), for --verbose."""
    if isinstance(result, IntakeRound):
        return (f"kill at {result.kill_after:.2f}s, {len(result.acknowledged)} acknowledged, "
                f"{len(result.stored_unacknowledged)} stored without 250")
    if isinstance(result, SendWindowRound):
        return f"kill {result.kill_after:.2f}s into the stall, job 1 was {result.state_at_kill}"
    if isinstance(result, RedialRound):
        return (f"kill {result.kill_after:.2f}s after the busy push, job 1 was "
                f"{result.state_at_kill}")
    if isinstance(result, PushRound):
        points = ", ".join(f"{kind}: {point}" for kind, point in result.kill_points.items())
        return f"{points}; emails in flight {result.crashes.emails_in_flight}"
    if isinstance(result, PollerRound):
        return f"PDF calls per pdfId {sorted(result.pdf_calls.values())}"
    return ""


async def run(name: str, rounds: int, base_seed: int, verbose: bool) -> Tally:
    title, round_fn = SCENARIOS[name]
    tally = Tally()
    print(f"{name}: {title}: {rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"crash-{name}-") as tmp:
        for n in range(rounds):
            seed = seed_for(name, n, base_seed)
            workdir = Path(tmp) / f"round-{n}"
            started = time.monotonic()
            try:
                result = await round_fn(random.Random(seed), workdir, seed)
            except AssertionError as exc:  # a wait timed out: the round could not finish
                tally.rounds += 1
                tally.failed += 1
                print(f"  round {n} (seed {seed}) did not finish: {exc}", flush=True)
                continue
            tally.rounds += 1
            tally.seconds += time.monotonic() - started
            tally.figures += result.figures()
            tally.landings.update(landings(result))
            problems = result.problems()
            if problems:
                tally.failed += 1
                print(f"  round {n} (seed {seed}) FAILED:", *problems, sep="\n    ",
                      flush=True)
            elif verbose:
                print(f"  round {n} (seed {seed}): {describe(result)}", flush=True)
    return tally


COLUMNS = {
    "kills": "kills",
    "acknowledged": "acknowledged",
    "lost": "lost",
    "stored_unacknowledged": "stored, no 250",
    "faxes_duplicated": "faxes duplicated",
    "emails_duplicated": "emails duplicated",
    "extra_pdf_calls": "extra PDF calls",
    "interval_violations": "interval violations",
    "integrity_failures": "integrity failures",
    "emails_in_flight": "emails in flight at a kill",
}


def table(tallies: dict[str, Tally]) -> str:
    """A Markdown table, ready for bench/RESULTS.md."""
    names = [f.name for f in fields(Figures)]
    head = ["scenario", "rounds", "failed rounds", *(COLUMNS[n] for n in names), "s/round"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, tally in tallies.items():
        values = [getattr(tally.figures, n) for n in names]
        per_round = tally.seconds / max(1, tally.rounds - tally.failed)
        lines.append("| " + " | ".join(
            [name, str(tally.rounds), str(tally.failed), *map(str, values),
             f"{per_round:.1f}"]) + " |")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per scenario")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenarios, e.g. F1,F3")
    parser.add_argument("--verbose", action="store_true", help="one line per round")
    args = parser.parse_args()
    chosen = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    tallies = {name: await run(name, args.rounds, args.seed, args.verbose) for name in chosen}
    print()
    print(table(tallies))
    for name, tally in tallies.items():
        for landing, count in sorted(tally.landings.items()):
            print(f"{name} kills {landing}: {count}")
    return 1 if any(t.failed for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
