"""Load tests L1 (SMTP intake) and L3 (webhook burst) of RELIABILITY.md, against the real
`fax-bridge serve` process.

They check the first rules of DESIGN.md under concurrency, where a race on a shared resource
would show: what is acknowledged (SMTP `250`, push `200`) is exactly what is stored, and what is
stored is acted on exactly once. The sizes are CI-sized; `bench/load.py` runs the full-size
loads with the same generators and records speed and memory, which the tests never assert.

The generators are module-level functions so that `bench/load.py` can import them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.policy import SMTP
from functools import cache
from pathlib import Path

import aiohttp
from PIL import Image

from bridge.simulators import FaxMaxSimulator
from tests.conftest import RelaySink, fax_mail, settings_for
from tests.docfactory import make_pdf, make_tiff
from tests.process import ServeProcess

FAX_RCPT = "0312345678@fax.local"
SENDER = "alice@example.com"
RECEIVING_NUMBER = "902121110000"
ROUTED_TO = "frontdesk@example.com"
NO_SENDING_LIMITS = {
    # L1 is about intake: the per-sender and gateway caps would refuse a load test by design.
    "max_faxes_per_sender_per_hour": 10_000_000,
    "max_pages_per_sender_per_day": 10_000_000,
    "max_pages_per_day": 10_000_000,
}
QUEUED = re.compile(r"^2\.0\.0 queued as fax jobs (\d+(?:, \d+)*)$")


# --- SMTP load generator ---------------------------------------------------------------------
# A small client of its own rather than aiosmtplib: `SMTP.data()` times the upload and the reply
# together, while L1 records the time from the final `.` alone (what RFC 5321 asks to be fast).


@dataclass(frozen=True)
class MailResult:
    """The verdict on one mail: the reply to the final `.`, or the first reply that refused it
    (`stage` says to which command; code 0 when no reply came at all). `latency` is from the
    final `.` to its reply."""

    code: int
    text: str
    stage: str
    latency: float | None = None
    replied_at: float | None = None  # `time.perf_counter()` when the reply to the `.` came


@cache
def small_pdf() -> bytes:
    return make_pdf(1)


def small_mail(session: int, n: int, size: int = 2000) -> bytes:
    """A mail of about `size` bytes as a client writes it: text plus a one-page PDF."""
    def build(body: str) -> bytes:
        msg = fax_mail(("invoice.pdf", "application/pdf", small_pdf()), body=body,
                       to=FAX_RCPT, sender=SENDER, subject=f"Invoice {session}-{n}",
                       message_id=f"<load-{session}-{n}@example.com>")
        return msg.as_bytes(policy=SMTP)

    short = build("Please fax this.\n")
    return build("Please fax this.\n" + "x" * max(0, size - len(short) - 1) + "\n")


def large_mail(n: int, size: int = 1_000_000) -> bytes:
    """A mail of about `size` bytes: a photo-like PNG (random grey pixels, so it does not
    compress) that the converter will really turn into a fax page."""
    side = int((size * 3 / 4) ** 0.5)
    pixels = random.Random(n).randbytes(side * side)
    buffer = io.BytesIO()
    Image.frombytes("L", (side, side), pixels).save(buffer, format="PNG", compress_level=0)
    msg = fax_mail(("scan.png", "image/png", buffer.getvalue()), to=FAX_RCPT, sender=SENDER,
                   subject=f"Scan {n}", message_id=f"<load-large-{n}@example.com>")
    return msg.as_bytes(policy=SMTP)


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    """One reply, its continuation lines (`250-...`) joined."""
    lines: list[bytes] = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("the server closed the connection")
        lines.append(line.rstrip(b"\r\n"))
        if line[3:4] != b"-":
            return int(lines[-1][:3]), b" ".join(x[4:] for x in lines).decode(errors="replace")


def dot_stuffed(mail: bytes) -> bytes:
    """The DATA bytes for `mail` (CRLF line ends), without the terminating `.` line."""
    body = re.sub(rb"(?m)^\.", b"..", mail)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


async def send_on_one_connection(
    port: int, data: Sequence[bytes], *, mail_from: str, rcpt: str,
    late_dot: Callable[[], None] = lambda: None,
) -> list[MailResult]:
    """Send mails over one SMTP connection, as an MTA with a cached connection does. `data` holds
    each mail's DATA bytes, dot-stuffed, without the terminating `.` line: that line is written
    alone once the kernel has taken the rest, and the clock starts then. Should it not fit the
    socket buffer at once, `late_dot()` is called and the clock starts when it has gone."""
    results: list[MailResult] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return [MailResult(0, repr(exc), "connect")] * len(data)
    transport = writer.transport
    assert isinstance(transport, asyncio.WriteTransport)
    transport.set_write_buffer_limits(high=0)  # drain() returns once the kernel has it all
    try:
        async def command(line: str) -> tuple[int, str]:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            return await _reply(reader)

        code, text = await _reply(reader)
        if code == 220:
            code, text = await command("EHLO load.example")
        if code != 250:
            return [MailResult(code, text, "greeting")] * len(data)
        for body in data:
            refused: MailResult | None = None
            for stage, line, wanted in (("MAIL", f"MAIL FROM:<{mail_from}>", 250),
                                        ("RCPT", f"RCPT TO:<{rcpt}>", 250),
                                        ("DATA", "DATA", 354)):
                code, text = await command(line)
                if code != wanted:
                    refused = MailResult(code, text, stage)
                    break
            if refused is not None:
                results.append(refused)
                if refused.code == 421:  # the server is closing the connection
                    break
                await command("RSET")
                continue
            writer.write(body)
            await writer.drain()
            writer.write(b".\r\n")
            started = time.perf_counter()
            if transport.get_write_buffer_size():
                late_dot()
                await writer.drain()
                started = time.perf_counter()
            code, text = await _reply(reader)
            replied_at = time.perf_counter()
            results.append(MailResult(code, text, "end of data", replied_at - started,
                                      replied_at))
        with contextlib.suppress(OSError):  # every mail has its verdict already
            await command("QUIT")
    except OSError as exc:  # ConnectionError included: a reset, or closed mid-dialogue
        results.append(MailResult(0, repr(exc), "connection"))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    unsent = len(data) - len(results)
    return results + [MailResult(0, "not sent: the connection was lost", "connection")] * unsent


async def smtp_session(port: int, mails: Sequence[bytes], *, per_connection: int = 1,
                       mail_from: str = SENDER, rcpt: str = FAX_RCPT) -> list[MailResult]:
    """One smtp-source session: the mails one after another, a new connection every
    `per_connection` mails (smtp-source's default is a new connection for each mail)."""
    results: list[MailResult] = []
    for start in range(0, len(mails), per_connection):
        results += await send_on_one_connection(
            port, [dot_stuffed(m) for m in mails[start:start + per_connection]],
            mail_from=mail_from, rcpt=rcpt)
    return results


def queued_job_ids(result: MailResult) -> list[int]:
    """The job ids a `250` names; [] for any other reply."""
    found = QUEUED.match(result.text) if result.code == 250 else None
    return [int(i) for i in found[1].split(", ")] if found else []


# --- webhook burst generator -----------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    """POST bodies in sending order, and the INCOMING_FAX ids each carries (repeats included)."""

    bodies: tuple[bytes, ...]
    fax_ids: tuple[tuple[str, ...], ...]
    replays: int
    large: int


@cache
def small_tiff(pages: int) -> bytes:
    return make_tiff(pages)


@cache
def large_tiff(pages: int) -> bytes:
    """An uncompressed bilevel fax TIFF: about 0.5 MB per page, 0.66 MB base64."""
    return make_tiff(pages, compression="raw")


LARGE_PAGES = (4, 1, 3, 2)
"""Pages of the large TIFFs, in turn: 2.64, 0.66, 1.98 and 1.32 MB of base64."""


def make_burst(sim: FaxMaxSimulator, posts: int, *, seed: int = 3, max_items: int = 10,
               large_share: float = 0.1, replay_share: float = 0.2,
               duplicate_share: float = 0.1) -> Burst:
    """`posts` push bodies as FaxMAX sends them: each a JSON array of 1..`max_items`
    INCOMING_FAX events. About `replay_share` of the posts are byte-for-byte replays of one of
    the 20 posts before (so a replay often overlaps its original in flight, as a provider's
    retry after a timeout does); of the others, every (1/`large_share`)th carries one large
    TIFF (sizes in turn from `LARGE_PAGES`); about `duplicate_share` of the events are
    repeated within their array."""
    rng = random.Random(seed)
    bodies: list[bytes] = []
    fax_ids: list[tuple[str, ...]] = []
    replays = large = fresh = 0
    next_id = 0
    for _ in range(posts):
        if len(bodies) > 1 and rng.random() < replay_share:
            earlier = rng.randrange(max(0, len(bodies) - 20), len(bodies))
            bodies.append(bodies[earlier])
            fax_ids.append(fax_ids[earlier])
            replays += 1
            continue
        fresh += 1
        events = []
        items = rng.randint(1, max_items)
        carries_large = int(fresh * large_share) > int((fresh - 1) * large_share)
        big_slot = rng.randrange(items) if carries_large else -1
        for slot in range(items):
            next_id += 1
            if slot == big_slot:
                tiff = large_tiff(LARGE_PAGES[large % len(LARGE_PAGES)])
                large += 1
            else:
                tiff = small_tiff(rng.randint(1, 3))
            events.append(sim.incoming_event(tiff=tiff, cld=RECEIVING_NUMBER,
                                             cli=f"90312{rng.randrange(10**7):07d}",
                                             fax_id=f"load-{next_id}"))
            if rng.random() < duplicate_share:
                events.append(events[-1])
        bodies.append(json.dumps(events).encode())
        fax_ids.append(tuple(str(e["id"]) for e in events))
    return Burst(tuple(bodies), tuple(fax_ids), replays, large)


@dataclass(frozen=True)
class PushResult:
    status: int
    latency: float
    faxes: int  # INCOMING_FAX events the service counted in the body
    new: int  # of those, how many it stored for the first time


async def post_all(url: str, bodies: Sequence[bytes], *, concurrency: int) -> list[PushResult]:
    """POST every body, `concurrency` at a time; results in the order of `bodies`."""
    pending = iter(enumerate(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> list[tuple[int, PushResult]]:
            done = []
            for i, body in pending:  # shared: each body is taken by exactly one worker
                started = time.perf_counter()
                async with session.post(url, data=io.BytesIO(body),
                                        headers={"Content-Type": "application/json"}) as resp:
                    payload = await resp.read()
                    status = resp.status
                latency = time.perf_counter() - started
                answer = json.loads(payload) if status == 200 else {}
                done.append((i, PushResult(status, latency, int(answer.get("faxes", 0)),
                                           int(answer.get("new", 0)))))
            return done

        batches = await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [result for _, result in sorted(pair for batch in batches for pair in batch)]


# --- helpers for the tests -------------------------------------------------------------------


async def until(check: str, read: Callable[[], object], wanted: object,
                timeout: float) -> None:
    """Poll a store query until it returns `wanted`: the workers act in the background, and
    the store is the truth about what they did."""
    deadline = time.monotonic() + timeout
    while (value := read()) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{check}: still {value!r}, wanted {wanted!r}")
        await asyncio.sleep(0.1)


def count(p: ServeProcess, sql: str) -> int:
    return int(str(p.query(sql)[0][0]))


ERROR_LINE = re.compile(r" ERROR |^[A-Za-z_.]*(Error|Exception)\b")


def log_errors(p: ServeProcess) -> str:
    """The service's ERROR lines and exception lines, so a failure explains itself."""
    found = dict.fromkeys(line for line in p.log().splitlines() if ERROR_LINE.search(line))
    return "service log:\n" + "\n".join(list(found)[:20])


# --- the tests -------------------------------------------------------------------------------


async def test_l1_concurrent_smtp_intake_acknowledges_exactly_what_it_stores(
    tmp_path: Path, faxmax: FaxMaxSimulator
) -> None:
    """10 sessions x 30 mails of ~2 KB plus 4 mails of ~1 MB, all at once, while FaxMAX holds
    every send: each mail gets `250`, and each `250` is one stored message with the job it
    names, no more, no fewer."""
    faxmax.pause()
    # A long provider timeout keeps the held sends held: no job settles during the test.
    settings = settings_for(tmp_path, faxmax.url, numbers=NO_SENDING_LIMITS,
                            faxmax={"timeout": 120.0})
    p = ServeProcess(settings, tmp_path)
    await p.start()
    try:
        sessions = [[small_mail(s, n) for n in range(30)] for s in range(10)]
        sessions += [[large_mail(n)] for n in range(4)]
        outcomes = await asyncio.gather(*(smtp_session(p.smtp_port, mails, per_connection=30)
                                          for mails in sessions))
        results = [r for outcome in outcomes for r in outcome]

        refused = [r for r in results if r.code != 250]
        assert refused == [], f"{len(refused)} mail(s) refused, e.g. {refused[:3]}\n" + (
            log_errors(p))
        named = [queued_job_ids(r) for r in results]
        assert all(len(ids) == 1 for ids in named), [r.text for r in results][:5]
        assert count(p, "SELECT COUNT(*) FROM messages") == len(results)
        stored = [int(str(row[0])) for row in p.query("SELECT id FROM jobs ORDER BY id")]
        assert stored == sorted(i for ids in named for i in ids)
        assert p.query("SELECT DISTINCT number FROM jobs") == [("90312345678",)]
        await faxmax.wait_for_paused_calls(1, timeout=20)  # the sends really are piling up
        assert faxmax.faxes == []
        assert "Traceback" not in p.log(), log_errors(p)
    finally:
        await faxmax.stop()  # drops the held sends, so the service stops at once
        await p.stop()
    assert p.integrity() == "ok"


async def test_l3_webhook_burst_stores_and_mails_each_fax_once(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """60 pushes at concurrency 20 with replays, repeated ids and large TIFFs: every push is
    answered 200 (413 when over `http.max_body_bytes`), each fax id is stored once, and after
    the workers drain each fax is one email at the relay.

    60, not 120: the ~280 faxes take the inbox ~18 s to convert and mail on two cores (one
    sandboxed conversion at a time), which keeps this file well inside the CI budget."""
    limit = 2_500_000  # the 4-page large TIFFs are over it: the 413 path runs too
    settings = settings_for(tmp_path, faxmax.url, relay.port,
                            http={"max_body_bytes": limit},
                            routing={"default": (ROUTED_TO,)})
    burst = make_burst(faxmax, 60)
    p = ServeProcess(settings, tmp_path)
    await p.start()
    try:
        results = await post_all(p.push_url, burst.bodies, concurrency=20)

        expected = [413 if len(body) > limit else 200 for body in burst.bodies]
        assert 413 in expected and burst.replays > 0 and burst.large >= len(LARGE_PAGES)
        assert [r.status for r in results] == expected, log_errors(p)
        taken = [ids for ids, r in zip(burst.fax_ids, results, strict=True) if r.status == 200]
        unique = {i for ids in taken for i in ids}
        assert sum(r.faxes for r in results) == sum(len(ids) for ids in taken)
        assert sum(r.new for r in results) == len(unique)
        assert count(p, "SELECT COUNT(*) FROM inbound") == len(unique)
        assert {str(row[0]) for row in p.query("SELECT external_id FROM inbound")} == unique

        await relay.wait_for(len(unique), timeout=45)
        await until("inbound", lambda: p.query("SELECT state, COUNT(*) FROM inbound"
                                               " GROUP BY state"),
                    [("mailed", len(unique))], timeout=10)
        await until("outbox", lambda: p.query("SELECT state, COUNT(*) FROM outbox"
                                              " GROUP BY state"),
                    [("sent", len(unique))], timeout=10)
        message_ids = Counter(m.message["Message-ID"] for m in relay.messages)
        assert [mid for mid, n in message_ids.items() if n > 1] == []
        assert len(message_ids) == len(unique)
        assert {str(r[0]) for r in p.query("SELECT message_id FROM outbox")} == set(message_ids)
        assert all(m.rcpt_tos == [ROUTED_TO] for m in relay.messages)
        assert "Traceback" not in p.log(), log_errors(p)
    finally:
        await p.stop()
    assert p.integrity() == "ok"


async def test_l3_concurrent_replays_of_one_push_are_each_answered_200(
    tmp_path: Path, faxmax: FaxMaxSimulator, relay: RelaySink
) -> None:
    """A provider that gave up waiting sends the same push again while the first is still
    being stored: 20 copies of one push at once are each answered 200, and its 5 faxes are
    stored and mailed once."""
    settings = settings_for(tmp_path, faxmax.url, relay.port,
                            routing={"default": (ROUTED_TO,)})
    events = [faxmax.incoming_event(tiff=small_tiff(1), cld=RECEIVING_NUMBER,
                                    fax_id=f"replayed-{i}") for i in range(5)]
    p = ServeProcess(settings, tmp_path)
    await p.start()
    try:
        results = await post_all(p.push_url, [json.dumps(events).encode()] * 20,
                                 concurrency=20)

        assert [r.status for r in results] == [200] * 20, log_errors(p)
        assert sum(r.new for r in results) == 5
        assert count(p, "SELECT COUNT(*) FROM inbound") == 5
        await relay.wait_for(5)
        await until("outbox", lambda: p.query("SELECT state, COUNT(*) FROM outbox"
                                              " GROUP BY state"), [("sent", 5)], timeout=10)
        assert len({m.message["Message-ID"] for m in relay.messages}) == len(relay.messages) == 5
    finally:
        await p.stop()
    assert p.integrity() == "ok"
