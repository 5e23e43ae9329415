"""Crash safety (docs/RELIABILITY.md F1–F4): the real `fax-bridge serve` is killed with SIGKILL at
chosen and at random points, restarted, and the store and the outside world are checked.

SIGKILL runs no cleanup, as an OOM kill or a pulled plug of the process would (not of the
machine: the page cache survives, see the plan's note). What each scenario proves:

- F1: every mail that got `250` is in the store, with its raw mail (in its row or its spool
  file); at most one mail per client session is stored without its `250` (the client will send
  it again).
- F2: a fax whose send call was in flight becomes `unknown`, is never sent again, and its sender
  is told in words that nobody knows whether it went.
- F3: a FaxMAX push killed before its commit, right after it, or at a random instant, and then
  replayed, is one stored fax and one email.
- F4: a 秒速FAX PDF killed after its download but before its commit is downloaded once more (and
  only once); a fax committed but not yet mailed is mailed after the restart; the provider's
  intervals hold across both kills.

Each scenario is a `*_round` coroutine of tests/crash_rounds.py that builds its own world
(simulators, relay sink, a fresh data directory), runs one round and returns its figures;
`problems()` applies the pass criteria. The tests run `CI_ROUNDS` rounds each;
`bench/crash_rounds.py` runs the same rounds many more times and prints the totals. Kill points
come from a seeded `random.Random`, so a failing round can be replayed with its seed.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from tests.crash_redial import redial_round
from tests.crash_rounds import (
    RoundFn,
    intake_round,
    poller_round,
    push_round,
    seed_for,
    send_window_round,
)

CI_ROUNDS = 3
"""Rounds per scenario in the test suite; the bench script runs many more."""


async def run_rounds(tmp_path: Path, scenario: str, round_fn: RoundFn) -> None:
    """`CI_ROUNDS` rounds side by side (each has its own ports, files and simulators, and runs
    its own kills), then every round's verdict. A round that cannot finish cancels the rest,
    whose services are then killed on the way out."""

    async def one(n: int) -> str | None:
        seed = seed_for(scenario, n)
        workdir = tmp_path / f"round-{n}"
        result = await round_fn(random.Random(seed), workdir, seed)
        if not result.problems():
            return None
        log = (workdir / "serve.log").read_text(errors="replace")[-4000:]
        return (f"round {n}, seed {seed}:\n" + "\n".join(result.problems())
                + f"\n--- service log (tail) ---\n{log}")

    async with asyncio.TaskGroup() as group:
        rounds = [group.create_task(one(n)) for n in range(CI_ROUNDS)]
    failures = [verdict for task in rounds if (verdict := task.result()) is not None]
    assert not failures, "\n\n".join(failures)


async def test_f1_sigkill_during_smtp_intake_loses_no_acknowledged_mail(tmp_path: Path) -> None:
    await run_rounds(tmp_path, "F1", intake_round)


async def test_f2_sigkill_in_the_send_window_makes_the_job_unknown_never_resent(
    tmp_path: Path,
) -> None:
    await run_rounds(tmp_path, "F2", send_window_round)


async def test_f3_sigkill_in_webhook_handling_then_replays_is_one_fax_one_email(
    tmp_path: Path,
) -> None:
    await run_rounds(tmp_path, "F3", push_round)


async def test_f4_sigkill_in_the_poller_refetches_at_most_once_and_mails_every_fax(
    tmp_path: Path,
) -> None:
    await run_rounds(tmp_path, "F4", poller_round)


async def test_f10_sigkill_around_a_busy_lines_redial_sends_it_once_more_and_no_more(
    tmp_path: Path,
) -> None:
    await run_rounds(tmp_path, "F10", redial_round)
