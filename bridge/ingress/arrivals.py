"""When mail and pushes last arrived, so that background conversions can give way to them.

Converting a mail's attachments, or a received fax, costs a few milliseconds of CPU in a sandbox
child. Started while more mail keeps coming, it takes the cores from the check and the commit
in front of the next `250` (on a 2-core machine, a stream of small mails from one client was
answered in 1.5–2× the time it took with no conversion running). Nobody is waiting for those
conversions during a burst: the faxes go out at the provider's pace, and the emails of received
faxes a moment later. So the converter and the inbox hold their next job back until nothing has
arrived for `quiet` seconds, or for `max_hold` seconds at most, so that a stream that never
pauses still has a job started every `max_hold` seconds, and everything is caught up once it
ends.
"""

from __future__ import annotations

import asyncio
import math

QUIET = 0.010  # a burst's mails come closer together than this; a single mail waits this long
MAX_HOLD = 1.0


class Arrivals:
    def __init__(self, *, quiet: float = QUIET, max_hold: float = MAX_HOLD) -> None:
        self.quiet = quiet
        self.max_hold = max_hold
        self._last = -math.inf

    def note(self) -> None:
        """Something is arriving or was acknowledged just now: a mail's `MAIL FROM` and its
        `250`, a push's request and its `200`. The start counts too: when a conversion that
        could wait no longer slows a stream, the gap between two mails' `250`s widens past
        `quiet`, and waiting conversions must not take that for a pause."""
        self._last = asyncio.get_running_loop().time()

    async def settled(self) -> None:
        """Return once nothing has arrived for `quiet` seconds, or after `max_hold`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.max_hold
        while True:  # not a poll: each sleep lasts to the deadline, which an arrival moves on
            wait = min(self._last + self.quiet, until) - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)
