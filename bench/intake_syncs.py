"""Durable syncs per acknowledged mail, counted with strace: the pass of `bench/intake.py` (its
docstring says how syncs are sorted and commits estimated)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from bench.common import descendants

T = TypeVar("T")
SYNC_CALL = re.compile(r"^(fsync|fdatasync)\((\d+)<([^>]*)>")
RESUMED = re.compile(r"^<\.\.\. (fsync|fdatasync) resumed>")
RESULT = re.compile(r"\)\s*=\s*(-?\d+)")


class Traced(Protocol):
    """What the pass needs of a server under test (`bench.intake.Server`)."""

    name: str
    pid: int
    db_path: Path
    data_dir: Path

    def worker_commits(self) -> int: ...


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


def classify(trace: str, server: Traced, since: float, until: float) -> Syncs:
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


async def count_syncs(server: Traced, send: Callable[[], Awaitable[T]],
                      tmp: Path) -> tuple[Syncs, T]:
    """Run `send()` (the mails of the pass) with strace attached to the server's whole process
    tree; the caller sets `mails`, the mails acknowledged, on the result."""
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
    replies = await send()
    after = server.worker_commits()
    until = time.time()
    strace.send_signal(signal.SIGINT)  # detaches from every traced process
    await asyncio.wait_for(strace.communicate(), 30)
    syncs = classify(out.read_text(errors="replace"), server, since, until)
    syncs.worker_commits = after - before
    return syncs, replies
