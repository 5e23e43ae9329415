"""What every benchmark prints beside its figures (the machine, the code measured, the command,
the load) and the small statistics they share, so that their figures are stated alike."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import shlex
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    """Cores, CPU model and the versions that the figures depend on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, aiohttp {aiohttp.__version__}, "
            f"{platform.system()} {platform.release()}")


def product() -> str:
    """Which code was measured: a digest of bridge/**/*.py and the newest change among them."""
    files = sorted((REPO / "bridge").rglob("*.py"))
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    newest = max(f.stat().st_mtime for f in files)
    return (f"product: bridge/**/*.py sha256 {digest}, newest change "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(newest))}")


def command() -> str:
    """The command line that produced the figures, to copy into RESULTS.md."""
    return shlex.join([os.path.relpath(sys.executable), *sys.argv])


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)] if ordered else math.nan


def status_kb(pid: int | str, *fields: str) -> dict[str, int]:
    """Fields of /proc/PID/status in kB ({} if the process is gone)."""
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            found[name] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """Direct children of every thread of `pid` (a process started from a worker thread is
    the child of that thread, as the forkserver is)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text()
                      .split()]
        except OSError:
            continue
    return found


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, depth) of every process below `root`."""
    found: list[tuple[int, int]] = []
    stack = [(c, 1) for c in children(root)]
    while stack:
        pid, depth = stack.pop()
        found.append((pid, depth))
        stack += [(c, depth + 1) for c in children(pid)]
    return found


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by `root` and its descendants, including children they have
    already reaped (the bridge's forkserver reaps every sandbox child)."""
    total = 0
    for pid in [root, *(p for p, _ in descendants(root))]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")
