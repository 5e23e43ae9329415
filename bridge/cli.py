"""The `fax-bridge` command. The only place that turns errors into exit codes and messages."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import secrets
import signal
import smtplib
import sys
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

from bridge import config
from bridge.clock import SystemClock
from bridge.errors import BridgeError
from bridge.instance import wake_running
from bridge.samples import sample_fax_tiff, sample_pdf
from bridge.store import InboundState, JobState, MailInfo, MailState, Store

log = logging.getLogger("bridge")

EXAMPLES = """\
examples:
  fax-bridge demo                              try it on this machine, no account needed
  fax-bridge send-test --to 02122222525@fax.local
  fax-bridge serve -c /etc/fax-bridge/fax-bridge.toml
  fax-bridge check-config -c fax-bridge.toml
  fax-bridge list --state unknown
  fax-bridge retry 17
  fax-bridge backup /var/backups/fax-bridge-$(date +%F).sqlite3
  fax-bridge replay-quarantine
  fax-bridge hash-password < password.txt
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiosmtpd").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("pikepdf").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> config.Settings:
    return config.load(config.find_config_file(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args)
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
    _setup_logging(args.verbose)
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
    # Two received faxes, one from each provider, to show the other direction.
    await simulator.push_incoming(tiff=sample_fax_tiff("a fax pushed by FaxMAX"),
                                  cld="902121110000", cli="903125550000")
    byosoku.add_fax(fax_number="0368680000", sender="0312345678",
                    pdf=sample_pdf("a fax polled from 秒速FAX Plus"))
    print(f"""
fax-bridge demo is running. FaxMAX and 秒速FAX Plus are simulated on loopback
({simulator.url}, {byosoku.log_url}); nothing leaves this machine.

  Send a test fax:   fax-bridge send-test --smtp {smtp} --to 02122222525@fax.local
  or with swaks:     swaks --server {smtp} --to 02122222525@fax.local --attach @some.pdf
  Delivery reports and received faxes (two sample faxes arrive now):
                     {settings.maildir_path / 'new'}
  Queue:             fax-bridge status --data-dir {data_dir}

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
    _setup_logging(args.verbose)
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


def cmd_status(args: argparse.Namespace) -> int:
    db = _database(args)

    async def run() -> None:
        store = await Store.open(db)
        try:
            jobs, mails = await store.job_counts(), await store.mail_counts()
            inbound = await store.inbound_counts()
            quarantined = len(await store.quarantined(pending_only=True))
            gaps = await store.get_meta("byosoku.log_gaps")
        finally:
            await store.close()
        print("fax jobs:  " + ", ".join(f"{s} {jobs.get(s, 0)}" for s in JobState))
        print("received:  " + ", ".join(f"{s} {inbound.get(s, 0)}" for s in InboundState))
        print("emails:    " + (", ".join(f"{s} {n}" for s, n in sorted(mails.items()))
                               or "none"))
        print(f"quarantined pushes: {quarantined}")
        if gaps:
            print(f"秒速FAX Plus log gaps (faxes may have been missed): {gaps}")

    asyncio.run(run())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db = _database(args)

    async def run() -> None:
        store = await Store.open(db)
        try:
            if args.mail is not None:
                mails = await store.mails(MailState(args.mail) if args.mail else None,
                                          args.limit)
            else:
                jobs = await store.jobs(JobState(args.state) if args.state else None,
                                        args.limit)
        finally:
            await store.close()
        if args.mail is not None:
            _print_mails(mails, args.json)
            return
        if args.json:
            print(json.dumps([{"id": j.id, "state": j.state, "number": j.number,
                               "sender": j.sender, "attempts": j.attempts,
                               "fax_id": j.fax_id, "detail": j.detail} for j in jobs], indent=2))
            return
        print(f"{'job':>6}  {'state':<9}  {'number':<16}  {'sender':<30}  detail")
        for j in jobs:
            print(f"{j.id:>6}  {j.state:<9}  +{j.number:<15}  {j.sender[:30]:<30}  "
                  f"{j.detail[:60]}")

    asyncio.run(run())
    return 0


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
                if await store.requeue_mail(args.mail, now):
                    return None
                return (f"mail {args.mail} is not a given-up email (see fax-bridge list "
                        "--mail failed)")
            return await store.requeue_job(args.job, now)
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
    if wake_running(db.parent):
        return "the running service was told and sends it now"
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
            await store.backup(target)
        finally:
            await store.close()

    asyncio.run(run())
    print(f"backup of {db} written to {target}")
    return 0


def cmd_replay_quarantine(args: argparse.Namespace) -> int:
    """Run kept push bodies through the push handling again, e.g. after a fix."""
    from bridge.alerts import Alerter
    from bridge.ingress.pushes import SOURCE, PushProcessor
    from bridge.mail import Templates
    from bridge.workers.sender import status_classifier

    settings = _load(args)
    db = _database(args)

    async def run() -> int:
        store = await Store.open(db)
        try:
            clock = SystemClock()
            processor = PushProcessor(
                store, clock, inbound_dir=db.parent / "inbound",
                classify=status_classifier(settings.faxmax),
                alerter=Alerter(store, clock, settings, Templates(settings.mail.templates_dir),
                                on_enqueued=lambda: None),
                on_status=lambda: None, on_fax=lambda: None)
            left = 0
            for item in await store.quarantined(pending_only=True):
                if item.source != SOURCE:
                    continue
                outcome = await processor.process(item.body, quarantine=False)
                if outcome.not_understood:
                    left += 1
                    print(f"#{item.id}: still not understood: "
                          f"{'; '.join(outcome.not_understood)}")
                    continue
                await store.mark_replayed(item.id, clock.now())
                print(f"#{item.id}: replayed ({outcome.status_events} status event(s), "
                      f"{len(outcome.new_fax_ids)} new fax(es))")
            return left
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

    p = command("serve", "run the bridge")
    with_config(p)
    p.set_defaults(func=cmd_serve)
    p = command("demo", "run against built-in simulators on loopback, delivering to a Maildir")
    p.add_argument("--data-dir", default="./demo-data")
    p.add_argument("--smtp-port", type=int, default=2525)
    p.add_argument("--http-port", type=int, default=8025)
    p.set_defaults(func=cmd_demo)
    p = command("check-config", "validate and print the effective settings, secrets masked")
    with_config(p)
    p.set_defaults(func=cmd_check_config)
    p = command("status", "what is queued, sent, failed")
    with_store(p)
    p.set_defaults(func=cmd_status)
    p = command("list", "list fax jobs (or emails), newest first")
    with_store(p)
    p.add_argument("--state", choices=[s.value for s in JobState])
    p.add_argument("--mail", nargs="?", const="", choices=["", *(s.value for s in MailState)],
                   help="list outgoing emails instead, optionally only those in this state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
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
    except BridgeError as exc:
        print(f"fax-bridge: {exc}", file=sys.stderr)
        return 1
    except (OSError, smtplib.SMTPException) as exc:
        print(f"fax-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
