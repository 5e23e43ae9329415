"""Peak memory of a process as the kernel keeps it (`VmHWM`), reset on demand, for bounds on
what one piece of work costs: the jobs run in the sandbox's children (`Sandbox.run`) as well
as in the test's own process, which is the service's."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bridge.sandbox import Sandbox


def reset_peak() -> int:
    """Start this process's peak afresh, at what it holds now (Linux: `clear_refs` 5); its pid."""
    Path("/proc/self/clear_refs").write_text("5")
    return os.getpid()


def peak_mb() -> tuple[int, float]:
    """This process's pid, and its peak resident memory since it started or was reset, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return os.getpid(), int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


async def reset_children(sandbox: Sandbox) -> set[int]:
    """`reset_peak` in each of the sandbox's children (started if need be); their pids. As many
    jobs at once as the pool has children, so each lands in a child of its own (a busy child
    takes no second job)."""
    pids = set(await asyncio.gather(*(sandbox.run(reset_peak) for _ in range(sandbox.size))))
    assert len(pids) == sandbox.size
    return pids


async def children_peaks(sandbox: Sandbox) -> dict[int, float]:
    """Each of the sandbox's children's peak (`peak_mb`), by pid, in the same way."""
    return dict(await asyncio.gather(*(sandbox.run(peak_mb) for _ in range(sandbox.size))))
