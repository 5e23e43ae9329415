"""What a FaxMAX status push means for its job: final or not, dialled again or not, and
which `unknown` job a push for a fax id we never learnt may belong to.

FaxMAX documents neither its status words nor how it redials, so every rule here is
configuration (`[faxmax]`), read once into `StatusRules`, which the store applies inside the
transaction that records the push (`store.jobs.add_status_events`).

**Redial.** A line that was busy, or never answered, is the most common reason a fax fails,
and the one a careful operator simply dials again. A job is dialled again only when its final
push has one of `redial_statuses` *and* says that no page was transferred (`page_count`
present and 0): a fax that sent some pages, or a push that does not say, may have printed at
the far end, and sending it again could print it twice (rule 3), so a person decides.

FaxMAX may redial by itself before its final push; its `tried_count` says how many times it
dialled. Those dials count against the same budget: a job is dialled at most
`1 + len(redial_delays)` times in all, and the wait before the next dial is the delay for the
number of dials made so far, as if the bridge had made FaxMAX's redials itself. An account
on which FaxMAX already redials five times thus gets no redial from the bridge.

**Matching by number and time.** A send whose answer never came (a timeout, a reset) is
`unknown` with no fax id; FaxMAX may still push that fax's status. A push for a fax id the
store does not know settles such a job when the job is the only `unknown` one without a fax
id to its `cld`, called within `match_window` seconds of the push's `requested_on` (else
`queued_on`), and the push the only unmatched one for that job: two candidates either way,
or none, change nothing and are listed for the operator (`fax-bridge unmatched`).
"""

from __future__ import annotations

from bridge.clock import parse_provider_time
from bridge.config import FaxmaxSettings
from bridge.store.rows import JobState, StatusEvent


class StatusRules:
    """The `[faxmax]` rules for status pushes, with the status words upper-cased once."""

    def __init__(self, settings: FaxmaxSettings) -> None:
        self.delivered = frozenset(s.strip().upper() for s in settings.delivered_statuses)
        self.redial = frozenset(s.strip().upper() for s in settings.redial_statuses)
        # A redial status is a failure even where `failed_statuses` forgot it: else it would
        # be intermediate, and the job would wait for a final push that never comes.
        self.failed = frozenset(s.strip().upper() for s in settings.failed_statuses) | self.redial
        self.delays = tuple(settings.redial_delays)
        self.timezone = settings.timezone
        self.window = settings.match_window
        self.cli = settings.cli

    def verdict(self, status: str) -> JobState | None:
        """Delivered, failed, or None for a status that is not final."""
        word = status.strip().upper()
        if word in self.delivered:
            return JobState.DELIVERED
        if word in self.failed:
            return JobState.FAILED
        return None

    def redial_in(self, status: str, pages: int | None, dials: int) -> float | None:
        """Seconds until the next dial of a job whose final push said `status` with `pages`
        transferred, after `dials` dials in all (FaxMAX's own included); None: not again."""
        if status.strip().upper() not in self.redial or pages != 0:
            return None
        if not 1 <= dials <= len(self.delays):
            return None
        return self.delays[dials - 1]

    def requested_at(self, event: StatusEvent) -> float | None:
        """When FaxMAX says the fax was requested (else queued), on our clock."""
        for text in (event.requested_on, event.queued_on):
            moment = parse_provider_time(text, self.timezone) if text else None
            if moment is not None:
                return moment
        return None

    def ours(self, event: StatusEvent) -> bool:
        """Whether a push may be of a fax this gateway sent: from our caller number, when both
        it and the push name one (another sender on the same FaxMAX account is not ours)."""
        return not (self.cli and event.cli and event.cli != self.cli)
