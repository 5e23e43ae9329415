"""Whether the service can do its job right now, in words: what `/healthz` answers.

Unhealthy means a person must act: the database no longer takes writes (so nothing new can be
acknowledged), a worker has died (so a queue no longer moves), or 秒速FAX Plus has refused every
poll for longer than `byosoku.unhealthy_after` (so received faxes are not arriving). A slow queue
is not unhealthy; `/metrics` shows it. The write probe is repeated at most every
`PROBE_INTERVAL` seconds, however often it is asked.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from bridge.clock import Clock
from bridge.providers.byosoku import NAME as BYOSOKU
from bridge.store import Store, is_disk_full
from bridge.workers.poller import Poller

PROBE_INTERVAL = 5.0
"""Seconds a write probe's verdict is reused: /healthz proves the store took a write at most
this long ago."""


class Health:
    def __init__(
        self, store: Store, clock: Clock, *, db_path: Path,
        tasks: Callable[[], Mapping[str, asyncio.Task[None]]], poller: Poller | None,
        unhealthy_after: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.db_path = db_path
        self.tasks = tasks
        self.poller = poller
        self.unhealthy_after = unhealthy_after
        self._probing = asyncio.Lock()
        self._probed: tuple[float, str | None] | None = None  # (monotonic time, failure)

    def workers(self) -> dict[str, bool]:
        """Each worker's name, and whether it is still running."""
        return {name: not task.done() for name, task in self.tasks().items()}

    async def problems(self) -> list[str]:
        """Everything that is wrong, one sentence each; empty when healthy."""
        problems = [*self._files(), *self._dead_workers(), *self._polling()]
        if (failed := await self._probe()) is not None:
            problems.append(f"the database does not take writes: {failed}")
        return problems

    async def _probe(self) -> str | None:
        """Whether the store took a committed write at most `PROBE_INTERVAL` seconds ago (None)
        or why not. Each probe is a durable commit, in the writer's queue with the SMTP
        commits: /healthz and /metrics are unauthenticated, so a flood of GETs must cost at
        most one per interval. Concurrent requests wait for the same probe."""
        async with self._probing:
            if self._probed is None or self.clock.monotonic() - self._probed[0] >= PROBE_INTERVAL:
                try:
                    await self.store.upkeep.probe_write(self.clock.now())
                    failed = None
                except Exception as exc:
                    failed = "the disk is full" if is_disk_full(exc) else str(exc)
                self._probed = (self.clock.monotonic(), failed)
            return self._probed[1]

    def _files(self) -> list[str]:
        """Permissions, checked by their bits as well as by access(2): a process running as
        root may write anyway, but the service's own user will not after a restart."""
        out = []
        for path, what in ((self.db_path, "database file"),
                           (self.db_path.parent, "data directory")):
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                out.append(f"the {what} {path} cannot be read: {exc.strerror}")
                continue
            if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(
                    path, os.W_OK):
                out.append(f"the {what} {path} is read-only (mode {stat.filemode(mode)})")
        return out

    def _dead_workers(self) -> list[str]:
        out = []
        for name, task in self.tasks().items():
            if not task.done():
                continue
            if task.cancelled():
                why = "it was cancelled"
            else:
                exc = task.exception()
                why = f"{exc.__class__.__name__}: {exc}" if exc else "it returned"
            out.append(f"the {name} worker has stopped ({why}); restart fax-bridge")
        return out

    def _polling(self) -> list[str]:
        since = self.poller.failing_since if self.poller is not None else None
        if since is None or self.poller is None:
            return []
        failing = self.clock.now() - since
        if failing < self.unhealthy_after:
            return []
        return [f"{BYOSOKU} log calls have failed for {failing:.0f} s "
                f"(byosoku.unhealthy_after = {self.unhealthy_after:g}): {self.poller.last_error}"]
