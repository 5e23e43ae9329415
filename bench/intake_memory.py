"""Peak memory of the real `fax-bridge serve` process while it accepts one large mail.

Starts the FaxMAX simulator (paused, so nothing is sent), runs `fax-bridge serve` as a child
process on loopback, sends one mail of about --megabytes MB (a PDF attachment, base64) with
smtplib, and reads the server's VmRSS before and VmHWM (peak RSS) after from /proc.

    .venv/bin/python bench/intake_memory.py --megabytes 25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from bridge.simulators import FaxMaxSimulator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def big_mail(megabytes: float) -> bytes:
    raw_size = int(megabytes * 1_000_000 * 3 / 4) - 4096  # base64 grows it by 4/3
    pdf = b"%PDF-1.4\n%" + os.urandom(raw_size) + b"\n%%EOF\n"
    msg = EmailMessage()
    msg["From"] = "bench@example.com"
    msg["To"] = "02122222525@fax.local"
    msg["Subject"] = "large scan"
    msg.set_content("see attachment\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="scan.pdf")
    return msg.as_bytes(policy=SMTP)


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server did not open port {port}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=25.0)
    args = parser.parse_args()
    simulator = FaxMaxSimulator(token="bench-token")
    await simulator.start()
    simulator.pause()
    with tempfile.TemporaryDirectory() as tmp:
        smtp_port, http_port = free_port(), free_port()
        config = Path(tmp) / "fax-bridge.toml"
        config.write_text(f"""
data_dir = "{tmp}/data"
[smtp]
listen = "127.0.0.1:{smtp_port}"
trusted_networks = ["127.0.0.0/8"]
max_message_bytes = {int(args.megabytes * 1_100_000)}
[http]
listen = "127.0.0.1:{http_port}"
push_token = "{secrets.token_urlsafe(24)}"
[faxmax]
enabled = true
url = "{simulator.url}"
token = "bench-token"
""")
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
            [sys.executable, "-m", "bridge", "serve", "-c", str(config)],
            stderr=subprocess.DEVNULL)
        try:
            wait_for_port(smtp_port)
            idle = proc_kb(server.pid, "VmRSS")
            mail = big_mail(args.megabytes)

            def send() -> tuple[int, bytes]:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=120) as client:
                    client.ehlo()
                    client.mail("bench@example.com")
                    client.rcpt("02122222525@fax.local")
                    return client.data(mail)

            started = time.monotonic()
            code, text = await asyncio.to_thread(send)
            elapsed = time.monotonic() - started
            peak = proc_kb(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(timeout=30)
    await simulator.stop()
    size_mb = len(mail) / 1e6
    print(f"reply: {code} {text.decode()} in {elapsed:.2f}s")
    print(f"mail size: {size_mb:.1f} MB")
    print(f"RSS idle: {idle / 1024:.1f} MB; peak: {peak / 1024:.1f} MB; "
          f"peak above idle: {(peak - idle) / 1024:.1f} MB = "
          f"{(peak - idle) * 1024 / len(mail):.2f}x the mail's size")


if __name__ == "__main__":
    asyncio.run(main())
