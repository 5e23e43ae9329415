"""Full-size load runs L1 (SMTP intake) and L3 (webhook burst) of docs/RELIABILITY.md against the
real `fax-bridge serve` process.

Each run starts a fresh service (`tests.process.ServeProcess`, so a fresh database and a fresh
peak-RSS counter) on loopback, with the test settings of `tests.settings.settings_for` and the
load generators of `tests/loadgen.py`:

- L1: like `smtp-source -s S -m M -l L`, S sessions each send M mails one after another, a new
  connection for every mail (smtp-source's default), to 0312345678@fax.local. The FaxMAX
  simulator is paused, so sends pile up. A fax gateway refuses mail without a document, so each
  mail carries one: a one-page PDF in the ~2 KB mails, a photo-like PNG in the ~1 MB ones.
  Printed: msg/s, p50/p99 from the final `.` to its reply, the service's RSS before the load
  and its peak (VmHWM) after it.
- L3: POSTs of `make_burst` (1-10 INCOMING_FAX events each, ~10% with a large TIFF, ~20% exact
  replays, ~10% events repeated within their array) at concurrency 20. Printed: req/s, p50/p99,
  answers by status, duplicate-suppressed events (those the service counted but did not store
  again), stored faxes against unique ids, and the time until every fax's email reached an
  in-process SMTP relay.

    .venv/bin/python bench/load.py                 # L1 (all three runs), then L3
    .venv/bin/python bench/load.py --only l3 --posts 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from aiosmtpd.smtp import SMTP

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile
from bridge.config import HttpSettings
from bridge.simulators import FaxMaxSimulator
from tests.loadgen import (
    NO_SENDING_LIMITS,
    ROUTED_TO,
    large_mail,
    make_burst,
    post_all,
    queued_job_ids,
    small_mail,
    smtp_session,
)
from tests.process import ServeProcess
from tests.relay import RelaySink
from tests.settings import settings_for

L1_RUNS = ((1, 1000, 2000), (10, 2000, 2000), (4, 100, 1_000_000))
"""(sessions, mails per session, bytes per mail), as docs/RELIABILITY.md L1 gives them."""


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def spread(seconds: Sequence[float]) -> str:
    p50, p99, top = (1000 * x for x in (percentile(seconds, 50), percentile(seconds, 99),
                                         max(seconds)))
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms"


def service_pid(p: ServeProcess) -> int:
    assert p.proc is not None
    return p.proc.pid


async def l1(sessions: int, mails: int, size: int, per_connection: int) -> None:
    simulator = FaxMaxSimulator(token="sim-token")
    await simulator.start()
    simulator.pause()
    if size >= 100_000:  # one large mail per session, sent over and over, as smtp-source does
        batches = [[large_mail(s, size)] * mails for s in range(sessions)]
    else:
        batches = [[small_mail(s, n, size) for n in range(mails)] for s in range(sessions)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), simulator.url, numbers=NO_SENDING_LIMITS,
                                faxmax={"timeout": 3600.0})
        p = ServeProcess(settings, Path(tmp))
        await p.start()
        try:
            idle = proc_kb(service_pid(p), "VmRSS")
            started = time.perf_counter()
            outcomes = await asyncio.gather(*(
                smtp_session(p.smtp_port, batch, per_connection=per_connection)
                for batch in batches))
            elapsed = time.perf_counter() - started
            peak = proc_kb(service_pid(p), "VmHWM")
            stored = int(str(p.query("SELECT COUNT(*) FROM messages")[0][0]))
        finally:
            await simulator.stop()
            await p.stop()
    results = [r for outcome in outcomes for r in outcome]
    codes = Counter(r.code for r in results)
    latencies = [r.latency for r in results if r.latency is not None]
    accepted = sum(1 for r in results if queued_job_ids(r))
    print(f"L1 -s {sessions} -m {mails} -l {size} (mail {len(batches[0][0])} bytes, "
          f"{per_connection} per connection)")
    print(f"  {accepted} of {len(results)} mails accepted in {elapsed:.2f} s = "
          f"{accepted / elapsed:.1f} msg/s; replies {dict(sorted(codes.items()))} (0: none, "
          f"the connection was lost); stored {stored} for {accepted} x 250")
    print(f"  final '.' -> reply: {spread(latencies)}")
    print(f"  service RSS before {idle / 1024:.1f} MB, peak {peak / 1024:.1f} MB "
          f"(+{(peak - idle) / 1024:.1f} MB)")
    for r in [r for r in results if r.code != 250][:3]:
        print(f"  e.g. {r.stage}: {r.code} {r.text}")


async def l3(posts: int, concurrency: int, max_body_bytes: int) -> None:
    simulator = FaxMaxSimulator(token="sim-token")
    await simulator.start()
    relay = RelaySink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(relay, loop=loop), "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    burst = make_burst(simulator, posts)
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), simulator.url, relay.port,
                                http={"max_body_bytes": max_body_bytes},
                                routing={"default": (ROUTED_TO,)})
        p = ServeProcess(settings, Path(tmp))
        await p.start()
        try:
            idle = proc_kb(service_pid(p), "VmRSS")
            started = time.perf_counter()
            results = await post_all(p.push_url, burst.bodies, concurrency=concurrency)
            elapsed = time.perf_counter() - started
            stored = int(str(p.query("SELECT COUNT(*) FROM inbound")[0][0]))
            await relay.wait_for(stored, timeout=1200)
            drained = time.perf_counter() - started
            peak = proc_kb(service_pid(p), "VmHWM")
            errors = p.log().count(" ERROR ")
        finally:
            await p.stop()
            await simulator.stop()
            server.close()
            await server.wait_closed()
    ok = [(ids, r) for ids, r in zip(burst.fax_ids, results, strict=True) if r.status == 200]
    unique = {i for ids, _ in ok for i in ids}
    suppressed = sum(r.faxes - r.new for _, r in ok)
    latencies = [r.latency for r in results]
    statuses = Counter(r.status for r in results)
    emails = Counter(m.message["Message-ID"] for m in relay.messages)
    print(f"L3 {posts} POSTs at concurrency {concurrency} "
          f"({sum(len(b) for b in burst.bodies) / 1e6:.0f} MB, {burst.replays} replays, "
          f"{burst.large} with a large TIFF, largest {max(map(len, burst.bodies)) / 1e6:.2f} MB)")
    print(f"  {posts / elapsed:.1f} req/s ({elapsed:.2f} s); "
          f"answers {dict(sorted(statuses.items()))}; "
          f"latency {spread(latencies)}")
    print(f"  events in 200-answered POSTs {sum(r.faxes for _, r in ok)}, duplicate-suppressed "
          f"{suppressed}; stored faxes {stored}, unique ids in 200-answered POSTs {len(unique)}")
    print(f"  emails at the relay {len(relay.messages)} ({len(emails)} distinct Message-IDs) "
          f"after {drained:.1f} s; ERROR lines in the service log: {errors}")
    print(f"  service RSS before {idle / 1024:.1f} MB, peak {peak / 1024:.1f} MB "
          f"(+{(peak - idle) / 1024:.1f} MB)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("l1", "l3"))
    parser.add_argument("--per-connection", type=int, default=1,
                        help="L1 mails per SMTP connection (smtp-source -d sends all on one)")
    parser.add_argument("--posts", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--max-body-bytes", type=int, default=HttpSettings().max_body_bytes)
    args = parser.parse_args()
    if args.only != "l3":
        for sessions, mails, size in L1_RUNS:
            await l1(sessions, mails, size, args.per_connection)
    if args.only != "l1":
        await l3(args.posts, args.concurrency, args.max_body_bytes)


if __name__ == "__main__":
    asyncio.run(main())
