"""Event-loop lag of the real service under hostile input that is not a bomb, only large
(issue 19, item 8): a 20 MB body of `&` faxed with a cover page, a 30 KB encoded non-ASCII
Subject faxed to 20 numbers (20 reports), and a 40 MB FaxMAX `INCOMING_FAX` push. The loop
must stay responsive: lag under 50 ms in each, from the first byte sent until the work it
causes is done (faxes accepted by FaxMAX, reports written, the received fax mailed).

The bridge runs in this process, on this loop (a `Bridge`, as `fax-bridge serve` runs it),
with a Maildir for its emails; a sampler sleeps 5 ms at a time and records how late it wakes.
Everything outside the bridge runs in other processes, so that its work is not counted: the
FaxMAX simulator (a child of this script, pushing each fax's status back), and the mail
client and the push client (one child per mail or push: `smtplib`, `urllib`).

    .venv/bin/python bench/loop_stalls.py
    .venv/bin/python bench/loop_stalls.py --only subject
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import smtplib
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import replace
from email.header import Header
from email.message import EmailMessage
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import command, loadavg, machine, product
from bridge.app import Bridge
from bridge.config import Settings
from bridge.simulators import FaxMaxSimulator
from bridge.store import InboundState, JobState

HERE = Path(__file__).resolve()
TOKEN = "push-token-0123456789abcdef"
CEILING_MS = 50.0
SAMPLE = 0.005


# --- the outside world, in other processes ---------------------------------------------------


async def _simulator_main() -> None:
    """The FaxMAX simulator: prints its URL, then reads the push URL from stdin."""
    sim = FaxMaxSimulator(token="t", push_delay=0.01, push_retry_interval=0.2)
    await sim.start()
    print(sim.url, flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    sim.push_url = line.strip()
    await loop.run_in_executor(None, sys.stdin.readline)  # EOF or a line: stop
    await sim.stop()


def _send_main(port: int, path: str, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.sendmail("alice@example.com", rcpts, Path(path).read_bytes())  # CRLF already


def _push_main(url: str, path: str) -> None:
    request = urllib.request.Request(url, data=Path(path).read_bytes(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()


async def _child(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(HERE), *args)
    if await proc.wait():
        raise RuntimeError(f"{' '.join(args[:1])} failed with exit {proc.returncode}")


# --- the inputs ------------------------------------------------------------------------------


def _pdf() -> bytes:
    out = io.BytesIO()
    Image.new("1", (1728, 2200), 1).save(out, "PDF", resolution=200)
    return out.getvalue()


def ampersand_mail(mb: int) -> bytes:
    """A 1-page PDF and a body of `mb` MB of `&`, in 76-character lines (7bit)."""
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "02122222525@fax.local"
    msg["Subject"] = "cover"
    msg.set_content(("&" * 76 + "\n") * (mb * 2**20 // 77), cte="7bit")
    msg.add_attachment(_pdf(), maintype="application", subtype="pdf", filename="a.pdf")
    return _crlf(msg.as_bytes())


def _crlf(mail: bytes) -> bytes:
    """smtplib sends bytes as they are: line ends must be CRLF already."""
    return mail.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def subject_mail(kb: int) -> bytes:
    """A 1-page PDF under a Subject of `kb` KB once RFC 2047-encoded, non-ASCII throughout."""
    words = " ".join(["ğüşiöç çalışma ödeme"] * 10_000)
    header = Header(words, "utf-8").encode()
    cut = header[: kb * 1024].rsplit("\n", 1)[0]  # whole encoded words only
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "02122222525@fax.local"
    raw = msg.as_bytes().rstrip(b"\n")
    msg = EmailMessage()
    msg.set_content("\n")
    msg.add_attachment(_pdf(), maintype="application", subtype="pdf", filename="a.pdf")
    body = msg.as_bytes()
    return _crlf(raw + b"\nSubject: " + cut.encode() + b"\nMessage-ID: <s@example.com>\n"
                 + body)


def incoming_push(mb: int) -> bytes:
    """An INCOMING_FAX push of about `mb` MB: a TIFF of uncompressed 1-bit noise pages."""
    rng = random.Random(19)
    page = 1728 * 2292 // 8
    frames = [Image.frombytes("1", (1728, 2292), rng.randbytes(page))
              for _ in range(max(1, mb * 2**20 * 3 // 4 // page))]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], dpi=(204, 196))
    event = {"type": "INCOMING_FAX", "id": "in-1", "cli": "902125550000", "cld": "902122222525",
             "status": "SUCCESS", "page_count": len(frames),
             "content": base64.b64encode(out.getvalue()).decode()}
    return json.dumps([event]).encode()


# --- the measurement -------------------------------------------------------------------------


async def _sample(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(SAMPLE)
        lags.append(time.perf_counter() - started - SAMPLE)


async def _until(read: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await read():
        if time.monotonic() > deadline:
            raise RuntimeError("the work did not finish in time")
        await asyncio.sleep(0.05)


async def measure(name: str, bridge: Bridge, start: Callable[[], Awaitable[None]],
                  done: Callable[[], Awaitable[bool]], size: str) -> bool:
    lags: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(lags, stop))
    started = time.perf_counter()
    await start()
    await _until(done, 300)
    elapsed = time.perf_counter() - started
    stop.set()
    await sampler
    worst = max(lags) * 1000
    verdict = "ok" if worst < CEILING_MS else "OVER"
    print(f"{name} ({size}): {elapsed:.1f} s; loop lag max {worst:.1f} ms, p99 "
          f"{statistics.quantiles(lags, n=100)[98] * 1000:.1f} ms over {len(lags)} samples "
          f"[{verdict}: ceiling {CEILING_MS:.0f} ms]", flush=True)
    return worst < CEILING_MS


async def main(only: set[str], body_mb: int, subject_kb: int, numbers: int, push_mb: int) -> int:
    print(machine())
    print(product())
    print(f"command: {command()}")
    print(f"load before: {loadavg()}", flush=True)
    sim = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE), "simulator", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert sim.stdin is not None and sim.stdout is not None
    sim_url = (await sim.stdout.readline()).decode().strip()
    try:
        return await _run(sim_url, sim.stdin, only, body_mb, subject_kb, numbers, push_mb)
    finally:
        sim.stdin.close()
        await sim.wait()
        print(f"load after: {loadavg()}")


async def _run(sim_url: str, sim_stdin: asyncio.StreamWriter, only: set[str], body_mb: int,
               subject_kb: int, numbers: int, push_mb: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings()
        settings = replace(
            base, data_dir=tmp,
            smtp=replace(base.smtp, listen="127.0.0.1:0", trusted_networks=("127.0.0.0/8",)),
            http=replace(base.http, listen="127.0.0.1:0", push_token=TOKEN),
            faxmax=replace(base.faxmax, enabled=True, url=sim_url, token="t",
                           cover_page="always"),
            numbers=replace(base.numbers, max_faxes_per_sender_per_hour=1000,
                            max_pages_per_sender_per_day=100_000),
            routing=replace(base.routing, default=("office@example.com",),
                            admin="admin@example.com"),
            mail=replace(base.mail, report_to_sender="always"))
        bridge = Bridge(settings)
        await bridge.start()
        push_url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{TOKEN}"
        sim_stdin.write(push_url.encode() + b"\n")
        await sim_stdin.drain()
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        try:
            ok = await _scenarios(bridge, push_url, inputs, only, body_mb, subject_kb, numbers,
                                  push_mb)
            print(f"jobs {await bridge.store.jobs.counts()}; inbound "
                  f"{await bridge.store.inbound.counts()}; outbox "
                  f"{await bridge.store.outbox.counts()}")
        finally:
            await bridge.stop()
    return 0 if ok else 1


async def _scenarios(bridge: Bridge, push_url: str, inputs: Path, only: set[str],
                 body_mb: int, subject_kb: int, numbers: int, push_mb: int) -> bool:
    ok = True

    async def jobs_final(count: int) -> bool:
        counts = await bridge.store.jobs.counts()
        finals = sum(counts.get(str(s), 0) for s in
                     (JobState.DELIVERED, JobState.FAILED, JobState.UNKNOWN))
        outbox = await bridge.store.outbox.counts()
        return (finals >= count and outbox.get("sent", 0) >= count
                and not outbox.get("pending", 0))

    done_jobs = 0
    if "body" in only:
        path = inputs / "body.eml"
        path.write_bytes(ampersand_mail(body_mb))
        done_jobs += 1
        target = done_jobs
        ok &= await measure(
            "mail to fax, cover page on, body of '&'", bridge,
            lambda: _child("send", str(bridge.smtp_port), str(path), "02122222525@fax.local"),
            lambda: jobs_final(target), f"{path.stat().st_size / 2**20:.1f} MB mail")
    if "subject" in only:
        path = inputs / "subject.eml"
        path.write_bytes(subject_mail(subject_kb))
        rcpts = [f"021222{n:05d}@fax.local" for n in range(numbers)]
        done_jobs += numbers
        target = done_jobs
        ok &= await measure(
            f"encoded non-ASCII Subject to {numbers} numbers (reports)", bridge,
            lambda: _child("send", str(bridge.smtp_port), str(path), *rcpts),
            lambda: jobs_final(target), f"{subject_kb} KB Subject")
    if "push" in only:
        path = inputs / "push.json"
        path.write_bytes(incoming_push(push_mb))

        async def mailed() -> bool:
            faxes = await bridge.store.inbound.all()
            outbox = await bridge.store.outbox.counts()
            return bool(faxes) and all(f.state in (InboundState.MAILED, InboundState.FAILED)
                                       for f in faxes) and not outbox.get("pending", 0)

        ok &= await measure(
            "FaxMAX INCOMING_FAX push", bridge, lambda: _child("push", push_url, str(path)),
            mailed, f"{path.stat().st_size / 2**20:.1f} MB push")
    return ok


def cli() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "simulator":
        asyncio.run(_simulator_main())
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        _send_main(int(sys.argv[2]), sys.argv[3], sys.argv[4:])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "push":
        _push_main(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="body,subject,push",
                        help="comma-separated, of: body, subject, push")
    parser.add_argument("--body-mb", type=int, default=20)
    parser.add_argument("--subject-kb", type=int, default=30)
    parser.add_argument("--numbers", type=int, default=20)
    parser.add_argument("--push-mb", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    return asyncio.run(main(set(args.only.split(",")), args.body_mb, args.subject_kb,
                            args.numbers, args.push_mb))


if __name__ == "__main__":
    sys.exit(cli())
