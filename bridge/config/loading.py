"""Making `Settings`: the TOML file, then `FAX_BRIDGE_<SECTION>__<KEY>` overrides, then the rules.

Every value is checked against its field's declared type (a `Literal` against its choices) as it
is read, so a mistake is reported with the key and where its value came from; the cross-field
rules then say what to change.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Mapping
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bridge.config.settings import (
    FaxmaxSettings,
    Settings,
    key_name,
    parse_listen,
    parse_networks,
)
from bridge.errors import ConfigError

ENV_PREFIX = "FAX_BRIDGE_"
OCR_LANGUAGES = re.compile(r"[a-z]{3}(_[a-z]+)*(\+[a-z]{3}(_[a-z]+)*)*")
# Read by the command line, not settings: FAX_BRIDGE_CONFIG (the file), FAX_BRIDGE_LOG_FORMAT.
COMMAND_VARIABLES = ("CONFIG", "LOG_FORMAT")


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
    if hint is str or typing.get_origin(hint) is Literal:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        choices = typing.get_args(hint)
        if choices and value not in choices:
            raise ConfigError(f"{where}: must be one of "
                              f"{', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
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
    names = {key_name(f): f for f in dataclasses.fields(cls)}
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
        kwargs[f.name] = _coerce(value, hints[f.name], key, where)
    return cls(**kwargs)


def _loopback(url_or_host: str) -> bool:
    host = urlsplit(url_or_host).hostname if "//" in url_or_host else url_or_host
    if host in {"localhost"}:
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False



def _check_dialling(f: FaxmaxSettings) -> None:
    """A redial status must be a failure: a delivered fax is never dialled again."""
    delivered = {word.upper() for word in f.delivered_statuses}
    both = sorted(word for word in f.redial_statuses if word.upper() in delivered)
    if both:
        raise ConfigError(f"faxmax.redial_statuses: {', '.join(both)} also in "
                          "faxmax.delivered_statuses; a delivered fax is never dialled again")
    if any(delay <= 0 for delay in f.redial_delays):
        raise ConfigError("faxmax.redial_delays: every delay must be greater than 0 seconds, "
                          f"got {list(f.redial_delays)}; use [] for no redial")
    if f.match_window < 0:
        raise ConfigError(f"faxmax.match_window: must be 0 (never match) or more seconds, got "
                          f"{f.match_window}")


def _check_address(value: str, key: str) -> None:
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError, TypeError) as exc:
        raise ConfigError(f"{key}: {value!r} is not an e-mail address") from exc


def _check_languages(s: Settings) -> None:
    """A language is a directory name under `mail.templates_dir`, so only a plain code."""
    from bridge.language import TAG

    keys = [("mail.language", s.mail.language)]
    keys += [(f"mail.sender_languages.{k}", v) for k, v in s.mail.sender_languages.items()]
    keys += [(f"routing.languages.{k}", v) for k, v in s.routing.languages.items()]
    keys += [(f"smtp.users[{i}].language", u.language) for i, u in enumerate(s.smtp.users)
             if u.language]
    for key, value in keys:
        if not TAG.fullmatch(value):
            raise ConfigError(f"{key}: expected a language code such as \"en\", \"tr\" or "
                              f"\"ja\", got {value!r}")
    for key in s.mail.sender_languages:
        if "@" not in key:
            raise ConfigError(f"mail.sender_languages: {key!r} is neither an address nor an "
                              "@domain such as \"@example.co.jp\"")


def _validate(s: Settings) -> None:
    """Cross-field rules; each message says what to change."""
    if not s.data_dir:
        raise ConfigError(f"data_dir (from {s.source}): expected a directory path")
    parse_listen(s.smtp.listen, "smtp.listen")
    parse_listen(s.http.listen, "http.listen")
    parse_networks(s.smtp.trusted_networks, "smtp.trusted_networks")
    parse_networks(s.http.push_allow_from, "http.push_allow_from")
    parse_networks(s.http.metrics_allow_from, "http.metrics_allow_from")
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
                   ("smtp.auth_max_failures", s.smtp.auth_max_failures),
                   ("smtp.auth_lockout", s.smtp.auth_lockout),
                   ("http.max_body_bytes", s.http.max_body_bytes),
                   ("faxmax.max_attempts", s.faxmax.max_attempts),
                   ("faxmax.concurrency", s.faxmax.concurrency),
                   ("faxmax.per_number_concurrency", s.faxmax.per_number_concurrency),
                   ("faxmax.line_hold", s.faxmax.line_hold),
                   ("faxmax.max_schedule_days", s.faxmax.max_schedule_days),
                   ("faxmax.timeout", s.faxmax.timeout),
                   ("mail.max_attempts", s.mail.max_attempts),
                   ("mail.smtp_timeout", s.mail.smtp_timeout),
                   ("mail.smtp_final_dot_timeout", s.mail.smtp_final_dot_timeout),
                   ("documents.max_pages", s.documents.max_pages),
                   ("documents.memory_mb", s.documents.memory_mb),
                   ("documents.max_pdf_unpacked_mb", s.documents.max_pdf_unpacked_mb),
                   ("documents.timeout", s.documents.timeout),
                   ("documents.ocr_timeout", s.documents.ocr_timeout),
                   ("documents.ocr_memory_mb", s.documents.ocr_memory_mb),
                   ("shutdown_timeout", s.shutdown_timeout)):
        if n <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {n}")
    if s.documents.retention_days < 0:
        raise ConfigError("documents.retention_days: must be 0 (keep forever) or more, got "
                          f"{s.documents.retention_days}")
    for langs_key, langs in (("faxmax.ocr_languages", s.faxmax.ocr_languages),
                             ("byosoku.ocr_languages", s.byosoku.ocr_languages)):
        if not OCR_LANGUAGES.fullmatch(langs):
            raise ConfigError(f"{langs_key}: expected Tesseract language codes joined by +, "
                              f"such as \"tur+eng\", got {langs!r}")
    from bridge.numbers import NumberPolicy

    try:
        NumberPolicy.from_config(home_country=s.numbers.default_country_code,
                                 allow=s.numbers.allow, deny=s.numbers.deny)
    except ValueError as exc:
        raise ConfigError(f"[numbers] (from {s.source}): {exc}") from exc
    _check_dialling(s.faxmax)
    for tz_key, tz in (("mail.timezone", s.mail.timezone),
                       ("faxmax.timezone", s.faxmax.timezone),
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
    for number in s.routing.formats:
        if not number.lstrip("+").isdigit():
            raise ConfigError(f"routing.formats.{number}: the key must be a fax number, in "
                              "digits as in [routing.numbers] (such as \"81368680000\")")
    _check_languages(s)
    for i, user in enumerate(s.smtp.users):
        if not user.name or not user.password_hash:
            raise ConfigError(f"smtp.users[{i}]: needs name and password_hash "
                              "(make one with `fax-bridge hash-password`)")
        if not user.own_addresses:
            raise ConfigError(f"smtp.users[{i}] ({user.name}): set addresses, the addresses "
                              "this user sends as (MAIL FROM and the From: printed on the "
                              "cover page), or use an address as the name")
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

