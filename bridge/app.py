"""Runs the service in one asyncio loop: the pipeline (bridge/pipeline.py) and its listeners.

Shutdown is ordered and bounded: stop accepting (SMTP, HTTP), stop claiming work, let in-flight
work finish within a timeout, cancel the rest (which the next start treats as a crash), then
close clients and the database. A FaxMAX call in flight has longer, its own `faxmax.timeout`:
cut off, its fax may have gone out, and its job would become `unknown`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge import ocr, office
from bridge.clock import Clock, SystemClock
from bridge.config import Settings, parse_listen
from bridge.dialling import StatusRules
from bridge.errors import ConfigError, StoreError
from bridge.ingress.arrivals import Arrivals
from bridge.ingress.connections import SmtpServer
from bridge.ingress.data import remove_orphans
from bridge.ingress.smtp import start_smtp_server
from bridge.ingress.web import build_web_app
from bridge.instance import InstanceLock
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline, build_pipeline
from bridge.store import Store
from bridge.workers.base import Worker
from bridge.workers.sender import FaxSender

log = logging.getLogger(__name__)


@dataclass
class Bridge:
    """The running service. `start()` returns once every listener is bound."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    # mail and pushes go before the conversions they bring (see bridge/ingress/arrivals.py)
    arrivals: Arrivals = field(default_factory=Arrivals)
    _store: Store | None = field(init=False, default=None)
    smtp_port: int = field(init=False, default=0)
    http_port: int = field(init=False, default=0)
    pipeline: Pipeline | None = field(init=False, default=None)
    _tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    _smtp: SmtpServer | None = field(init=False, default=None)
    _web: web.AppRunner | None = field(init=False, default=None)
    _hurry: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _lock: InstanceLock | None = field(init=False, default=None)
    metrics: Metrics = field(init=False, default_factory=Metrics)
    _warming: asyncio.Task[None] | None = field(init=False, default=None)

    async def start(self, *, client: FaxSender | None = None) -> None:
        try:
            await self._start(client)
        except BaseException:
            await self.stop(timeout=5)
            raise

    async def _start(self, client: FaxSender | None) -> None:
        """What can fail for a reason outside the service (a certificate, the data
        directory, the database, a port in use) fails with a ConfigError or StoreError that
        names it, which `fax-bridge serve` prints as its one line; nothing is logged before
        the listeners are bound but what a start does to the store."""
        s = self.settings
        data = s.data_path
        tls_context = self._tls()
        try:
            data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"data_dir: cannot create {data}: {exc.strerror}") from exc
        self._lock = InstanceLock(data)
        self._lock.acquire()
        # Operator commands (`retry`, `replay-quarantine`) send SIGUSR1 to the lock's PID.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.wake)
        db = data / "fax-bridge.sqlite3"
        try:
            self._store = await Store.open(db)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"data_dir: cannot open the database {db}: {exc}") from exc
        now = self.clock.now()
        await self.store.outbox.recover()
        for job_id in await self.store.jobs.recover(now, StatusRules(s.faxmax)):
            log.error("job %s: was being sent when fax-bridge stopped; marked unknown and not "
                      "resent (fax-bridge retry %s resends it)", job_id, job_id)
        found = await asyncio.to_thread(office.availability, s.documents)
        readable = await asyncio.to_thread(ocr.availability, s)
        self.pipeline = build_pipeline(
            s, self.store, self.clock, arrivals=self.arrivals, metrics=self.metrics,
            faxmax=client, tasks=lambda: {t.get_name(): t for t in self._tasks},
            office_availability=found, ocr_availability=readable)
        if self.pipeline.office is not None:  # LibreOffice starts while the rest does
            self._warming = asyncio.create_task(self.pipeline.office.warm_up(),
                                                name="office warm-up")
        # Files' times are the real clock's, whatever clock the service is given.
        spool = self.pipeline.smtp_handler.spool_dir
        if orphans := await asyncio.to_thread(remove_orphans, spool,
                                              await self.store.upkeep.spool_names(), time.time()):
            log.info("spool: removed %d file(s) in %s that no mail refers to (a connection "
                     "lost before its mail was stored): %s", len(orphans), spool,
                     ", ".join(orphans))
        smtp_host, port = parse_listen(s.smtp.listen, "smtp.listen")
        try:
            self._smtp = await start_smtp_server(self.pipeline.smtp_handler, smtp_host, port,
                                                 tls_context=tls_context)
        except OSError as exc:
            raise ConfigError(f"smtp.listen: cannot listen on {s.smtp.listen}: "
                              f"{exc.strerror}") from exc
        self.smtp_port = self._smtp.port

        app = build_web_app(s.http, pushes=self.pipeline.pushes, metrics=self.metrics,
                            health=self.pipeline.health, arrivals=self.arrivals)
        self._web = web.AppRunner(app, access_log=None, shutdown_timeout=s.shutdown_timeout)
        await self._web.setup()
        host, port = parse_listen(s.http.listen, "http.listen")
        site = web.TCPSite(self._web, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"http.listen: cannot listen on {s.http.listen}: "
                              f"{exc.strerror}") from exc
        self.http_port = self._web.addresses[0][1]
        # The workers start once both ports are bound: a start that fails on one has done
        # nothing (no provider called, no mail sent) and says one thing.
        for worker in self.pipeline.workers:
            self._tasks.append(asyncio.create_task(worker.run(), name=worker.name))
        log.info("office conversion %s", found.describe())
        log.info("OCR of received faxes %s", readable.describe())
        log.info("fax-bridge listening: SMTP %s:%d, HTTP %s:%d", smtp_host, self.smtp_port, host,
                 self.http_port)

    @property
    def workers(self) -> list[Worker]:
        """The running workers: what an operator's SIGUSR1 wakes and a shutdown stops."""
        return self.pipeline.workers if self.pipeline is not None else []

    @property
    def store(self) -> Store:
        assert self._store is not None, "Bridge.start() has not run"
        return self._store

    def _tls(self) -> ssl.SSLContext | None:
        """STARTTLS's context; a file that cannot be read is named, with why."""
        s = self.settings.smtp
        if not s.tls_cert:
            return None
        for key, path in (("smtp.tls_cert", s.tls_cert), ("smtp.tls_key", s.tls_key)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(s.tls_cert, s.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"smtp.tls_cert / smtp.tls_key: {s.tls_cert} and {s.tls_key} are "
                              f"not a PEM certificate chain and its private key ({exc})") from exc
        return context

    def wake(self) -> None:
        """SIGUSR1 from an operator command: look at every queue now."""
        for worker in self.workers:
            worker.wake()

    def hurry(self) -> None:
        """A second SIGTERM: stop waiting for work in flight."""
        self._hurry.set()

    async def stop(self, timeout: float = 30.0) -> bool:
        """Stop accepting, let mails being received and pushes being stored finish within
        `timeout`, and FaxMAX calls in flight until their answer is recorded (at most
        `faxmax.timeout` and a little, `Sender.answered_within`), or until `hurry()`; then
        cancel the rest and close. Returns whether everything finished: what was cancelled
        counts as a crash at the next start (a fax caught being handed to FaxMAX becomes
        `unknown`)."""
        for worker in self.workers:
            worker.stop()
        draining = list(self._tasks)
        if self._smtp is not None:
            draining.append(asyncio.create_task(self._smtp.drain(), name="smtp sessions"))
        if self._web is not None:
            draining.append(asyncio.create_task(self._web.cleanup(), name="http requests"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sending, sending_deadline = None, deadline
        if self.pipeline is not None:
            sending = next(
                (t for t in self._tasks if t.get_name() == self.pipeline.sender.name), None)
            sending_deadline = max(deadline, loop.time() + self.pipeline.sender.answered_within)
        hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
        cut: list[asyncio.Task[Any]] = []
        while (pending := {t for t in draining if not t.done() and t not in cut}):
            now = loop.time()
            due = {t: sending_deadline if t is sending else deadline for t in pending}
            overdue = [t for t in pending if hurry.done() or due[t] <= now]
            if overdue:
                self._cut_off(overdue)
                cut += overdue
                continue
            await asyncio.wait({*pending, hurry}, timeout=min(due.values()) - now,
                               return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        await asyncio.gather(*draining, return_exceptions=True)
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
        if self.pipeline is not None:
            await self.pipeline.sender.abandon()
            await self.pipeline.close()
        if self._store is not None:
            await self._store.close()
        if self._lock is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
            self._lock.release()
        return not cut

    def _cut_off(self, tasks: list[asyncio.Task[Any]]) -> None:
        if self._smtp is not None:
            self._smtp.abort()
        for task in tasks:
            log.warning("shutdown: %s did not finish; cancelled (it is redone or reported as "
                        "unknown at the next start)", task.get_name())
            task.cancel()


def freeze_startup_heap() -> None:
    """Leave what startup built out of the garbage collector's full passes.

    The modules, compiled templates, servers and pools built at startup live as long as the
    process: some 64 000 objects. In the collector's oldest generation, every full collection
    walked all of them, about 30 ms on the 2-core machine of bench/RESULTS.md, and one came
    every second or so under a stream of mail, landing on the `250` of whichever mail was
    being answered. Frozen (`gc.freeze`, as the sandbox's children do with what the
    forkserver imported), a full collection walks only what was made since: 0.3 ms. Objects
    made later are collected as before."""
    gc.collect()  # what startup left as garbage is freed, not frozen
    gc.freeze()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT; a second one stops without waiting for work in flight."""
    bridge = Bridge(settings)
    await bridge.start()
    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            log.warning("fax-bridge: second stop signal; cancelling work in flight")
            bridge.hurry()
        stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    freeze_startup_heap()
    await stopping.wait()
    log.info("fax-bridge stopping: no new mail or pushes are accepted; work in flight has up "
             "to %gs to finish, FaxMAX calls up to %gs (signal again to stop at once)",
             settings.shutdown_timeout, settings.faxmax.timeout)
    if await bridge.stop(settings.shutdown_timeout):
        log.info("fax-bridge stopped cleanly")
    else:
        log.warning("fax-bridge stopped with work cut off; it is recovered at the next start")
