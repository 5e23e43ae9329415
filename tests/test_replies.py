"""The reply catalogue (`bridge.replies`): every entry renders to one ASCII line that starts with
its codes and carries its `/metrics` label, and the README's table of refusals lists exactly the
refusals the catalogue has."""

from __future__ import annotations

import base64
import pickle
import re
import string
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import replies
from bridge.errors import DocumentError, NumberError, Refusal
from bridge.metrics import refusal_labels
from bridge.mime import inspect
from bridge.replies import CATALOGUE, Reply, render
from tests.reply_samples import SAMPLES

README = Path(__file__).parent.parent / "README.md"


# The `reason` labels `/metrics` has counted refusals under, by enhanced code (a 5xx without
# one here is "protocol"): dashboards and alerts use them, so they never change.
METRIC_REASONS = {
    "5.7.0": "auth_required", "5.7.8": "auth_failed", "5.7.1": "not_allowed",
    "5.1.1": "bad_number", "5.1.3": "bad_address", "5.3.4": "too_big",
    "5.6.0": "bad_content", "5.6.1": "unsupported_attachment",
    "4.5.3": "too_many_recipients", "4.7.1": "rate_limited", "4.7.0": "busy",
    "4.3.0": "internal_error", "4.3.1": "out_of_storage", "4.3.2": "shutting_down",
}

REFUSALS = {name: entry for name, entry in CATALOGUE.items() if entry.code >= 400}


def slots(entry: Reply) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(entry.words) if field}


def sample(entry: Reply) -> dict[str, object]:
    return {slot: SAMPLES[slot] for slot in slots(entry)}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_entry_renders_to_one_ascii_line_with_its_codes(name: str) -> None:
    entry = CATALOGUE[name]
    line = render(entry, **sample(entry))
    assert line.isascii() and line.isprintable()
    assert line.startswith(f"{entry.code} {entry.enhanced} ")
    assert re.fullmatch(r"[2-5][0-9][0-9]", str(entry.code))
    assert re.fullmatch(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", entry.enhanced)
    assert entry.enhanced[0] == str(entry.code)[0]  # RFC 3463: the class is the reply's
    assert re.fullmatch(r"[a-z_]+", entry.reason)
    assert "{" not in line and "}" not in line  # every slot was filled
    assert line.entry is entry
    assert refusal_labels(line) == (f"{entry.code} {entry.enhanced}", entry.reason)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_keep_the_metric_labels_they_always_had(name: str) -> None:
    entry = REFUSALS[name]
    assert entry.reason == METRIC_REASONS.get(entry.enhanced, "protocol")


def test_aiosmtpds_own_replies_are_counted_by_their_enhanced_code() -> None:
    assert refusal_labels("535 5.7.8 Authentication credentials invalid") == (
        "535 5.7.8", "auth_failed")
    assert refusal_labels("553 5.1.3 Error: malformed address") == ("553 5.1.3", "bad_address")
    assert refusal_labels("503 Error: need RCPT command")[1] == "protocol"
    assert refusal_labels("454 TLS not available")[1] == "other"


def test_slot_values_can_neither_leave_ascii_nor_end_the_line() -> None:
    line = render(replies.EMPTY_FILE, name="見積書\r\n250 OK")
    assert line == "554 5.6.1 '\\u898b\\u7a4d\\u66f8\\r\\n250 OK' is empty"
    assert render(replies.RECIPIENT_OK, "x@fax.local", number="902122222525") == (
        "250 2.1.5 <x@fax.local>: will be faxed to +902122222525")


def test_a_refusal_keeps_its_words_for_people_and_renders_its_reply() -> None:
    refusal = DocumentError(replies.EMPTY_FILE, name="見積書.pdf")
    assert str(refusal) == refusal.words == "'見積書.pdf' is empty"  # a report keeps the name
    assert refusal.reply == "554 5.6.1 '\\u898b\\u7a4d\\u66f8.pdf' is empty"
    assert (refusal.code, refusal.enhanced, refusal.entry) == (554, "5.6.1", replies.EMPTY_FILE)
    assert DocumentError("no TIFF").reply == "554 5.6.1 no TIFF"


@pytest.mark.parametrize("refusal", [
    Refusal(replies.TOO_MANY_PARTS, parts=100),
    NumberError(replies.TOO_LONG, local="'1234'", example="", max_digits=15),
    DocumentError(replies.TOO_SLOW, what="the mail", seconds=0.5),
    DocumentError("the received file is neither a TIFF nor a PDF"),
])
def test_refusals_cross_the_sandbox_boundary_whole(refusal: Refusal) -> None:
    again = pickle.loads(pickle.dumps(refusal))
    assert type(again) is type(refusal)
    assert (again.entry, again.slots, again.words, again.reply) == (
        refusal.entry, refusal.slots, refusal.words, refusal.reply)


def readme_refusals() -> set[tuple[int, str]]:
    """The code and enhanced code of every reply in the README's table of refusals."""
    section = README.read_text().split("### Refusals", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == "| situation | reply |"
    found: set[tuple[int, str]] = set()
    for row in rows[2:]:
        reply = row.rstrip(" |").rsplit(" | ", 1)[1]
        codes = re.findall(r"([2-5][0-9][0-9]) ([2-5]\.[0-9]{1,3}\.[0-9]{1,3})", reply)
        assert codes, row
        found.update((int(code), enhanced) for code, enhanced in codes)
    return found


def test_the_readme_lists_every_refusal_of_the_catalogue_and_no_other() -> None:
    catalogue = {(entry.code, entry.enhanced) for entry in REFUSALS.values()}
    assert readme_refusals() == catalogue


def test_accented_latin_letters_are_written_as_a_person_would_in_ascii() -> None:
    assert render(replies.EMPTY_FILE, name="Teklif_Şubat.docx") == (
        "554 5.6.1 'Teklif_Subat.docx' is empty")
    assert render(replies.EMPTY_FILE, name="İzmir ığüşöç ĞÜŞÖÇ Straße") == (
        "554 5.6.1 'Izmir igusoc GUSOC Strasse' is empty")
    # What has no ASCII letter is named exactly: a Japanese name, a full-width digit.
    assert render(replies.EMPTY_FILE, name="見積書０") == (
        "554 5.6.1 '\\u898b\\u7a4d\\u66f8\\uff10' is empty")


@settings(max_examples=300, deadline=None)
@given(name=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_a_refusal_naming_any_file_is_a_5xx_line_of_ascii(name: str) -> None:
    """Whatever a client names a file (RFC 2231 lets it send any character, CR and LF too),
    the refusal that names it is a permanent one, on one line of printable ASCII: never a 4xx
    made by its own words, never an exception. Through the checks that run before `250`
    (`mime.inspect`), with a ZIP archive of that name."""
    encoded = urllib.parse.quote(name, safe="")
    mail = (
        "From: alice@example.com\r\nTo: 02122222525@fax.local\r\nSubject: Teklif\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Disposition: attachment; filename*=utf-8''{encoded}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(b'PK' + bytes([3, 4]) + bytes(200)).decode()}\r\n--b--\r\n"
    ).encode()
    with pytest.raises(Refusal) as refused:
        inspect(mail)
    line = refused.value.reply
    assert line.startswith("554 5.6.1 "), line
    assert line.isascii() and line.isprintable(), line
