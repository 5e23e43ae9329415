"""The pure parts of the FaxMAX boundary: how each answer is classified (retry, fail, unknown),
how pushes are parsed, and the retry schedule."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import (
    ProviderError,
    ProviderOutcomeUnknown,
    ProviderPermanentError,
    ProviderTransientError,
)
from bridge.providers.faxmax import SendResult, interpret_response, parse_push
from bridge.retry import RetryPolicy


def ok_body(phones: list[dict[str, object]], rejected: list[object] | None = None) -> bytes:
    return json.dumps({"id": "x", "jsonrpc": "2.0", "result": {"message": {"data": {
        "count": len(phones), "phones": phones, "rejected": rejected or [],
        "request_id": "req-1"}}}}).encode()


def classify(status: int, body: bytes) -> type[ProviderError] | SendResult:
    try:
        return interpret_response(status, body, number="902122222525", job_id=7)
    except ProviderError as exc:
        return type(exc)


@pytest.mark.parametrize(("status", "body", "verdict"), [
    (200, ok_body([{"api_id": "7", "fax_id": "F1"}]), SendResult("F1", "req-1")),
    (200, ok_body([{"api_id": None, "fax_id": "F1"}]), SendResult("F1", "req-1")),
    (502, b"<html>Bad Gateway</html>", ProviderTransientError),
    (503, b"", ProviderTransientError),
    (504, b"", ProviderTransientError),
    (429, b"", ProviderTransientError),
    (500, b"<html>oops</html>", ProviderOutcomeUnknown),
    (200, b"<html>maintenance</html>", ProviderOutcomeUnknown),
    (200, b'{"id": "x", "result": {"mess', ProviderOutcomeUnknown),
    (200, b"[]", ProviderOutcomeUnknown),
    (200, ok_body([]), ProviderOutcomeUnknown),
    (401, b"", ProviderPermanentError),
    (403, b"", ProviderPermanentError),
    (400, b"bad request", ProviderPermanentError),
    (200, b'{"jsonrpc": "2.0", "id": "x", "error": {"code": 401, "message": "Invalid token"}}',
     ProviderPermanentError),
    (200, b'{"jsonrpc": "2.0", "id": "x", "error": {"code": 1, "message": "ERR_SERVER_BUSY"}}',
     ProviderTransientError),
    (200, b'{"jsonrpc": "2.0", "id": "x", "error": {"code": -32603, "message": "Internal"}}',
     ProviderOutcomeUnknown),
    (200, ok_body([], [{"phone": "902122222525", "api_id": "7", "message": "blocked"}]),
     ProviderPermanentError),
    (200, ok_body([], ["902122222525"]), ProviderPermanentError),
])
def test_every_answer_is_classified_by_whether_the_fax_could_have_gone_out(
    status: int, body: bytes, verdict: object
) -> None:
    assert classify(status, body) == verdict


def test_a_rejection_says_why_in_words() -> None:
    body = ok_body([], [{"phone": "902122222525", "api_id": "7", "message": "blocked number"}])
    with pytest.raises(ProviderPermanentError) as info:
        interpret_response(200, body, number="902122222525", job_id=7)
    assert str(info.value) == "FaxMAX rejected the number 902122222525: blocked number"


@given(st.integers(100, 599), st.binary(max_size=200))
def test_interpret_response_never_raises_anything_but_a_provider_error(
    status: int, body: bytes
) -> None:
    with contextlib.suppress(ProviderError):
        interpret_response(status, body, number="902122222525", job_id=7)


def test_push_parsing_splits_status_incoming_and_bad_events() -> None:
    body = json.dumps([
        {"type": "OUTGOING_FAX", "id": "F1", "status": "success", "page_count": "2",
         "result_message": "ok"},
        {"type": "INCOMING_FAX", "id": "I1", "content": "SUkqAA==", "cld": "902120000000"},
        {"type": "OUTGOING_FAX", "status": "SUCCESS"},
        {"type": "SOMETHING"},
        "not an object",
        {"type": "INCOMING_FAX", "id": "I2", "content": "@@not base64@@"},
        {"type": "INCOMING_FAX", "id": "I3", "content": "JVBERi0xLjQ="},
        {"type": "INCOMING_FAX", "id": "I4"},
        {"type": "INCOMING_FAX", "content": "SUkqAA=="},
    ]).encode()
    batch = parse_push(body)
    [event] = batch.status_events
    assert (event.fax_id, event.status, event.pages, event.result_message) == (
        "F1", "SUCCESS", 2, "ok")
    [fax] = batch.incoming
    assert (fax.fax_id, fax.receiving_number, fax.tiff) == ("I1", "902120000000", b"II*\0")
    assert [reason for _, reason in batch.bad] == [
        "an OUTGOING_FAX event lacks its id or status", "unknown event type 'SOMETHING'",
        "an event is not a JSON object", "the fax image (content) is not valid base64",
        "the fax image (content) is not a TIFF",
        "an INCOMING_FAX event has no fax image (content)",
        "an INCOMING_FAX event lacks its id"]


def test_a_replayed_event_has_the_same_key_and_a_different_one_does_not() -> None:
    event = {"type": "OUTGOING_FAX", "id": "F1", "status": "SUCCESS"}
    first = parse_push(json.dumps([event]).encode()).status_events[0]
    again = parse_push(json.dumps([dict(reversed(event.items()))]).encode()).status_events[0]
    other = parse_push(json.dumps([dict(event, status="FAILED")]).encode()).status_events[0]
    assert first.event_key == again.event_key != other.event_key


@given(st.binary(max_size=300))
def test_push_parsing_is_total(body: bytes) -> None:
    batch = parse_push(body)
    assert len(batch.status_events) + len(batch.incoming) + len(batch.bad) >= 0


def test_retry_schedule_doubles_with_jitter_and_stops_at_attempts_and_age() -> None:
    policy = RetryPolicy(base=30, cap=600, max_attempts=5, max_age=3600)
    assert [policy.delay(n, jitter=0.0) for n in (1, 2, 3, 4, 5, 6)] == [
        15, 30, 60, 120, 240, 300]
    assert [policy.delay(n, jitter=0.999999) for n in (1, 2)] == pytest.approx([30, 60])
    assert policy.next_attempt(attempts=2, first_at=0, now=100, jitter=0) == 130
    assert policy.next_attempt(attempts=5, first_at=0, now=100, jitter=0) is None
    assert policy.next_attempt(attempts=1, first_at=0, now=3590, jitter=0) is None
