"""The HTTP side: FaxMAX's push endpoint, `/healthz` and `/metrics`.

A wrong token gets 404 and writes nothing. A push is answered 2xx only after everything in it is
committed (see `bridge.ingress.pushes`); a full disk answers 503, so FaxMAX retries later.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from bridge.config import HttpSettings, in_networks, parse_networks
from bridge.ingress.pushes import PushProcessor
from bridge.store import InboundState, JobState, Store, is_disk_full

log = logging.getLogger(__name__)


def build_web_app(
    settings: HttpSettings, *, store: Store, pushes: PushProcessor
) -> web.Application:
    token = settings.push_token.encode()
    allow_from = parse_networks(settings.push_allow_from, "http.push_allow_from")

    async def push(request: web.Request) -> web.Response:
        given = request.match_info["token"].encode()
        if not token or not hmac.compare_digest(given, token):
            raise web.HTTPNotFound()
        if allow_from and not in_networks(request.remote or "", allow_from):
            log.warning("push from %s refused: not in http.push_allow_from", request.remote)
            raise web.HTTPForbidden(text="source address not allowed\n")
        body = await request.read()
        try:
            outcome = await pushes.process(body)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("push: out of storage, answered 503 so FaxMAX retries: %s", exc)
                raise web.HTTPServiceUnavailable(text="out of storage, retry later\n") from exc
            raise
        return web.json_response({
            "status_events": outcome.status_events, "faxes": outcome.faxes,
            "new": outcome.new_status_events + len(outcome.new_fax_ids),
            "quarantined": len(outcome.quarantined)})

    async def healthz(request: web.Request) -> web.Response:
        await store.job_counts()
        return web.Response(text="ok\n")

    async def metrics(request: web.Request) -> web.Response:
        lines = ["# HELP fax_bridge_jobs Outgoing fax jobs by state.",
                 "# TYPE fax_bridge_jobs gauge"]
        jobs = await store.job_counts()
        lines += [f'fax_bridge_jobs{{state="{s}"}} {jobs.get(s, 0)}' for s in JobState]
        lines += ["# HELP fax_bridge_inbound Received faxes by state.",
                  "# TYPE fax_bridge_inbound gauge"]
        inbound = await store.inbound_counts()
        lines += [f'fax_bridge_inbound{{state="{s}"}} {inbound.get(s, 0)}' for s in InboundState]
        lines += ["# HELP fax_bridge_outbox Outgoing emails by state.",
                  "# TYPE fax_bridge_outbox gauge"]
        mails = await store.mail_counts()
        lines += [f'fax_bridge_outbox{{state="{s}"}} {n}' for s, n in sorted(mails.items())]
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/faxmax/push/{token}", push)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
