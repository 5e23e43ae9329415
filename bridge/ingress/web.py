"""The HTTP side: FaxMAX's push endpoint, `/healthz` and `/metrics`.

A push is answered 2xx only after everything in it is committed; what cannot be understood is
kept raw in quarantine and still answered 2xx, because FaxMAX retries whatever is not, and a
body that will never parse must not become an endless retry storm. A wrong token gets 404 and
writes nothing.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from aiohttp import web

from bridge.clock import Clock
from bridge.config import HttpSettings, in_networks, parse_networks
from bridge.providers.faxmax import parse_push
from bridge.store import JobState, Store, is_disk_full

log = logging.getLogger(__name__)


def build_web_app(
    settings: HttpSettings, *, store: Store, clock: Clock,
    classify: Callable[[str], JobState | None], on_status: Callable[[], None],
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
        batch = parse_push(body)
        now = clock.now()
        try:
            new = await store.add_status_events(batch.status_events, now, classify)
            kept = [(raw, reason) for raw, reason in batch.bad]
            kept += [(str(event), "INCOMING_FAX events are kept for replay; this version does "
                      "not deliver received faxes yet") for event in batch.incoming]
            for raw, reason in kept:
                qid = await store.quarantine("faxmax-push", reason, raw.encode(), now)
                log.warning("push: quarantined as %s: %s", qid, reason)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("push: out of storage, answered 503 so FaxMAX retries: %s", exc)
                raise web.HTTPServiceUnavailable(text="out of storage, retry later\n") from exc
            raise
        for event in batch.status_events:
            log.info("push: fax %s status %s%s", event.fax_id, event.status,
                     "" if new else " (repeat)")
        if new:
            on_status()
        return web.json_response({"accepted": len(batch.status_events), "new": new,
                                  "quarantined": len(kept)})

    async def healthz(request: web.Request) -> web.Response:
        await store.job_counts()
        return web.Response(text="ok\n")

    async def metrics(request: web.Request) -> web.Response:
        lines = ["# HELP fax_bridge_jobs Outgoing fax jobs by state.",
                 "# TYPE fax_bridge_jobs gauge"]
        jobs = await store.job_counts()
        lines += [f'fax_bridge_jobs{{state="{s}"}} {jobs.get(s, 0)}' for s in JobState]
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
