"""The HTTP side: FaxMAX's push endpoint, `/healthz` and `/metrics`.

A wrong token gets 404 and writes nothing. A push is answered 2xx only after everything in it is
committed (see `bridge.ingress.pushes`); a full disk answers 503, so FaxMAX retries later.
`/healthz` answers 503 with the reasons, one per line, when a person must act (`bridge.health`);
`/metrics` answers only to `http.metrics_allow_from` (loopback by default), 403 to others.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from bridge.config import HttpSettings, in_networks, parse_networks
from bridge.health import Health
from bridge.ingress.arrivals import Arrivals
from bridge.ingress.pushes import PushProcessor
from bridge.metrics import Metrics
from bridge.providers.faxmax import PROVIDER
from bridge.store import is_disk_full

log = logging.getLogger(__name__)


def build_web_app(
    settings: HttpSettings, *, pushes: PushProcessor, metrics: Metrics, health: Health,
    arrivals: Arrivals,
) -> web.Application:
    token = settings.push_token.encode()
    allow_from = parse_networks(settings.push_allow_from, "http.push_allow_from")
    metrics_from = parse_networks(settings.metrics_allow_from, "http.metrics_allow_from")

    async def push(request: web.Request) -> web.Response:
        """Counted by the status it is answered with, refusals included."""
        try:
            response = await store_push(request)
        except web.HTTPException as exc:
            metrics.pushes.labels(str(exc.status)).inc()
            raise
        except Exception:
            metrics.pushes.labels("500").inc()
            raise
        metrics.pushes.labels(str(response.status)).inc()
        return response

    async def store_push(request: web.Request) -> web.Response:
        given = request.match_info["token"].encode()
        if not token or not hmac.compare_digest(given, token):
            log.warning("push from %s refused (404): the token in the URL is wrong; FaxMAX's "
                        "notification URL must end in /faxmax/push/<http.push_token>",
                        request.remote)
            raise web.HTTPNotFound()
        if allow_from and not in_networks(request.remote or "", allow_from):
            log.warning("push from %s refused: not in http.push_allow_from", request.remote)
            raise web.HTTPForbidden(text="source address not allowed\n")
        arrivals.note()  # a push is on its way
        body = await request.read()
        try:
            with arrivals.answering():  # conversions wait: FaxMAX waits for this answer
                outcome = await pushes.process(body)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("push: out of storage, answered 503 so FaxMAX retries: %s", exc)
                raise web.HTTPServiceUnavailable(text="out of storage, retry later\n") from exc
            raise
        metrics.duplicates.labels(PROVIDER, "fax").inc(outcome.faxes - len(outcome.new_fax_ids))
        metrics.duplicates.labels(PROVIDER, "status").inc(
            outcome.status_events - outcome.new_status_events)
        return web.json_response({
            "status_events": outcome.status_events, "faxes": outcome.faxes,
            "new": outcome.new_status_events + len(outcome.new_fax_ids),
            "quarantined": len(outcome.quarantined)})

    async def healthz(request: web.Request) -> web.Response:
        problems = await health.problems()
        if problems:
            log.warning("healthz: unhealthy: %s", "; ".join(problems))
            return web.Response(status=503, text="".join(f"unhealthy: {p}\n" for p in problems))
        return web.Response(text="ok\n")

    async def scrape(request: web.Request) -> web.Response:
        """Only to `http.metrics_allow_from`: the listener faces FaxMAX, and a scrape costs a
        dozen counts in the store."""
        peer = request.remote or "?"
        if not in_networks(peer, metrics_from):
            raise web.HTTPForbidden(
                text=f"{peer} may not read /metrics: it is not in http.metrics_allow_from\n")
        snapshot = await pushes.store.upkeep.snapshot(pushes.clock.now())
        body, content_type = metrics.render(snapshot, health.workers(), await health.problems(),
                                            request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/faxmax/push/{token}", push)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)
    return app
