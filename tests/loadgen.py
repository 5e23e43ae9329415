"""The load generators of L1 (SMTP intake) and L3 (webhook burst): the mails and push bodies,
and the clients that send them and time each answer. tests/test_load.py runs them CI-sized,
bench/ full-size.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.policy import SMTP
from functools import cache

import aiohttp
from PIL import Image

from bridge.simulators import FaxMaxSimulator
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail

FAX_RCPT = "0312345678@fax.local"
SENDER = "alice@example.com"
RECEIVING_NUMBER = "902121110000"
ROUTED_TO = "frontdesk@example.com"
NO_SENDING_LIMITS = {
    # L1 is about intake: the per-sender and gateway caps would refuse a load test by design.
    "max_faxes_per_sender_per_hour": 10_000_000,
    "max_faxes_per_hour": 10_000_000,
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
