"""Every template rendered with sample data before a real mail needs it: at start-up and by
`fax-bridge check-config`.

Templates are rendered one mail at a time, long after start-up, so an operator's override with a
typo would otherwise fail every report, fax mail or alert it is used for, each failure a log line
far from the edit that caused it. Production renders with `StrictUndefined`, so rendering each
template with exactly the variables its caller passes catches a misspelt variable as well as a
syntax error, an unknown filter or a missing file. Each template is rendered twice, once with
every optional value set and once with none, so both sides of its `{% if %}`s run, and in every
language (`bridge.language.languages_in_use`): the built-in translations, the operator's
`<language>/` overrides, and the English a missing one falls back to.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2

from bridge.config import Settings
from bridge.cover import MAX_COVER_PAGES
from bridge.errors import ConfigError
from bridge.language import format_time, languages_in_use, written_number
from bridge.mail import Templates
from bridge.previews import Picture
from bridge.providers import Provider
from bridge.store import FINAL_JOB_STATES, Attempt, Job, JobState, Message, MessageState
from bridge.workers.inbox import UNCONVERTED_NOTE
from bridge.workers.reporter import Copy, report_context

MAIL_PARTS = ("subject", "txt", "html")
"""`bridge.mail.compose` makes a mail from `<name>.subject.j2`, `.txt.j2` and `.html.j2`."""
COVER = "cover.html.j2"

RECEIVED_AT = 1_790_000_000.0  # a fixed moment, so two checks render the same text


def _report(settings: Settings, state: JobState, full: bool, lang: str) -> dict[str, Any]:
    """What the reporter passes: `report_context` itself, on a sample job and its mail."""
    message = Message(
        id=1, state=MessageState.READY, mail_from="alice@example.com",
        header_from="Alice Example <alice@example.com>",
        subject="Invoice 42" if full else "", message_id="<invoice-42@example.com>", refs="",
        spool_path="", document_path=None, cover_html=None, pages=3 if full else None,
        left_out=("signature.asc (a digital signature)",) if full else (), error=None,
        received_at=RECEIVED_AT, cover_pages=1 if full else 0)
    delivered = state is JobState.DELIVERED
    job = Job(
        id=7, message=1, number="902122222525", recipient="02122222525@fax.local",
        sender="alice@example.com", state=state, attempts=2 if full else 1,
        next_attempt_at=0.0, created_at=RECEIVED_AT, updated_at=RECEIVED_AT + 120,
        fax_id="3f2c1a9e-5b7d-4c1e-9a3b-1d2e3f4a5b6c" if full else None,
        provider_status=("SUCCESS" if delivered else "BUSY") if full else "",
        pages_sent=3 if full and delivered else None,
        detail="" if delivered or not full else "the line was busy on every attempt",
        submitted_at=RECEIVED_AT + 10, finished_at=RECEIVED_AT + 300 if full else None,
        reported="", resolution="superfine" if full else None, cover_sent=True if full else None,
        send_at=RECEIVED_AT + 60 if full else None, dials=3 if full else 0)
    attempts = [Attempt(
        job=7, round=1, fax_id=f"3f2c1a9e-{n}", submitted_at=RECEIVED_AT + 10 + 130 * n,
        status=status, pages=pages, tried=1, result_message=words,
        finished_at=RECEIVED_AT + 40 + 130 * n, redial_at=redial, matched="")
        for n, (status, pages, words, redial) in enumerate((
            ("BUSY", 0, "Line busy", RECEIVED_AT + 160),
            ("NO_ANSWER", 0, "No answer", RECEIVED_AT + 290),
            (job.provider_status, job.pages_sent, "", None)))] if full else []
    copy = Copy(sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                printed=Picture(page=1, png=b"", width=600, height=848), pdf=b"%PDF-1.7",
                station="ACME LTD") if full else Copy(gone=True)
    return report_context(job, message, settings.mail.timezone, settings.faxmax, attempts,
                          copy, "printed-page-1.job-7@localhost", lang,
                          settings.numbers.default_country_code)


def _fax(tz: str, full: bool, lang: str) -> dict[str, Any]:
    """What the inbox passes: `Inbox.letter`'s context plus what `fax_mail` adds."""
    received = format_time(RECEIVED_AT, tz, lang)
    if full:
        return {"sender": "903125550000", "station": "ACME LTD", "number": "+902121110000",
                "received": received, "provider": Provider.FAXMAX.display_name,
                "written_sender": written_number("903125550000", "90", lang),
                "written_number": written_number("902121110000", "90", lang),
                "pages": 2, "filename": "fax-2026-09-21-1713-from-903125550000.tif",
                "filenames": ["fax-2026-09-21-1713-from-903125550000.tif"],
                "note": UNCONVERTED_NOTE, "notice": False, "fax_ref": 12,
                "excerpt": "FATURA\nSayın İlkay Doğan\n請求書",
                "preview": {"cid": "page-1.fax@localhost", "page": 1, "width": 600,
                            "height": 848},
                "thumbnails": [{"cid": "page-2.fax@localhost", "page": 2, "width": 150,
                                "height": 212}]}
    return {"sender": "withheld", "station": "", "number": "+81368680000",
            "received": received, "provider": Provider.BYOSOKU.display_name,
            "written_sender": written_number("", "81", lang),
            "written_number": written_number("81368680000", "81", lang),
            "pages": 1, "filename": "", "filenames": [], "note": "", "notice": True,
            "fax_ref": 13, "preview": None, "thumbnails": [], "excerpt": ""}


def _alert(full: bool) -> dict[str, Any]:
    """What `Alerter.alert` passes."""
    return {"summary": "received fax 12 could not be converted to PDF",
            "details": "not a readable TIFF\nIt was delivered as the original file." if full
            else "",
            "suppressed": 3 if full else 0, "cause": "inbound-conversion-12"}


def _cover(full: bool) -> dict[str, Any]:
    """What `workers.converter.make_cover` passes (with `cover_page = "always"` the text may
    be ""; `shortened`: the characters cut, 0 for none)."""
    if full:
        return {"text": "Please find the invoice attached.\nKind regards", "subject":
                "Invoice 42", "sender": "Alice Example <alice@example.com>",
                "shortened": 2230, "max_pages": MAX_COVER_PAGES}
    return {"text": "", "subject": "", "sender": "alice@example.com", "shortened": 0,
            "max_pages": MAX_COVER_PAGES}


def samples(settings: Settings, lang: str = "en"
            ) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(template name, what the sample is, its context) for every template the bridge renders,
    with the values as a reader of `lang` gets them."""
    tz = settings.mail.timezone
    for full in (True, False):
        values = "every value set" if full else "optional values empty"
        for state in FINAL_JOB_STATES:
            for part in MAIL_PARTS:
                yield (f"report.{part}.j2", f"{state} report, {values}",
                       _report(settings, state, full, lang))
        for part in MAIL_PARTS:
            yield f"fax.{part}.j2", f"received fax, {values}", _fax(tz, full, lang)
            yield f"alert.{part}.j2", f"alert, {values}", _alert(full)
        yield COVER, f"cover page, {values}", _cover(full)


def check_templates(templates: Templates, settings: Settings) -> None:
    """Render every template with its samples; ConfigError naming the file on the first failure.

    `templates` must be the set built from `settings.mail.templates_dir`.
    """
    directory = settings.mail.templates_dir
    if directory and not Path(directory).is_dir():
        raise ConfigError(f"mail.templates_dir: {directory!r} is not a directory")
    for lang in languages_in_use(settings):
        for name, what, context in samples(settings, lang):
            _check(templates, name, what if lang == "en" else f"{what}, in {lang!r}",
                   context, lang)


def _check(templates: Templates, name: str, what: str, context: dict[str, Any],
           lang: str) -> None:
    """One sample rendered; ConfigError naming the file the template came from."""
    directory = templates.override_dir
    try:
        templates.render(name, context, lang)
    except jinja2.TemplateNotFound as exc:
        where = f"mail.templates_dir ({directory!r}) or " if directory else ""
        raise ConfigError(f"template {exc.name}: not found in {where}the built-in "
                          "templates") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {exc.filename or templates.filename(name, lang)}, line "
                          f"{exc.lineno}: {exc.message}") from exc
    except Exception as exc:  # whatever the template raised would stop the real mail too
        message = str(exc) if isinstance(exc, jinja2.TemplateError) else (
            f"{type(exc).__name__}: {exc}")
        raise ConfigError(f"template {_where(exc, templates.filename(name, lang))}: {message} "
                          f"(rendering a sample {what})") from exc


def _where(exc: BaseException, filename: str) -> str:
    """The file and line the error came from: Jinja puts template frames in the traceback, so
    the deepest one names an included file when the error is there."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.endswith(".py") and not frame.filename.startswith("<")]
    if not frames:
        return filename
    return f"{frames[-1].filename}, line {frames[-1].lineno}"
