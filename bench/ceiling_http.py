"""The ceiling for the webhook benchmark: the least a durable FaxMAX push endpoint can do.

A bare aiohttp handler on `POST /faxmax/push/<token>` that JSON-decodes the push (a JSON array
of events, or one event), base64-decodes the TIFF of every `INCOMING_FAX` event and does
`INSERT OR IGNORE` + commit per request into SQLite through aiosqlite, opened as fax-bridge
opens its store (WAL, `synchronous=FULL`, autocommit off between requests, one connection).
Only then does it answer 200, so it keeps the bridge's promise (2xx only after the data is
durable) and nothing else: no fax file, no logging, no metrics, no background work.

`bench/webhook.py` runs it as its own process and compares `fax-bridge serve` against it. The
requests are serialised by a lock, as the bridge's single writer is: without it, concurrent
requests on the one connection would share an implicit transaction and one `COMMIT` would cover
several pushes, which is a group commit, not the one-commit-per-request ceiling measured here.

    .venv/bin/python bench/ceiling_http.py --port 0 --db /tmp/ceiling.sqlite3

prints `ceiling-http listening on http://127.0.0.1:PORT/faxmax/push/TOKEN` once it is bound,
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import signal
from pathlib import Path
from typing import Any

import aiosqlite
from aiohttp import web

SCHEMA = """CREATE TABLE IF NOT EXISTS inbound (
    external_id TEXT PRIMARY KEY,
    receiving_number TEXT NOT NULL,
    sender_number TEXT NOT NULL,
    tiff BLOB NOT NULL
)"""


def build_app(db: aiosqlite.Connection, token: str, max_body_bytes: int) -> web.Application:
    lock = asyncio.Lock()

    async def push(request: web.Request) -> web.Response:
        if request.match_info["token"] != token:
            raise web.HTTPNotFound()
        try:
            doc: Any = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON\n") from None
        events = [doc] if isinstance(doc, dict) else doc
        if not isinstance(events, list):
            raise web.HTTPBadRequest(text="not a JSON array\n")
        rows = []
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "INCOMING_FAX":
                continue
            try:
                tiff = base64.b64decode(event["content"], validate=True)
            except (KeyError, TypeError, binascii.Error, ValueError):
                raise web.HTTPBadRequest(text="bad content\n") from None
            rows.append((str(event["id"]), str(event.get("cld", "")),
                         str(event.get("cli", "")), tiff))
        new = 0
        async with lock:
            for row in rows:
                cur = await db.execute(
                    "INSERT OR IGNORE INTO inbound (external_id, receiving_number,"
                    " sender_number, tiff) VALUES (?, ?, ?, ?)", row)
                new += cur.rowcount
            await db.commit()
        return web.json_response({"faxes": len(rows), "new": new})

    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post("/faxmax/push/{token}", push)
    return app


async def serve(host: str, port: int, db_path: Path, token: str, max_body_bytes: int) -> None:
    # The default isolation level: the INSERT opens a transaction and `commit()` ends it.
    db = await aiosqlite.connect(db_path)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute(SCHEMA)
        await db.commit()
        runner = web.AppRunner(build_app(db, token, max_body_bytes), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        print(f"ceiling-http listening on http://{bound[0]}:{bound[1]}/faxmax/push/{token}",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (created)")
    parser.add_argument("--token", default="ceiling-push-token")
    parser.add_argument("--max-body-bytes", type=int, default=52_428_800,
                        help="as fax-bridge's http.max_body_bytes default")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.db, args.token, args.max_body_bytes))


if __name__ == "__main__":
    main()
