"""What `/metrics` shows, in the Prometheus text format.

Two kinds of figures. Events that happen in this process (SMTP refusals, provider calls and their
latency, replayed pushes) are counters in a registry owned by one `Metrics` object, so that tests
and the demo can run several bridges in one process. Everything the database knows (faxes by
state, queue depths, the oldest waiting item, the last good poll and push) is read from the store
at scrape time, so it survives restarts and can never disagree with `fax-bridge status`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from bridge.errors import ProviderError
from bridge.replies import CATALOGUE, Line
from bridge.store import Snapshot

# aiosmtpd's own replies carry no catalogue entry. Those with an enhanced code (RFC 3463) are
# counted under the label the catalogue gives that code, and failed AUTH, aiosmtpd's alone,
# under its own; the rest are "protocol" (5xx) or "other".
AIOSMTPD_REASONS = {
    **{entry.enhanced: entry.reason for entry in CATALOGUE.values() if entry.code >= 400},
    "5.7.8": "auth_failed",
}


def refusal_labels(reply: str) -> tuple[str, str]:
    """The `code` and `reason` labels of a 4xx/5xx reply: bounded, whatever a client sends."""
    if isinstance(reply, Line):
        return reply.entry.label, reply.entry.reason
    parts = reply.split(maxsplit=2)
    if len(parts) > 1 and parts[1] in AIOSMTPD_REASONS:
        return " ".join(parts[:2]), AIOSMTPD_REASONS[parts[1]]
    return " ".join(parts[:2]), "protocol" if reply[:1] == "5" else "other"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.smtp_refusals = Counter(
            "fax_bridge_smtp_refusals", "SMTP replies that refused something, by reason.",
            ["code", "reason"], registry=r)
        self.provider_seconds = Histogram(
            "fax_bridge_provider_request_seconds", "Time of one provider API call.",
            ["provider", "call"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.provider_errors = Counter(
            "fax_bridge_provider_errors", "Failed provider API calls, by the provider's code.",
            ["provider", "call", "code"], registry=r)
        self.duplicates = Counter(
            "fax_bridge_duplicates_suppressed",
            "Repeated events that were recognised and not acted on a second time.",
            ["provider", "kind"], registry=r)
        self.pushes = Counter(
            "fax_bridge_pushes", "FaxMAX pushes answered, by HTTP status.", ["status"],
            registry=r)
        self._faxes = Gauge(
            "fax_bridge_faxes", "Outgoing fax jobs by state, from the database (never reset).",
            ["state"], registry=r)
        self._received = Gauge(
            "fax_bridge_received_faxes", "Received faxes by provider and state, from the "
            "database (never reset).", ["provider", "state"], registry=r)
        self._emails = Gauge(
            "fax_bridge_emails", "Outgoing emails by state, from the database.", ["state"],
            registry=r)
        self._depth = Gauge(
            "fax_bridge_queue_depth", "Items waiting, by queue.", ["queue"], registry=r)
        self._age = Gauge(
            "fax_bridge_queue_oldest_age_seconds",
            "How long the oldest waiting item has waited, by queue (0 when empty).", ["queue"],
            registry=r)
        self._quarantined = Gauge(
            "fax_bridge_quarantined_pushes", "Push events kept because they could not be "
            "understood, not yet replayed.", registry=r)
        self._log_gaps = Gauge(
            "fax_bridge_byosoku_log_gaps", "Times the 秒速FAX Plus log scrolled past a poll "
            "(faxes may have been missed).", registry=r)
        self._contradictions = Gauge(
            "fax_bridge_contradicting_statuses", "FaxMAX final statuses ignored because they "
            "contradicted a job's first final status (each one logged with its job).",
            registry=r)
        self._last_poll = Gauge(
            "fax_bridge_last_successful_poll_timestamp_seconds",
            "When the 秒速FAX Plus receive log was last read successfully (0: never).",
            registry=r)
        self._last_push = Gauge(
            "fax_bridge_last_push_timestamp_seconds",
            "When FaxMAX last pushed something that was stored (0: never).", registry=r)
        self._workers = Gauge(
            "fax_bridge_worker_up", "1 while a worker runs, 0 once it has died.", ["worker"],
            registry=r)
        self._healthy = Gauge(
            "fax_bridge_healthy", "1 when /healthz answers 200.", registry=r)

    @contextmanager
    def provider_call(self, provider: str, call: str) -> Iterator[None]:
        """Time one API call; a `ProviderError` is counted by its code and re-raised."""
        started = time.perf_counter()
        try:
            yield
        except ProviderError as exc:
            self.provider_errors.labels(provider, call, exc.code or "other").inc()
            raise
        finally:
            self.provider_seconds.labels(provider, call).observe(time.perf_counter() - started)

    def refused(self, reply: str) -> None:
        self.smtp_refusals.labels(*refusal_labels(reply)).inc()

    def render(self, snapshot: Snapshot, workers: dict[str, bool], problems: list[str],
               accept: str) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for (Prometheus text or
        OpenMetrics), with its content type, after refreshing the database's figures."""
        for gauge, values in ((self._faxes, snapshot.jobs), (self._emails, snapshot.emails)):
            gauge.clear()
            for state, n in values.items():
                gauge.labels(state).set(n)
        self._received.clear()
        for (provider, state), n in snapshot.received.items():
            self._received.labels(provider, state).set(n)
        self._depth.clear()
        self._age.clear()
        for queue, (depth, age) in snapshot.queues.items():
            self._depth.labels(queue).set(depth)
            self._age.labels(queue).set(age)
        self._quarantined.set(snapshot.quarantined)
        self._log_gaps.set(snapshot.log_gaps)
        self._contradictions.set(snapshot.contradictions)
        self._last_poll.set(snapshot.last_poll)
        self._last_push.set(snapshot.last_push)
        for name, up in workers.items():
            self._workers.labels(name).set(1 if up else 0)
        self._healthy.set(0 if problems else 1)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
