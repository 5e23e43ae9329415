"""Log output: one line per event, as text for people or as JSON for log collectors.

Both formats go to standard error, where systemd's journal and container runtimes collect them.
Configured secrets are replaced by `***` in every line, whatever logged them, so that a token in
an exception message or a URL cannot leak into a log store.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterable
from typing import Literal, get_args

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Third-party loggers that narrate every session or page at INFO.
QUIET = ("aiosmtpd", "mail.log", "pikepdf")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the
    traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class Redactor(logging.Filter):
    """Replaces each secret in the formatted message and traceback by `***`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        text = record.exc_text or (logging.Formatter().formatException(record.exc_info)
                                   if record.exc_info else "")
        if any(s in message or s in text for s in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
                text = text.replace(secret, "***")
            record.msg, record.args = message, None
            record.exc_text = text or None  # formatters print this instead of exc_info
        return True


def setup(*, verbose: bool, fmt: LogFormat = "text", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once, for a command that runs the service."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
