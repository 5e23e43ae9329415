"""The `fax-bridge` command. The only place that turns errors into exit codes and messages."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import signal
import smtplib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from bridge import config, logs
from bridge.clock import SystemClock
from bridge.errors import BridgeError, NotFound
from bridge.instance import running_pid, wake_running
from bridge.samples import sample_fax_tiff, sample_pdf
from bridge.store import (
    InboundState,
    Job,
    JobState,
    MailInfo,
    MailState,
    Message,
    Snapshot,
    Store,
)

log = logging.getLogger("bridge")

EXAMPLES = """\
examples:
  fax-bridge demo                              try it on this machine, no account needed
  fax-bridge send-test --to 02122222525@fax.local
  fax-bridge serve -c /etc/fax-bridge/fax-bridge.toml --log-format json
  fax-bridge check-config -c fax-bridge.toml
  fax-bridge status                            queues, last poll and push, what needs a person
  fax-bridge list --state unknown
  fax-bridge show 17 --json
  fax-bridge retry 17
  fax-bridge backup /var/backups/fax-bridge-$(date +%F).sqlite3
  fax-bridge replay-quarantine
  fax-bridge healthcheck                       exit 0 if /healthz says ok (for Docker, cron)
  fax-bridge hash-password < password.txt

exit codes:
  0  done          1  failed, refused or unhealthy (the message says why)
  2  usage error   3  there is no fax job with the number given (show, retry)
"""
EXIT_NOT_FOUND = 3


def _load(args: argparse.Namespace) -> config.Settings:
    return config.load(config.find_config_file(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.mail import Templates
    from bridge.template_check import check_templates

    settings = _load(args)
    check_templates(Templates(settings.mail.templates_dir), settings)
    print(f"# effective settings from {settings.source} and the environment; secrets masked")
    print(config.to_toml(config.masked(settings)), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import serve

    settings = _load(args)
    if not settings.faxmax.enabled and not settings.byosoku.enabled:
        print("fax-bridge: no provider is enabled. Set [faxmax] enabled = true (with "
              "faxmax.token and http.push_token) in the configuration file "
              f"({settings.source}), or try `fax-bridge demo` first.", file=sys.stderr)
        return 1
    logs.setup(verbose=args.verbose, fmt=args.log_format,
               secrets=config.secret_values(settings))
    asyncio.run(serve(settings))
    return 0


DEMO_POLL_INTERVAL = 5.0  # the simulator enforces these; the real provider's are 60 s and 1 s
DEMO_PDF_INTERVAL = 0.5


def demo_settings(data_dir: Path, faxmax_url: str, byosoku_url: str, smtp_port: int,
                  http_port: int, push_token: str) -> config.Settings:
    """Zero-configuration settings: loopback simulators, trusted loopback senders, Maildir."""
    base = config.Settings()
    return replace(
        base,
        data_dir=str(data_dir),
        source="fax-bridge demo",
        smtp=replace(base.smtp, listen=f"127.0.0.1:{smtp_port}",
                     trusted_networks=("127.0.0.0/8", "::1/128")),
        http=replace(base.http, listen=f"127.0.0.1:{http_port}", push_token=push_token),
        faxmax=replace(base.faxmax, enabled=True, url=faxmax_url, token="demo-token",
                       retry_base=2, retry_cap=30),
        byosoku=replace(base.byosoku, enabled=True, log_url=f"{byosoku_url}/receive/log",
                        pdf_url=f"{byosoku_url}/receive/pdf", poll_interval=DEMO_POLL_INTERVAL,
                        pdf_interval=DEMO_PDF_INTERVAL, initial_sync="deliver"),
        routing=replace(base.routing, default=("demo@example.com",), admin="admin@example.com"),
        mail=replace(base.mail, maildir=str(data_dir / "maildir"), retry_base=2, retry_cap=30),
    )


async def _demo(args: argparse.Namespace) -> None:
    from bridge.app import Bridge
    from bridge.simulators import ByosokuSimulator, FaxMaxSimulator

    data_dir: Path = args.data_dir
    simulator = FaxMaxSimulator(token="demo-token")
    await simulator.start()
    byosoku = ByosokuSimulator(log_interval=DEMO_POLL_INTERVAL, pdf_interval=DEMO_PDF_INTERVAL)
    await byosoku.start()
    token = secrets.token_urlsafe(24)
    settings = demo_settings(data_dir, simulator.url, byosoku.log_url.rsplit("/receive", 1)[0],
                             args.smtp_port, args.http_port, token)
    bridge = Bridge(settings)
    await bridge.start()
    simulator.push_url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{token}"
    smtp = f"127.0.0.1:{bridge.smtp_port}"
    # The commands to copy, as this one was typed (".venv/bin/fax-bridge demo" prints
    # ".venv/bin/fax-bridge send-test ..."), so they work without the venv on PATH.
    me = sys.argv[0] if Path(sys.argv[0]).name == "fax-bridge" else "fax-bridge"
    # Two received faxes, one from each provider, to show the other direction.
    await simulator.push_incoming(tiff=sample_fax_tiff("a fax pushed by FaxMAX"),
                                  cld="902121110000", cli="903125550000")
    byosoku.add_fax(fax_number="0368680000", sender="0312345678",
                    pdf=sample_pdf("a fax polled from 秒速FAX Plus"))
    print(f"""
fax-bridge demo is running. FaxMAX and 秒速FAX Plus are simulated on loopback
({simulator.url}, {byosoku.log_url}); nothing leaves this machine.

  Send a test fax:   {me} send-test --smtp {smtp} --to 02122222525@fax.local
  or with swaks:     swaks --server {smtp} --to 02122222525@fax.local --attach @some.pdf
  Delivery reports and received faxes (two sample faxes arrive now):
                     {settings.maildir_path / 'new'}
  Queue:             {me} status --data-dir {data_dir}

Press Ctrl-C to stop.
""", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await bridge.stop()
    await simulator.stop()
    await byosoku.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    logs.setup(verbose=args.verbose, fmt=args.log_format)
    args.data_dir = Path(args.data_dir).resolve()
    asyncio.run(_demo(args))
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    host, port = config.parse_listen(args.smtp, "--smtp")
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = "fax-bridge test fax"
    msg["Message-ID"] = make_msgid(domain="fax-bridge.test")
    msg.set_content("This page was sent by `fax-bridge send-test`.\n")
    msg.add_attachment(sample_pdf(), maintype="application", subtype="pdf",
                       filename="test-fax.pdf")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.ehlo()
        code, text = smtp.mail(args.sender)
        if code == 250:
            code, text = smtp.rcpt(args.to)
        if code == 250:
            code, text = smtp.data(msg.as_bytes(policy=SMTP))
    print(f"{code} {text.decode(errors='replace')}")
    return 0 if code == 250 else 1


def _database(args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir) if args.data_dir else _load(args).data_path
    db = data_dir / "fax-bridge.sqlite3"
    if not db.exists():
        raise BridgeError(f"no fax-bridge database at {db}")
    return db


def _when(t: float | None) -> str:
    """A stored time for people: local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _attention(snap: Snapshot) -> list[str]:
    """What a person should look at, each with the command that shows it."""
    out = []
    if n := snap.jobs.get(JobState.UNKNOWN, 0):
        out.append(f"{n} fax(es) of unknown outcome, never resent on their own: "
                   "fax-bridge list --state unknown")
    if n := snap.jobs.get(JobState.FAILED, 0):
        out.append(f"{n} fax(es) failed (their senders were told): "
                   "fax-bridge list --state failed")
    if n := snap.emails.get(MailState.FAILED, 0):
        out.append(f"{n} email(s) given up after retries: fax-bridge list --mail failed")
    if n := sum(v for (_, state), v in snap.received.items() if state == InboundState.FAILED):
        out.append(f"{n} received fax(es) could not be fetched or mailed (the admin was told)")
    if snap.quarantined:
        out.append(f"{snap.quarantined} FaxMAX push event(s) not understood, kept: "
                   "fax-bridge replay-quarantine after a fix")
    if snap.log_gaps:
        out.append(f"the 秒速FAX Plus log scrolled past a poll {snap.log_gaps} time(s): faxes "
                   "may have been missed; check the provider's panel")
    return out


def _snapshot(db: Path) -> Snapshot:
    async def run() -> Snapshot:
        store = await Store.open(db)
        try:
            return await store.upkeep.snapshot(time.time())
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_status(args: argparse.Namespace) -> int:
    db = _database(args)
    snap = _snapshot(db)
    pid = running_pid(db.parent)
    attention = _attention(snap)
    if args.json:
        print(json.dumps({
            "data_dir": str(db.parent), "running_pid": pid, "jobs": snap.jobs,
            "received": [{"provider": p, "state": s, "count": n}
                         for (p, s), n in sorted(snap.received.items())],
            "emails": snap.emails,
            "queues": {q: {"depth": d, "oldest_age_seconds": round(a, 3)}
                       for q, (d, a) in snap.queues.items()},
            "quarantined": snap.quarantined, "log_gaps": snap.log_gaps,
            "last_poll": snap.last_poll or None, "last_push": snap.last_push or None,
            "attention": attention}, indent=2, ensure_ascii=False))
        return 0
    now = time.time()
    received: dict[str, int] = {}
    for (provider, state), n in snap.received.items():
        if state != InboundState.SKIPPED:
            received[provider] = received.get(provider, 0) + n
    print(f"fax-bridge on {db.parent}: " + (f"running (pid {pid})" if pid else "not running"))
    print("fax jobs:   " + ", ".join(f"{s} {n}" for s, n in snap.jobs.items()))
    print("received:   " + ", ".join(f"{p} {n}" for p, n in received.items()))
    print("emails:     " + ", ".join(f"{s} {n}" for s, n in snap.emails.items()))
    print("queues:     " + ", ".join(
        f"{q} {d}" + (f" (oldest {_ago(a)})" if d else "") for q, (d, a) in snap.queues.items()))
    for label, at in (("last poll", snap.last_poll), ("last push", snap.last_push)):
        print(f"{label}:  " + (f"{_when(at)} ({_ago(max(0.0, now - at))} ago)" if at
                                else "never"))
    print("attention:  " + ("nothing" if not attention else ""))
    for line in attention:
        print(f"  - {line}")
    return 0


def _job_data(j: Job) -> dict[str, Any]:
    return {"id": j.id, "state": j.state, "number": j.number, "recipient": j.recipient,
            "sender": j.sender, "attempts": j.attempts, "fax_id": j.fax_id,
            "provider_status": j.provider_status, "pages_sent": j.pages_sent,
            "created_at": j.created_at, "submitted_at": j.submitted_at,
            "finished_at": j.finished_at, "detail": j.detail}


def cmd_list(args: argparse.Namespace) -> int:
    db = _database(args)

    async def run() -> None:
        store = await Store.open(db)
        try:
            if args.mail is not None:
                mails = await store.outbox.latest(MailState(args.mail) if args.mail else None,
                                          args.limit)
            else:
                jobs = await store.jobs.latest(JobState(args.state) if args.state else None,
                                        args.limit)
        finally:
            await store.close()
        if args.mail is not None:
            _print_mails(mails, args.json)
            return
        if args.json:
            print(json.dumps([_job_data(j) for j in jobs], indent=2, ensure_ascii=False))
            return
        print(f"{'job':>6}  {'state':<9}  {'number':<16}  {'created':<19}  {'sender':<28}  "
              "detail")
        for j in jobs:
            print(f"{j.id:>6}  {j.state:<9}  +{j.number:<15}  {_when(j.created_at):<19}  "
                  f"{j.sender[:28]:<28}  {j.detail[:60]}")

    asyncio.run(run())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    db = _database(args)

    async def run() -> tuple[Job, Message, list[tuple[float, str, str]]]:
        store = await Store.open(db)
        try:
            job = await store.jobs.get(args.job)
            if job is None:
                raise NotFound(f"there is no fax job {args.job} (fax-bridge list shows them)")
            message = await store.jobs.message(job.message)
            assert message is not None  # jobs reference their message
            return job, message, (await store.jobs.status_events(job.fax_id) if job.fax_id else [])
        finally:
            await store.close()

    job, message, pushes = asyncio.run(run())
    if args.json:
        print(json.dumps({**_job_data(job), "mail": {
            "id": message.id, "state": message.state, "from": message.header_from,
            "envelope_from": message.mail_from, "subject": message.subject,
            "message_id": message.message_id, "received_at": message.received_at,
            "pages": message.pages, "left_out": list(message.left_out),
            "error": message.error, "document": message.document_path},
            "status_pushes": [{"received_at": at, "status": status, "message": text}
                              for at, status, text in pushes]}, indent=2, ensure_ascii=False))
        return 0
    rows = [
        ("to", f"+{job.number} ({job.recipient})"),
        ("from", f"{message.header_from or message.mail_from} (envelope {message.mail_from})"),
        ("subject", message.subject or "-"),
        ("message-id", message.message_id or "-"),
        ("received", _when(message.received_at)),
        ("pages", str(message.pages) if message.pages is not None else "not converted yet"),
        ("left out", ", ".join(message.left_out) or "nothing"),
        ("attempts", str(job.attempts)),
        ("submitted", _when(job.submitted_at)
         + (f" (FaxMAX fax id {job.fax_id})" if job.fax_id else "")),
        ("finished", _when(job.finished_at)),
        ("provider", job.provider_status or "-"),
        ("detail", job.detail or message.error or "-"),
    ]
    print(f"fax job {job.id}: {job.state}")
    for label, text in rows:
        print(f"  {label + ':':<12} {text}")
    for at, status, text in pushes:
        print(f"  {'push:':<12} {_when(at)} {status} {text}".rstrip())
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz of the running service: for container health checks and cron."""
    url = args.url
    if not url:
        host, port = config.parse_listen(_load(args).http.listen, "http.listen")
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            print(resp.read().decode(errors="replace"), end="")
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace"), end="")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"fax-bridge: cannot reach {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1


def _print_mails(mails: list[MailInfo], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"id": m.id, "state": m.state, "message_id": m.message_id,
                           "recipients": list(m.recipients), "attempts": m.attempts,
                           "last_error": m.last_error} for m in mails], indent=2))
        return
    print(f"{'mail':>6}  {'state':<8}  {'attempts':>8}  {'to':<30}  last error")
    for m in mails:
        print(f"{m.id:>6}  {m.state:<8}  {m.attempts:>8}  {', '.join(m.recipients)[:30]:<30}  "
              f"{m.last_error[:60]}")


def cmd_retry(args: argparse.Namespace) -> int:
    db = _database(args)
    if (args.job is None) == (args.mail is None):
        raise BridgeError("name a fax job (fax-bridge retry 17) or an email "
                          "(fax-bridge retry --mail 5)")

    async def run() -> str | None:
        store = await Store.open(db)
        try:
            now = SystemClock().now()
            if args.mail is not None:
                if await store.outbox.requeue(args.mail, now):
                    return None
                return (f"mail {args.mail} is neither given up nor waiting (see fax-bridge list "
                        "--mail failed)")
            if await store.jobs.get(args.job) is None:
                raise NotFound(f"there is no fax job {args.job} (fax-bridge list shows them)")
            return await store.jobs.requeue(args.job, now)
        finally:
            await store.close()

    refusal = asyncio.run(run())
    if refusal is not None:
        print(f"fax-bridge: {refusal}; nothing resent", file=sys.stderr)
        return 1
    what = f"job {args.job}" if args.mail is None else f"mail {args.mail}"
    print(f"{what} queued again; {_nudge(db)}")
    return 0


def _nudge(db: Path) -> str:
    try:
        if wake_running(db.parent):
            return "the running service was told and sends it now"
    except PermissionError:
        return ("the running service belongs to another user, so it could not be told; it "
                "sends it within a minute")
    return "no service is running on this data directory; it is sent when one starts"


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent copy of the live database, taken while the service runs."""
    db = _database(args)
    target = Path(args.file)
    if target.exists():
        raise BridgeError(f"{target} exists; name a new file")

    async def run() -> None:
        store = await Store.open(db)
        try:
            await store.upkeep.backup(target)
        finally:
            await store.close()

    asyncio.run(run())
    print(f"backup of {db} written to {target}")
    return 0


def cmd_replay_quarantine(args: argparse.Namespace) -> int:
    """Run kept push bodies through the push handling again, e.g. after a fix."""
    from bridge.ingress.pushes import SOURCE, PushProcessor
    from bridge.pipeline import build_pipeline

    settings = _load(args)
    db = _database(args)

    async def replay(pushes: PushProcessor, store: Store, clock: SystemClock) -> int:
        left = 0
        for item in await store.inbound.quarantined(pending_only=True):
            if item.source != SOURCE:
                continue
            outcome = await pushes.process(item.body, quarantine=False)
            if outcome.not_understood:
                left += 1
                print(f"#{item.id}: still not understood: "
                      f"{'; '.join(outcome.not_understood)}")
                continue
            await store.inbound.replayed(item.id, clock.now())
            print(f"#{item.id}: replayed ({outcome.status_events} status event(s), "
                  f"{len(outcome.new_fax_ids)} new fax(es))")
        return left

    async def run() -> int:
        store = await Store.open(db)
        try:
            clock = SystemClock()
            # The service's own push handling. Its workers are not run here: the running
            # service, told by `_nudge`, sends what the replay queued.
            pipeline = build_pipeline(settings, store, clock)
            try:
                return await replay(pipeline.pushes, store, clock)
            finally:
                await pipeline.close()
        finally:
            await store.close()

    left = asyncio.run(run())
    print(f"done; {_nudge(db)}")
    return 1 if left else 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    from bridge.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            print("fax-bridge: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("fax-bridge: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fax-bridge", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send faxes from any mail client; receive faxes in your inbox.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        return p

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", help="configuration file (default: $FAX_BRIDGE_CONFIG, "
                                              "then ./fax-bridge.toml, then built-in defaults)")

    def with_store(p: argparse.ArgumentParser) -> None:
        with_config(p)
        p.add_argument("--data-dir", help="read this data directory instead of the config's")

    def with_log_format(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-format", choices=logs.FORMATS,
                       default=os.environ.get("FAX_BRIDGE_LOG_FORMAT", "text"),
                       help="text for people, json for one JSON object per line "
                            "(default: $FAX_BRIDGE_LOG_FORMAT, else text)")

    p = command("serve", "run the bridge")
    with_config(p)
    with_log_format(p)
    p.set_defaults(func=cmd_serve)
    p = command("demo", "run against built-in simulators on loopback, delivering to a Maildir")
    with_log_format(p)
    p.add_argument("--data-dir", default="./demo-data")
    p.add_argument("--smtp-port", type=int, default=2525)
    p.add_argument("--http-port", type=int, default=8025)
    p.set_defaults(func=cmd_demo)
    p = command("check-config", "validate and print the effective settings, secrets masked")
    with_config(p)
    p.set_defaults(func=cmd_check_config)
    p = command("status", "queues, last poll and push, and what needs a person, at a glance")
    with_store(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = command("list", "list fax jobs (or emails), newest first")
    with_store(p)
    p.add_argument("--state", choices=[s.value for s in JobState])
    p.add_argument("--mail", nargs="?", const="", choices=["", *(s.value for s in MailState)],
                   help="list outgoing emails instead, optionally only those in this state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    p = command("show", "everything about one fax job: its mail, attempts, status pushes")
    with_store(p)
    p.add_argument("job", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)
    p = command("retry", "resend an unknown or failed fax job (you decide it was not sent), "
                         "or an email that was given up")
    with_store(p)
    p.add_argument("job", type=int, nargs="?")
    p.add_argument("--mail", type=int, metavar="ID", help="resend this email instead")
    p.set_defaults(func=cmd_retry)
    p = command("backup", "write a consistent copy of the database while the service runs")
    with_store(p)
    p.add_argument("file", help="the new file to write")
    p.set_defaults(func=cmd_backup)
    p = command("replay-quarantine", "process quarantined FaxMAX pushes again (after a fix)")
    with_store(p)
    p.set_defaults(func=cmd_replay_quarantine)
    p = command("healthcheck", "ask the running service's /healthz; exit 0 if healthy, 1 if not")
    with_config(p)
    p.add_argument("--url", help="instead of http://<http.listen>/healthz")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(func=cmd_healthcheck)
    p = command("hash-password", "make a password hash for [[smtp.users]]")
    p.set_defaults(func=cmd_hash_password)
    p = command("send-test", "send a one-page test fax by SMTP")
    p.add_argument("--smtp", default="127.0.0.1:2525", help="host:port of the bridge")
    p.add_argument("--to", default="02122222525@fax.local")
    p.add_argument("--sender", default="demo@example.com")
    p.set_defaults(func=cmd_send_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except NotFound as exc:
        print(f"fax-bridge: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BridgeError as exc:
        print(f"fax-bridge: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `fax-bridge list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, smtplib.SMTPException) as exc:
        print(f"fax-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
