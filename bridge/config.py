"""Settings: TOML file, then `FAX_BRIDGE_<SECTION>__<KEY>` environment overrides, then validation.

The result is immutable and complete, so no other module reads the environment or guesses a
default. Every error names the key and where its value came from, because the person reading it
is an operator at a terminal, not a developer with a debugger.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.errors import ConfigError

ENV_PREFIX = "FAX_BRIDGE_"
# Read by the command line, not settings: FAX_BRIDGE_CONFIG (the file), FAX_BRIDGE_LOG_FORMAT.
COMMAND_VARIABLES = ("CONFIG", "LOG_FORMAT")
SECRET = {"secret": True}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _choice(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True)
class SmtpUser:
    name: str
    password_hash: str
    addresses: tuple[str, ...] = ()


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
    users: tuple[SmtpUser, ...] = ()


@dataclass(frozen=True)
class NumbersSettings:
    default_country_code: str = "90"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_faxes_per_sender_per_hour: int = 60
    max_pages_per_sender_per_day: int = 300  # pages in any 24 hours, all numbers together
    max_pages_per_day: int = 2000  # the whole gateway, in any 24 hours: a spend cap


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:8025"
    push_token: str = field(default="", metadata=SECRET)
    max_body_bytes: int = 52_428_800
    push_allow_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaxmaxSettings:
    enabled: bool = False
    url: str = "https://faxmax.net/api/v1"
    token: str = field(default="", metadata=SECRET)
    username: str = ""
    password: str = field(default="", metadata=SECRET)
    cli: str = ""
    paper_size: str = field(default="A4", metadata=_choice("A4", "letter", "legal"))
    resolution: str = field(default="fine", metadata=_choice("normal", "fine", "superfine"))
    cover_page: str = field(default="auto", metadata=_choice("auto", "always", "never"))
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


@dataclass(frozen=True)
class ByosokuSettings:
    enabled: bool = False
    log_url: str = ""
    pdf_url: str = ""
    pdf_method: str = field(default="GET", metadata=_choice("GET", "POST"))
    country_code: str = "81"
    poll_interval: float = 60
    pdf_interval: float = 1
    initial_sync: str = field(default="skip", metadata=_choice("skip", "deliver"))
    timezone: str = "Asia/Tokyo"  # of receiveDate, which carries no zone
    timeout: float = 30  # seconds for one call
    pdf_attempts: int = 5  # ERR_NO_PDF answers before a fax is given up (the PDF may lag)
    retry_base: float = 30  # first delay before fetching a PDF again; doubles, with jitter
    retry_cap: float = 1800
    unhealthy_after: float = 900  # seconds of failing log calls before /healthz says 503


@dataclass(frozen=True)
class DocumentsSettings:
    max_pages: int = 100  # pages of one fax, attachments and cover together
    memory_mb: int = 1024  # memory cap of the process that reads one document
    timeout: float = 60  # seconds that process may take
    retention_days: int = 30  # fax images of finished faxes are deleted after this; 0 = never


@dataclass(frozen=True)
class RoutingSettings:
    default: tuple[str, ...] = ()
    admin: str = ""
    numbers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MailSettings:
    from_: str = "Fax Bridge <fax-bridge@localhost>"
    transport: str = field(default="maildir", metadata=_choice("maildir", "smtp"))
    maildir: str = ""
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = field(default="starttls", metadata=_choice("starttls", "tls", "none"))
    smtp_username: str = ""
    smtp_password: str = field(default="", metadata=SECRET)
    smtp_timeout: float = 60
    smtp_ca_file: str = ""  # extra CA certificates (PEM) for a relay with a private CA
    report_to_sender: str = field(
        default="always", metadata=_choice("always", "failures", "never")
    )
    templates_dir: str = ""
    timezone: str = "Europe/Istanbul"
    max_attempts: int = 30
    retry_max_age: int = 5 * 86_400  # as long as an MTA keeps trying before it bounces
    retry_base: float = 30
    retry_cap: float = 3_600


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./data"
    shutdown_timeout: float = 30  # seconds SIGTERM waits for mails and provider calls in flight
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


def _key_name(f: dataclasses.Field[Any]) -> str:
    """`from` is a Python keyword, so the field is `from_`; the TOML key stays `from`."""
    return f.name.rstrip("_")


def _coerce(value: Any, hint: Any, key: str, origin: str) -> Any:
    """Turn a TOML value (or an environment string) into the field's declared type."""
    from_env = isinstance(value, str) and origin.startswith("environment")
    where = f"{key} (from {origin})"
    if hint is bool:
        if isinstance(value, bool):
            return value
        if from_env and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int or hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float) and (hint is float or isinstance(value, int)):
            return hint(value)
        if from_env:
            try:
                return hint(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a {'whole ' if hint is int else ''}number, "
                          f"got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(item_hint):
            return tuple(_load_section(item_hint, v, f"{key}[{i}]", origin, env={})
                         for i, v in enumerate(value))
        return tuple(_coerce(v, item_hint, f"{key}[{i}]", origin) for i, v in enumerate(value))
    if typing.get_origin(hint) in (Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        value_hint = typing.get_args(hint)[1]
        return types.MappingProxyType(
            {str(k): _coerce(v, value_hint, f"{key}.{k}", origin) for k, v in value.items()}
        )
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _read_secret_file(path: str, key: str, origin: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}_file (from {origin}): cannot read {path!r}: "
                          f"{exc.strerror}") from exc


def _load_section(
    cls: Any, table: Any, section: str, origin: str, env: Mapping[str, str]
) -> Any:
    """Build one settings dataclass from a TOML table plus environment overrides."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] (from {origin}): expected a table")
    hints = typing.get_type_hints(cls)
    names = {_key_name(f): f for f in dataclasses.fields(cls)}
    secrets = {n for n, f in names.items() if f.metadata.get("secret")}
    known = set(names) | {f"{s}_file" for s in secrets}
    for key in table:
        if key not in known:
            raise ConfigError(f"{section}.{key} (from {origin}): unknown setting; known ones: "
                              f"{', '.join(sorted(known))}")
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    for var in env:  # a misspelt override would otherwise be ignored without a word
        if var.startswith(prefix) and var[len(prefix):].lower() not in known:
            raise ConfigError(f"environment {var}: [{section}] has no such setting; known "
                              f"ones: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, f in names.items():
        key = f"{section}.{name}"
        env_key = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
        value: Any = dataclasses.MISSING
        where = origin
        if name in table:
            value = table[name]
        if name in secrets and f"{name}_file" in table:
            value = _read_secret_file(_coerce(table[f"{name}_file"], str, f"{key}_file", origin),
                                      key, origin)
        if env_key in env:
            value, where = env[env_key], f"environment {env_key}"
        if name in secrets and f"{env_key}_FILE" in env:
            where = f"environment {env_key}_FILE"
            value = _read_secret_file(env[f"{env_key}_FILE"], key, where)
        if value is dataclasses.MISSING:
            continue
        coerced = _coerce(value, hints[f.name], key, where)
        choices = f.metadata.get("choices")
        if choices and coerced not in choices:
            raise ConfigError(f"{key} (from {where}): must be one of "
                              f"{', '.join(repr(c) for c in choices)}, got {coerced!r}")
        kwargs[f.name] = coerced
    return cls(**kwargs)


def _loopback(url_or_host: str) -> bool:
    host = urlsplit(url_or_host).hostname if "//" in url_or_host else url_or_host
    if host in {"localhost"}:
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


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
    """Whether a peer (an address, or aiosmtpd's (host, port) tuple) is in `networks`."""
    try:
        ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
    except (ValueError, TypeError, IndexError):
        return False
    return any(ip in net for net in networks)


def _check_address(value: str, key: str) -> None:
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError(f"{key}: {value!r} is not an e-mail address") from exc


def _validate(s: Settings) -> None:
    """Cross-field rules; each message says what to change."""
    if not s.data_dir:
        raise ConfigError(f"data_dir (from {s.source}): expected a directory path")
    parse_listen(s.smtp.listen, "smtp.listen")
    parse_listen(s.http.listen, "http.listen")
    parse_networks(s.smtp.trusted_networks, "smtp.trusted_networks")
    parse_networks(s.http.push_allow_from, "http.push_allow_from")
    if bool(s.smtp.tls_cert) != bool(s.smtp.tls_key):
        raise ConfigError("smtp.tls_cert and smtp.tls_key: set both (for STARTTLS) or neither")
    for cc_key, cc in (("numbers.default_country_code", s.numbers.default_country_code),
                       ("byosoku.country_code", s.byosoku.country_code)):
        if not (cc.isascii() and cc.isdigit() and 1 <= len(cc) <= 3):
            raise ConfigError(f"{cc_key}: expected 1 to 3 digits such as \"90\", got {cc!r}")
    for key, n in (("smtp.max_message_bytes", s.smtp.max_message_bytes),
                   ("smtp.max_recipients", s.smtp.max_recipients),
                   ("smtp.max_connections", s.smtp.max_connections),
                   ("smtp.max_connections_per_client", s.smtp.max_connections_per_client),
                   ("http.max_body_bytes", s.http.max_body_bytes),
                   ("faxmax.max_attempts", s.faxmax.max_attempts),
                   ("faxmax.concurrency", s.faxmax.concurrency),
                   ("faxmax.timeout", s.faxmax.timeout),
                   ("mail.max_attempts", s.mail.max_attempts),
                   ("documents.max_pages", s.documents.max_pages),
                   ("documents.memory_mb", s.documents.memory_mb),
                   ("documents.timeout", s.documents.timeout),
                   ("shutdown_timeout", s.shutdown_timeout)):
        if n <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {n}")
    if s.documents.retention_days < 0:
        raise ConfigError("documents.retention_days: must be 0 (keep forever) or more, got "
                          f"{s.documents.retention_days}")
    from bridge.numbers import NumberPolicy

    try:
        NumberPolicy.from_config(home_country=s.numbers.default_country_code,
                                 allow=s.numbers.allow, deny=s.numbers.deny)
    except ValueError as exc:
        raise ConfigError(f"[numbers] (from {s.source}): {exc}") from exc
    for tz_key, tz in (("mail.timezone", s.mail.timezone),
                       ("byosoku.timezone", s.byosoku.timezone)):
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"{tz_key}: unknown time zone {tz!r}; use a name such as "
                              "\"Europe/Istanbul\" or \"Asia/Tokyo\"") from exc
    if not parseaddr(s.mail.from_)[1]:
        raise ConfigError(f"mail.from: {s.mail.from_!r} is not an e-mail address")
    if s.mail.transport == "smtp" and not s.mail.smtp_host:
        raise ConfigError("mail.smtp_host: required when mail.transport = \"smtp\"")
    if s.routing.admin:
        _check_address(s.routing.admin, "routing.admin")
    for address in s.routing.default:
        _check_address(address, "routing.default")
    for number, addresses in s.routing.numbers.items():
        for address in addresses:
            _check_address(address, f"routing.numbers.{number}")
    for i, user in enumerate(s.smtp.users):
        if not user.name or not user.password_hash:
            raise ConfigError(f"smtp.users[{i}]: needs name and password_hash "
                              "(make one with `fax-bridge hash-password`)")
    for url_key, url in (("faxmax.url", s.faxmax.url), ("byosoku.log_url", s.byosoku.log_url),
                         ("byosoku.pdf_url", s.byosoku.pdf_url)):
        scheme = urlsplit(url).scheme
        if url and scheme != "https" and not (scheme == "http" and _loopback(url)):
            raise ConfigError(f"{url_key}: provider URLs must use https:// (plain http is "
                              f"allowed only on loopback), got {url!r}")
    if s.faxmax.enabled:
        if not s.faxmax.token and not (s.faxmax.username and s.faxmax.password):
            raise ConfigError("faxmax.token: required when faxmax.enabled (or set "
                              "faxmax.username and faxmax.password)")
        if len(s.http.push_token) < 16:
            raise ConfigError("http.push_token: required when faxmax.enabled, at least 16 "
                              "characters (e.g. `python3 -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))'`)")
    if s.byosoku.enabled:
        if not s.byosoku.log_url or not s.byosoku.pdf_url:
            raise ConfigError("byosoku.log_url and byosoku.pdf_url: required when "
                              "byosoku.enabled (copy both from the provider's admin panel)")
        loopback = _loopback(s.byosoku.log_url) and _loopback(s.byosoku.pdf_url)
        if s.byosoku.poll_interval < 60 and not loopback:
            raise ConfigError("byosoku.poll_interval: the provider allows one call per 60 "
                              f"seconds, got {s.byosoku.poll_interval}")
        if s.byosoku.pdf_interval < 1 and not loopback:
            raise ConfigError("byosoku.pdf_interval: the provider allows one PDF call per "
                              f"second, got {s.byosoku.pdf_interval}")


def load(
    path: Path | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Read settings from `path` (or defaults when None) and the environment, and validate."""
    env = os.environ if env is None else env
    table: dict[str, Any] = {}
    origin = "built-in defaults"
    if path is not None:
        origin = str(path)
        try:
            with path.open("rb") as fp:
                table = tomllib.load(fp)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file: "
                              f"{exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    sections = {f.name: f for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(
        typing.get_type_hints(Settings)[f.name])}
    hints = typing.get_type_hints(Settings)
    top = [f.name for f in dataclasses.fields(Settings)
           if f.name not in sections and f.compare]  # `source` is not a setting
    for key in table:
        if key not in sections and key not in top:
            raise ConfigError(f"{key} (from {origin}): unknown setting or section; known: "
                              f"{', '.join(top)}, {', '.join('[' + s + ']' for s in sections)}")
    scalars: dict[str, Any] = {}
    for name in top:
        env_key = f"{ENV_PREFIX}{name.upper()}"
        if env_key in env:
            scalars[name] = _coerce(env[env_key], hints[name], name, f"environment {env_key}")
        elif name in table:
            scalars[name] = _coerce(table[name], hints[name], name, origin)
    for var in env:  # a misspelt variable would otherwise be ignored without a word
        if not var.startswith(ENV_PREFIX):
            continue
        name, nested, _ = var[len(ENV_PREFIX):].lower().partition("__")
        if nested and name not in sections:
            raise ConfigError(f"environment {var}: there is no [{name}] section; known: "
                              f"{', '.join(sections)}")
        if not nested and name not in top and name.upper() not in COMMAND_VARIABLES:
            raise ConfigError(
                f"environment {var}: no such setting; top-level ones are "
                f"{', '.join(ENV_PREFIX + t.upper() for t in top)}, sections are set with "
                f"{ENV_PREFIX}<SECTION>__<KEY>")
    parts = {name: _load_section(hints[name], table.get(name, {}), name, origin, env)
             for name in sections}
    settings = Settings(source=origin, **scalars, **parts)
    _validate(settings)
    return settings


def find_config_file(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """`-c FILE`, else `$FAX_BRIDGE_CONFIG`, else `./fax-bridge.toml` if present, else None."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("FAX_BRIDGE_CONFIG"):
        return Path(env["FAX_BRIDGE_CONFIG"])
    default = Path("fax-bridge.toml")
    return default if default.exists() else None


def _plain(obj: Any, secret: Callable[[Any], Any]) -> Any:
    """Settings as plain data; each secret's value passes through `secret`."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.name == "source":
                continue
            value = getattr(obj, f.name)
            out[_key_name(f)] = _plain(secret(value) if f.metadata.get("secret") else value,
                                       secret)
        return out
    if isinstance(obj, tuple):
        return [_plain(v, secret) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _plain(v, secret) for k, v in obj.items()}
    return obj


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret replaced by asterisks."""
    result: dict[str, Any] = _plain(settings, lambda v: "********" if v else "")
    return result


def secret_values(settings: Settings) -> list[str]:
    """Every secret that is set, for the log redactor."""
    found: list[str] = []

    def keep(value: Any) -> Any:
        if value:
            found.append(str(value))
        return value

    _plain(settings, keep)
    return found


def to_toml(data: Mapping[str, Any]) -> str:
    """Render settings as TOML, for `check-config` output that can be pasted back into a file."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[" + ", ".join("{ " + ", ".join(f"{k} = {value(x)}" for k, x in d.items())
                                   + " }" for d in v) + "]"
        return json.dumps(v, ensure_ascii=False)

    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, v in data.items():
        if isinstance(v, Mapping):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {value(v)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        subtables = []
        for key, v in table.items():
            if isinstance(v, Mapping):
                subtables.append((key, v))
            else:
                lines.append(f"{key} = {value(v)}")
        for key, sub in subtables:
            lines.append(f"[{name}.{key}]")
            lines.extend(f"{json.dumps(k)} = {value(x)}" for k, x in sub.items())
    return "\n".join(lines) + "\n"
