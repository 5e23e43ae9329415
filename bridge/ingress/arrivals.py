"""When mail and pushes last arrived, so that background conversions can give way to them.

Converting a mail's attachments, or a received fax, costs a few milliseconds of CPU in a sandbox
child. Started while more mail keeps coming, it takes the cores from the check and the commit
in front of the next `250` (on a 2-core machine, a stream of small mails from one client was
answered in 1.3× the time at p50, and 1.4–1.8× at p99, that it took with the converter off).
Nobody is waiting for those conversions during a burst: the faxes go out at the provider's pace,
and the emails of received faxes a moment later. So the conversions' sandbox (the converter's
and the inbox's jobs) holds each job back while a client waits for our answer and until nothing
has arrived for `quiet` seconds after that, or for `max_hold` seconds at most, so that a stream
that never pauses still has a job started every `max_hold` seconds, and everything is caught up
once it ends.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from contextlib import contextmanager

QUIET = 0.010  # a burst's mails come closer together than this; a single mail waits this long
MAX_HOLD = 1.0


class Arrivals:
    def __init__(self, *, quiet: float = QUIET, max_hold: float = MAX_HOLD) -> None:
        self.quiet = quiet
        self.max_hold = max_hold
        self._last = -math.inf
        self._answering = 0
        self._answered = asyncio.Event()  # nobody is waiting for an answer
        self._answered.set()

    def note(self) -> None:
        """Something is on its way: a mail's `MAIL FROM`, a push's request. Not only answers
        count: when a conversion that could wait no longer slows a stream, the gaps between
        answers widen past `quiet`, and that must not pass for a pause."""
        self._last = asyncio.get_running_loop().time()

    @contextmanager
    def answering(self) -> Iterator[None]:
        """A client waits for our answer meanwhile: a mail's check and commit before its `250`,
        a push's storing before its `200`. With twenty sessions, all of them can be there at
        once for longer than `quiet`, and that is no pause."""
        self.note()
        self._answering += 1
        self._answered.clear()
        try:
            yield
        finally:
            self._answering -= 1
            if not self._answering:
                self._answered.set()
            self.note()

    async def settled(self) -> None:
        """Return once nobody waits for an answer and nothing has arrived for `quiet` seconds,
        or after `max_hold`."""
        await self._calm(asyncio.get_running_loop().time() + self.max_hold)

    async def lull(self) -> None:
        """As `settled`, however long that takes: for upkeep that can wait for a pause, since
        whatever needs it meanwhile does it itself (a sandbox child started for a job)."""
        await self._calm(math.inf)

    async def _calm(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while (left := until - loop.time()) > 0:
            if self._answering:
                try:
                    await asyncio.wait_for(self._answered.wait(), None if left == math.inf
                                           else left)
                except TimeoutError:
                    return
                continue
            wait = self._last + self.quiet - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, left))  # to the deadline, which an arrival moves on
