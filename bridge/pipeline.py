"""Builds the workers and what they share, and says in one place who wakes whom.

The running service (`bridge.app.Bridge`), the operator's `replay-quarantine` and the tests'
rigs all build their parts here, so what a rig drives on a fake clock is wired exactly as the
service is. A part that a test must control (a FaxMAX client that notes the time of each call,
a relay transport, an in-thread sandbox, jitter fixed at 0) is passed in by keyword; nothing is
patched. Building starts nothing: no task, no child process, no connection. The service runs
`Pipeline.workers` as tasks; a rig calls their `run_once()` itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from bridge import documents, language, mime, ocr
from bridge.alerts import Alerter
from bridge.clock import Clock
from bridge.config import Settings
from bridge.health import Health
from bridge.ingress.arrivals import Arrivals
from bridge.ingress.pushes import PushProcessor
from bridge.ingress.smtp import FaxHandler
from bridge.limits import FaxCaps, PageCaps
from bridge.mail import Templates, Transport, make_transport
from bridge.metrics import Metrics
from bridge.numbers import NumberPolicy
from bridge.office import Missing, Office, availability
from bridge.office.converter import OfficeConverter
from bridge.providers.byosoku import ByosokuClient
from bridge.providers.faxmax import FaxMaxClient
from bridge.samples import SAMPLE_MAIL
from bridge.sandbox import Limits as SandboxLimits
from bridge.sandbox import Sandbox
from bridge.store import Store
from bridge.template_check import check_templates
from bridge.workers.base import Worker
from bridge.workers.converter import Converter
from bridge.workers.inbox import Inbox
from bridge.workers.mailer import Mailer
from bridge.workers.poller import ByosokuApi, Poller
from bridge.workers.reporter import Reporter
from bridge.workers.retention import Retention
from bridge.workers.sender import FaxSender, Sender

Tasks = Callable[[], Mapping[str, asyncio.Task[None]]]


@dataclass
class Pipeline:
    """Every part of the service but its listeners, by name.

    `close()` closes what `build_pipeline` made itself (sandboxes, provider clients); a part
    passed in stays its giver's to close, and so does the store."""

    templates: Templates
    page_caps: PageCaps
    sandbox: Sandbox  # conversions and received faxes: background work
    inspector: Sandbox  # the checks in front of a mail's `250`, and large pushes' parsing
    alerter: Alerter
    transport: Transport
    mailer: Mailer
    reporter: Reporter
    faxmax: FaxSender
    sender: Sender
    converter: Converter
    inbox: Inbox
    retention: Retention
    byosoku: ByosokuApi | None  # None unless `[byosoku] enabled`
    poller: Poller | None  # likewise
    pushes: PushProcessor
    smtp_handler: FaxHandler
    health: Health
    office: OfficeConverter | None  # None when `documents.office` has no LibreOffice
    office_availability: Office | Missing
    ocr_availability: ocr.Reader | ocr.Missing
    _sandboxes: list[Sandbox] = field(default_factory=list, repr=False)
    _clients: list[FaxMaxClient | ByosokuClient] = field(default_factory=list, repr=False)

    @property
    def workers(self) -> list[Worker]:
        """The workers the service runs, one task each."""
        workers: list[Worker] = [self.converter, self.sender, self.reporter, self.mailer,
                                 self.inbox, self.retention]
        return workers + ([self.poller] if self.poller is not None else [])

    async def close(self) -> None:
        self.smtp_handler.logins.close()
        await asyncio.gather(*(sandbox.close() for sandbox in self._sandboxes))
        if self.office is not None:
            await self.office.close()
        for client in self._clients:
            await client.close()


def conversion_sandbox(settings: Settings, arrivals: Arrivals) -> Sandbox:
    """Conversions are background work: at nice 10, each giving way to the mail and pushes
    that bring more of it (see bridge/ingress/arrivals.py)."""
    return Sandbox(SandboxLimits(memory_bytes=settings.documents.memory_mb * 2**20,
                                 seconds=settings.documents.timeout, nice=10),
                   give_way=arrivals.settled, lull=arrivals.lull)


def inspection_sandbox(settings: Settings, arrivals: Arrivals) -> Sandbox:
    """The checks before a mail's `250` (and the parsing of a large push, before its 2xx), at
    full priority, in children warmed up on a sample mail so that no sender's `250` pays for a
    fresh child."""
    return Sandbox(SandboxLimits(memory_bytes=settings.documents.memory_mb * 2**20,
                                 seconds=settings.smtp.inspect_timeout),
                   warm_up=(mime.inspect, (SAMPLE_MAIL,)), lull=arrivals.lull)


def build_pipeline(
    settings: Settings, store: Store, clock: Clock, *,
    arrivals: Arrivals | None = None, metrics: Metrics | None = None,
    faxmax: FaxSender | None = None, byosoku: ByosokuApi | None = None,
    transport: Transport | None = None, sandbox: Sandbox | None = None,
    inspector: Sandbox | None = None, jitter: Callable[[], float] = random.random,
    tasks: Tasks = dict, office_availability: Office | Missing | None = None,
    ocr_availability: ocr.Reader | ocr.Missing | None = None,
) -> Pipeline:
    """The parts, built from `settings` around an open `store`. Given parts replace the ones
    built from settings; `jitter` goes to every worker that spreads its retries; `tasks` names
    the running workers' tasks, for the health report; `office_availability` is
    `bridge.office.availability(settings.documents)`, looked for here when not given, and
    `ocr_availability` `bridge.ocr.availability(settings)`, likewise."""
    s = settings
    data = s.data_path
    templates = Templates(s.mail.templates_dir)
    check_templates(templates, s)  # a broken override stops the start, not every report
    arrivals = arrivals if arrivals is not None else Arrivals()
    metrics = metrics if metrics is not None else Metrics()
    own_sandboxes: list[Sandbox] = []
    own_clients: list[FaxMaxClient | ByosokuClient] = []
    if sandbox is None:
        sandbox = conversion_sandbox(s, arrivals)
        own_sandboxes.append(sandbox)
    if inspector is None:
        inspector = inspection_sandbox(s, arrivals)
        own_sandboxes.append(inspector)
    if faxmax is None:
        client = FaxMaxClient(s.faxmax, metrics)
        own_clients.append(client)
        faxmax = client
    if transport is None:
        transport = make_transport(s.mail, s.maildir_path)
    if office_availability is None:
        office_availability = availability(s.documents)
    converter_office = None
    if isinstance(office_availability, Office):
        converter_office = OfficeConverter(
            office_availability, seconds=s.documents.timeout,
            memory_bytes=s.documents.office_memory_mb * 2**20, work_dir=data / "office")
    if ocr_availability is None:
        ocr_availability = ocr.availability(s)
    fax_body = s.documents.body == "auto" and converter_office is not None
    page_caps = PageCaps(per_sender=s.numbers.max_pages_per_sender_per_day,
                         total=s.numbers.max_pages_per_day)

    alerter = Alerter(store, clock, s, templates, on_enqueued=lambda: mailer.wake())
    mailer = Mailer(store, clock, transport, s.mail, alerter=alerter, jitter=jitter)
    reporter = Reporter(store, clock, s, templates, on_enqueued=mailer.wake, sandbox=sandbox,
                        alert=alerter.alert)
    sender = Sender(store, clock, faxmax, s.faxmax, on_final=reporter.wake, jitter=jitter,
                    alerter=alerter)
    converter = Converter(store, clock, sandbox=sandbox, documents_dir=data / "documents",
                          templates=templates, cover_page=s.faxmax.cover_page,
                          max_pages=s.documents.max_pages, page_caps=page_caps,
                          on_ready=sender.wake, on_failed=reporter.wake,
                          alert=alerter.alert, office=converter_office,
                          office_missing=office_availability.describe(), fax_body=fax_body,
                          timezone=s.mail.timezone,
                          sender_language=partial(language.for_sender, s))
    reader = None
    if isinstance(ocr_availability, ocr.Reader):
        reader = ocr.Ocr(ocr_availability, seconds=s.documents.ocr_timeout,
                         memory_bytes=s.documents.ocr_memory_mb * 2**20, work_dir=data / "ocr",
                         alert=alerter.alert)
    inbox = Inbox(store, clock, s, sandbox=sandbox, alerter=alerter, on_enqueued=mailer.wake,
                  ocr=reader)
    retention = Retention(store, clock, s.documents.retention_days)
    poller = None
    if s.byosoku.enabled:
        if byosoku is None:
            polled = ByosokuClient(s.byosoku, metrics)
            own_clients.append(polled)
            byosoku = polled
        poller = Poller(store, clock, byosoku, s.byosoku, inbound_dir=data / "inbound",
                        alerter=alerter, on_fax=inbox.wake, jitter=jitter)

    def on_status() -> None:
        """A status push may end a job (a report to send), free its number's line or queue a
        redial (the sender's next fax)."""
        reporter.wake()
        sender.wake()

    pushes = PushProcessor(store, clock, rules=sender.rules, alerter=alerter, sandbox=inspector,
                           on_status=on_status, on_fax=inbox.wake)
    health = Health(store, clock, db_path=data / "fax-bridge.sqlite3", tasks=tasks,
                    poller=poller, unhealthy_after=s.byosoku.unhealthy_after)
    smtp_handler = FaxHandler(
        s.smtp, store=store, clock=clock, spool_dir=data / "spool",
        number_policy=NumberPolicy.from_config(home_country=s.numbers.default_country_code,
                                               allow=s.numbers.allow, deny=s.numbers.deny),
        default_country_code=s.numbers.default_country_code,
        fax_caps=FaxCaps(per_sender=s.numbers.max_faxes_per_sender_per_hour,
                         total=s.numbers.max_faxes_per_hour), page_caps=page_caps,
        sandbox=inspector, on_queued=converter.wake, arrivals=arrivals, metrics=metrics,
        office=converter_office is not None, fax_body=fax_body,
        max_schedule_days=s.faxmax.max_schedule_days, timezone=s.mail.timezone,
        document_limits=documents.Limits(
            max_pages=s.documents.max_pages,
            max_pdf_unpacked_bytes=s.documents.max_pdf_unpacked_mb * 2**20))
    return Pipeline(
        templates=templates, page_caps=page_caps, sandbox=sandbox, inspector=inspector,
        alerter=alerter, transport=transport, mailer=mailer, reporter=reporter, faxmax=faxmax,
        sender=sender, converter=converter, inbox=inbox, retention=retention,
        byosoku=byosoku if s.byosoku.enabled else None, poller=poller, pushes=pushes,
        smtp_handler=smtp_handler, health=health, office=converter_office,
        office_availability=office_availability, ocr_availability=ocr_availability,
        _sandboxes=own_sandboxes,
        _clients=own_clients)
