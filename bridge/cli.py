"""The `fax-bridge` command. The only place that turns errors into exit codes and messages."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import smtplib
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

from bridge import config, logs, operations
from bridge.errors import BridgeError, NotFound
from bridge.samples import sample_docx, sample_fax_tiff, sample_pdf
from bridge.store import JobState, MailState

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
  fax-bridge cancel 18                         a fax not sent yet (queued or scheduled)
  fax-bridge backup /var/backups/fax-bridge-$(date +%F).sqlite3
  fax-bridge replay-quarantine
  fax-bridge healthcheck                       exit 0 if /healthz says ok (for Docker, cron)
  fax-bridge hash-password < password.txt

exit codes:
  0  done          1  failed, refused or unhealthy (the message says why)
  2  usage error   3  there is no fax job with the number given (show, retry, cancel)
"""
EXIT_NOT_FOUND = 3


def _load(args: argparse.Namespace) -> config.Settings:
    return config.load(config.find_config_file(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.mail import Templates
    from bridge.ocr import availability as ocr_availability
    from bridge.office import availability
    from bridge.template_check import check_templates

    settings = _load(args)
    check_templates(Templates(settings.mail.templates_dir), settings)
    print(f"# effective settings from {settings.source} and the environment; secrets masked")
    print(f"# office conversion (documents.office): {availability(settings.documents).describe()}")
    print(f"# OCR of received faxes (documents.ocr): {ocr_availability(settings).describe()}")
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
  a Word document:   {me} send-test --smtp {smtp} --to 02122222525@fax.local --docx
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
    msg["Message-ID"] = make_msgid(domain="fax-bridge.test")
    if args.docx:  # converted by LibreOffice on the way (documents.office)
        msg["Subject"] = "fax-bridge test fax (Word)"
        msg.set_content("This Word document was sent by `fax-bridge send-test --docx`.\n")
        msg.add_attachment(
            sample_docx("fax-bridge test fax, written in Word", "Teklif Şubat İstanbul",
                        "見積書 東京都"),
            maintype="application", filename="test-fax.docx",
            subtype="vnd.openxmlformats-officedocument.wordprocessingml.document")
    else:
        msg["Subject"] = "fax-bridge test fax"
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
    p.set_defaults(func=operations.cmd_status)
    p = command("list", "list fax jobs (or emails), newest first")
    with_store(p)
    p.add_argument("--state", choices=[s.value for s in JobState])
    p.add_argument("--mail", nargs="?", const="", choices=["", *(s.value for s in MailState)],
                   help="list outgoing emails instead, optionally only those in this state")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=operations.cmd_list)
    p = command("show", "everything about one fax job: its mail, attempts, status pushes")
    with_store(p)
    p.add_argument("job", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=operations.cmd_show)
    p = command("unmatched", "FaxMAX status pushes for faxes no job knows, with the unknown "
                             "jobs each could be")
    with_store(p)
    p.add_argument("--window", type=float, help="seconds around a push's time (default: "
                                                "faxmax.match_window)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=operations.cmd_unmatched)
    p = command("retry", "resend an unknown or failed fax job (you decide it was not sent), "
                         "or an email that was given up")
    with_store(p)
    p.add_argument("job", type=int, nargs="?")
    p.add_argument("--mail", type=int, metavar="ID", help="resend this email instead")
    p.set_defaults(func=operations.cmd_retry)
    p = command("cancel", "cancel a fax job that is not sent yet (queued or scheduled); its "
                          "sender is told")
    with_store(p)
    p.add_argument("job", type=int)
    p.set_defaults(func=operations.cmd_cancel)
    p = command("backup", "write a consistent copy of the database while the service runs")
    with_store(p)
    p.add_argument("file", help="the new file to write")
    p.set_defaults(func=operations.cmd_backup)
    p = command("replay-quarantine", "process quarantined FaxMAX pushes again (after a fix)")
    with_store(p)
    p.set_defaults(func=operations.cmd_replay_quarantine)
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
    p.add_argument("--docx", action="store_true",
                   help="a Word document instead of a PDF (Office conversion must be on)")
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
