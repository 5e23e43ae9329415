"""What can be configured: every setting's type, default and allowed values, as frozen dataclasses.

A setting with a fixed set of values is a `Literal` type, so the loader refuses anything else
(naming the key) and mypy checks every comparison the services make against it. The helpers that
read a value's structure (`parse_listen`, `parse_networks`, `in_networks`) live here too, since
both the validation at load time and the services at run time need them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from bridge.errors import ConfigError

SECRET = {"secret": True}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PaperSize = Literal["A4", "letter", "legal"]
Resolution = Literal["normal", "fine", "superfine"]
CoverPage = Literal["auto", "always", "never"]
PdfMethod = Literal["GET", "POST"]
InitialSync = Literal["skip", "deliver"]
MailTransport = Literal["maildir", "smtp"]
SmtpSecurity = Literal["starttls", "tls", "none"]
ReportToSender = Literal["always", "failures", "never"]
OfficeSetting = Literal["auto", "off"]
OcrSetting = Literal["auto", "off"]
BodySetting = Literal["auto", "refuse"]
InboundFormat = Literal["pdf", "tiff", "both", "notice"]
ReportCopy = Literal["thumbnail", "pdf", "none"]


@dataclass(frozen=True)
class SmtpUser:
    name: str
    password_hash: str
    addresses: tuple[str, ...] = ()
    language: str = ""  # of this user's reports; "" takes mail.sender_languages / mail.language

    @property
    def own_addresses(self) -> tuple[str, ...]:
        """What this user may write in MAIL FROM and in From: (printed on the cover page):
        `addresses`, or, when that is empty, the name if it is an address."""
        return self.addresses or ((self.name,) if "@" in self.name else ())


@dataclass(frozen=True)
class SmtpSettings:
    listen: str = "127.0.0.1:2525"
    domain: str = "fax.local"
    auth_required: bool = True
    trusted_networks: tuple[str, ...] = ()
    allowed_senders: tuple[str, ...] = ()
    max_message_bytes: int = 26_214_400
    max_recipients: int = 20
    tls_cert: str = ""
    tls_key: str = ""
    timeout: int = 600  # idle seconds; long enough for a 25 MB upload on a slow link
    inspect_timeout: float = 5  # seconds the checks before `250` may take for one mail
    max_connections: int = 100
    max_connections_per_client: int = 20  # behind Postfix, all mail comes from one address
    auth_max_failures: int = 5  # failed logins from one address (IPv6: its /64) ...
    auth_lockout: float = 900  # ... within these seconds: no more AUTH until the oldest leaves
    users: tuple[SmtpUser, ...] = ()


@dataclass(frozen=True)
class NumbersSettings:
    default_country_code: str = "90"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_faxes_per_sender_per_hour: int = 60  # per account: see `bridge.limits.account`
    max_faxes_per_hour: int = 600  # the whole gateway, in any hour: the backstop
    max_pages_per_sender_per_day: int = 300  # pages in any 24 hours, all numbers together
    max_pages_per_day: int = 2000  # the whole gateway, in any 24 hours: a spend cap


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:8025"
    push_token: str = field(default="", metadata=SECRET)
    max_body_bytes: int = 52_428_800
    push_allow_from: tuple[str, ...] = ()
    metrics_allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1")  # empty: no one


@dataclass(frozen=True)
class FaxmaxSettings:
    enabled: bool = False
    url: str = "https://faxmax.net/api/v1"
    token: str = field(default="", metadata=SECRET)
    username: str = ""
    password: str = field(default="", metadata=SECRET)
    cli: str = ""
    paper_size: PaperSize = "A4"
    resolution: Resolution = "fine"
    cover_page: CoverPage = "auto"
    max_schedule_days: int = 7  # how far ahead X-Fax-Send-At may schedule a fax
    timeout: float = 60
    max_attempts: int = 8
    retry_max_age: int = 86_400
    retry_base: float = 30  # first retry delay in seconds; doubles each attempt, with jitter
    retry_cap: float = 3_600  # no retry waits longer than this
    status_timeout: int = 86_400
    concurrency: int = 4  # send calls in flight at once
    delivered_statuses: tuple[str, ...] = ("SUCCESS", "SENT", "DELIVERED", "OK", "COMPLETED")
    failed_statuses: tuple[str, ...] = (
        "FAILED",
        "ERROR",
        "BUSY",
        "NO_ANSWER",
        "CANCELLED",
        "REJECTED",
    )
    # Final statuses that say the line was never connected: with no page transferred, the
    # job is dialled again after the next of `redial_delays` (`bridge.dialling`).
    redial_statuses: tuple[str, ...] = (
        "BUSY", "LINE_BUSY", "NO_ANSWER", "NOANSWER", "NO_CARRIER", "NOCARRIER",
    )
    redial_delays: tuple[float, ...] = (120, 300, 600, 1200, 2400)
    per_number_concurrency: int = 1  # faxes to one number sent and not yet final, at most
    line_hold: float = 1800  # seconds a submitted fax with no final status holds its line
    timezone: str = "Europe/Istanbul"  # of the times in FaxMAX's pushes, which carry none
    match_window: int = 900  # seconds around a push's requested_on that may match an unknown job
    ocr_languages: str = "tur+eng"  # Tesseract's languages for its received faxes (Turkey)


@dataclass(frozen=True)
class ByosokuSettings:
    enabled: bool = False
    log_url: str = ""
    pdf_url: str = ""
    pdf_method: PdfMethod = "GET"
    country_code: str = "81"
    poll_interval: float = 60
    pdf_interval: float = 1
    initial_sync: InitialSync = "skip"
    timezone: str = "Asia/Tokyo"  # of receiveDate, which carries no zone
    timeout: float = 30  # seconds for one call
    pdf_attempts: int = 5  # ERR_NO_PDF answers before a fax is given up (the PDF may lag)
    retry_base: float = 30  # first delay before fetching a PDF again; doubles, with jitter
    retry_cap: float = 1800
    unhealthy_after: float = 900  # seconds of failing log calls before /healthz says 503
    ocr_languages: str = "jpn+eng"  # Tesseract's languages for its received faxes (Japan)


@dataclass(frozen=True)
class DocumentsSettings:
    max_pages: int = 100  # pages of one fax, attachments and cover together
    memory_mb: int = 1024  # memory cap of the process that reads one document
    max_pdf_unpacked_mb: int = 200  # what one PDF's streams but images may inflate to (at 250)
    timeout: float = 60  # seconds that process may take
    retention_days: int = 30  # fax images of finished faxes are deleted after this; 0 = never
    office: OfficeSetting = "auto"  # convert Office, HTML and text files where LibreOffice is
    libreoffice: str = ""  # its soffice (or soffice.bin); "" looks on PATH and the usual places
    office_memory_mb: int = 2048  # LibreOffice's memory cap; it does not start under 1 GB
    body: BodySetting = "auto"  # a mail with nothing attached: fax its text (with LibreOffice)
    ocr: OcrSetting = "auto"  # a text layer for received faxes where OCRmyPDF and Tesseract are
    ocr_timeout: float = 60  # seconds OCR may take for one fax; past them it is mailed without
    ocr_memory_mb: int = 1024  # OCRmyPDF's (and Tesseract's) memory cap


@dataclass(frozen=True)
class RoutingSettings:
    default: tuple[str, ...] = ()
    admin: str = ""
    numbers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # per receiving number: what its faxes' emails carry ("notice": only that one arrived)
    formats: Mapping[str, InboundFormat] = field(default_factory=dict)
    languages: Mapping[str, str] = field(default_factory=dict)  # receiving number -> language


@dataclass(frozen=True)
class MailSettings:
    from_: str = "Fax Bridge <fax-bridge@localhost>"
    transport: MailTransport = "maildir"
    maildir: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: SmtpSecurity = "starttls"
    smtp_username: str = ""
    smtp_password: str = field(default="", metadata=SECRET)
    smtp_timeout: float = 60  # each command's answer
    smtp_final_dot_timeout: float = 600  # the answer to the final `.` (RFC 5321 4.5.3.2.6)
    smtp_ca_file: str = ""  # extra CA certificates (PEM) for a relay with a private CA
    report_to_sender: ReportToSender = "always"
    report_copy: ReportCopy = "thumbnail"  # page 1 as printed in reports; "pdf" adds the PDF
    templates_dir: str = ""
    language: str = "en"  # of alerts, and of reports and faxes nothing else chose one for
    # Senders with no [[smtp.users]] entry (behind a trusted relay): address or "@domain".
    sender_languages: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "Europe/Istanbul"
    max_attempts: int = 30
    retry_max_age: int = 5 * 86_400  # as long as an MTA keeps trying before it bounces
    retry_base: float = 30
    retry_cap: float = 3_600


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./data"
    # seconds SIGTERM waits for mails and pushes in flight (a FaxMAX call gets faxmax.timeout)
    shutdown_timeout: float = 30
    smtp: SmtpSettings = SmtpSettings()
    numbers: NumbersSettings = NumbersSettings()
    http: HttpSettings = HttpSettings()
    faxmax: FaxmaxSettings = FaxmaxSettings()
    byosoku: ByosokuSettings = ByosokuSettings()
    documents: DocumentsSettings = DocumentsSettings()
    routing: RoutingSettings = RoutingSettings()
    mail: MailSettings = MailSettings()
    source: str = field(default="built-in defaults", compare=False)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def maildir_path(self) -> Path:
        return Path(self.mail.maildir) if self.mail.maildir else self.data_path / "maildir"

    @property
    def mail_domain(self) -> str:
        """The domain of `mail.from`, used to make our Message-IDs globally unique."""
        return parseaddr(self.mail.from_)[1].rpartition("@")[2] or "localhost"


def key_name(f: dataclasses.Field[Any]) -> str:
    """`from` is a Python keyword, so the field is `from_`; the TOML key stays `from`."""
    return f.name.rstrip("_")


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") into its parts; the error names the key."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected host:port such as 127.0.0.1:2525, got {value!r}")
    return host, int(port)


def parse_networks(values: tuple[str, ...], key: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from exc


def in_networks(peer: Any, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether a peer (an address, or aiosmtpd's (host, port) tuple) is in `networks`. An
    IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`: it is checked as a.b.c.d."""
    try:
        ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
    except (ValueError, TypeError, IndexError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)
