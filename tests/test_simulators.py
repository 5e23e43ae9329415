"""The loopback FaxMAX and 秒速FAX Plus simulators behave as the provider docs say; faults work."""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import re
import socket
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from pypdf import PdfReader

from bridge.clock import FakeClock
from bridge.simulators import (
    JAPAN_TIME,
    ByosokuFault,
    ByosokuSimulator,
    Fault,
    FaxMaxSimulator,
    PushAttempt,
    count_pdf_pages,
    count_tiff_pages,
    format_provider_time,
)

TOKEN = "sim-token"
PHONE = "902122222525"
PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R >> endobj\n"
    b"4 0 obj <</Type/Page/Parent 2 0 R>> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)
TIME_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


# -- helpers ----------------------------------------------------------------------------------


def rpc(rpc_id: Any = "req-1", method: str = "Fax.send_fax", **params: Any) -> dict[str, Any]:
    params.setdefault("token_", TOKEN)
    params.setdefault("phones", PHONE)
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}


def form(
    data: dict[str, Any] | str,
    *,
    document: bytes = PDF,
    filename: str = "doc.pdf",
    content_type: str = "application/pdf",
) -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("fax_file", document, filename=filename, content_type=content_type)
    body.add_field("data", data if isinstance(data, str) else json.dumps(data))
    return body


async def post(
    client: aiohttp.ClientSession, url: str, body: Any, timeout: float = 5.0
) -> dict[str, Any]:
    async with client.post(url, data=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        answer: dict[str, Any] = await r.json()
        return answer


async def send(client: aiohttp.ClientSession, sim: FaxMaxSimulator, **params: Any) -> Any:
    """A valid send; returns result.message.data."""
    answer = await post(client, sim.url, form(rpc(**params)))
    assert "error" not in answer, answer
    return answer["result"]["message"]["data"]


class Receiver:
    """Stands in for the bridge's push URL: records bodies, answers scripted statuses."""

    def __init__(self) -> None:
        self.answers: collections.deque[int] = collections.deque()
        self.bodies: list[Any] = []
        self.log: list[str] | None = None
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        if self.log is not None:
            self.log.append("push")
        return web.Response(status=self.answers.popleft() if self.answers else 200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/push"


@pytest.fixture
async def sim() -> AsyncIterator[FaxMaxSimulator]:
    simulator = FaxMaxSimulator(push_delay=0.0, push_retry_interval=0.01)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        assert rec.runner is not None
        await rec.runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- the send call ----------------------------------------------------------------------------


async def test_valid_send_answers_the_documented_shape_and_is_recorded(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", sim.url)
    sent = rpc("a39f38f3-76cc-4441-b6dd-7d5459cf9ae2", cli="902165550000", resolution="fine")
    answer = await post(client, sim.url, form(sent))

    assert set(answer) == {"id", "jsonrpc", "result"}
    assert answer["id"] == "a39f38f3-76cc-4441-b6dd-7d5459cf9ae2"
    assert answer["jsonrpc"] == "2.0"
    data = answer["result"]["message"]["data"]
    assert set(data) == {"count", "phones", "rejected", "request_id"}
    assert data["count"] == 1
    assert data["rejected"] == []
    assert UUID_RE.fullmatch(data["request_id"])
    [phone] = data["phones"]
    assert phone["api_id"] is None
    assert UUID_RE.fullmatch(phone["fax_id"])

    [recorded] = sim.requests
    assert recorded.data == sent
    assert recorded.filename == "doc.pdf"
    assert recorded.content_type == "application/pdf"
    assert recorded.document == PDF
    assert recorded.headers["Content-Type"].startswith("multipart/form-data")
    assert recorded.response == answer
    assert recorded.fault is None
    [fax] = recorded.accepted
    assert (fax.fax_id, fax.phone, fax.cli, fax.pages) == (
        phone["fax_id"],
        PHONE,
        "902165550000",
        2,
    )
    assert sim.sent_numbers() == [PHONE]
    assert sim.faxes == [fax]


@pytest.mark.parametrize(
    "auth",
    [
        {"token": TOKEN},
        {"token_": TOKEN},
        {"token": TOKEN, "token_": TOKEN},
    ],
)
async def test_token_spellings_are_all_accepted(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, auth: dict[str, str]
) -> None:
    params: dict[str, Any] = {"phones": PHONE, **auth}
    data = {"jsonrpc": "2.0", "id": 7, "method": "Fax.send_fax", "params": params}
    answer = await post(client, sim.url, form(data))
    assert answer["id"] == 7
    assert answer["result"]["message"]["data"]["count"] == 1


async def test_username_and_password_instead_of_token(client: aiohttp.ClientSession) -> None:
    simulator = FaxMaxSimulator(username="acme", password="s3cret")
    await simulator.start()
    try:
        params = {"username": "acme", "password": "s3cret", "phones": PHONE}
        data = {"jsonrpc": "2.0", "id": "u", "method": "Fax.send_fax", "params": params}
        answer = await post(client, simulator.url, form(data))
        assert answer["result"]["message"]["data"]["count"] == 1
        params["password"] = "wrong"
        answer = await post(client, simulator.url, form(data))
        assert answer["error"]["code"] == 401
    finally:
        await simulator.stop()


@pytest.mark.parametrize(
    "auth",
    [{"token_": "wrong"}, {"token": "wrong"}, {}, {"token": TOKEN, "token_": "other"}],
)
async def test_bad_or_missing_token_is_a_jsonrpc_error(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, auth: dict[str, str]
) -> None:
    params = {"phones": PHONE, **auth}
    data = {"jsonrpc": "2.0", "id": "x", "method": "Fax.send_fax", "params": params}
    answer = await post(client, sim.url, form(data))
    assert answer == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": 401, "message": answer["error"]["message"]},
    }
    assert "Invalid" in answer["error"]["message"]
    assert sim.sent_numbers() == []
    assert sim.requests[0].response == answer


async def test_phones_in_all_three_forms(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    data = await send(client, sim, phones="902161111111")
    assert [p["api_id"] for p in data["phones"]] == [None]

    data = await send(client, sim, phones=["902162222222", "902123333333"])
    assert data["count"] == 2
    assert [p["api_id"] for p in data["phones"]] == [None, None]

    objects = [{"phone": "902164444444", "api_id": "1234"}, {"phone": "902125555555"}]
    data = await send(client, sim, phones=objects)
    assert data["count"] == 2
    assert [p["api_id"] for p in data["phones"]] == ["1234", None]
    assert len({p["fax_id"] for p in data["phones"]}) == 2

    assert sim.sent_numbers() == [
        "902161111111",
        "902162222222",
        "902123333333",
        "902164444444",
        "902125555555",
    ]
    assert sim.faxes[3].api_id == "1234"


async def test_rejected_numbers_get_no_fax_id(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.rejected_numbers.add("902129999999")
    phones = [
        {"phone": "+902121111111", "api_id": "a"},
        {"phone": "902129999999", "api_id": "b"},
        {"phone": "0212 222 22 22", "api_id": "c"},
        {"phone": "٩٠٢١٢", "api_id": "d"},  # Arabic-Indic digits are not digits here
        {"phone": PHONE, "api_id": "e"},
    ]
    data = await send(client, sim, phones=phones)
    assert data["count"] == 1
    assert data["phones"] == [{"api_id": "e", "fax_id": sim.faxes[0].fax_id}]
    assert [(r["phone"], r["api_id"]) for r in data["rejected"]] == [
        ("+902121111111", "a"),
        ("902129999999", "b"),
        ("0212 222 22 22", "c"),
        ("٩٠٢١٢", "d"),
    ]
    assert all(r["message"] and "fax_id" not in r for r in data["rejected"])
    assert sim.sent_numbers() == [PHONE]


async def test_all_rejected_is_still_a_result(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    data = await send(client, sim, phones="+90")
    assert data["count"] == 0
    assert data["phones"] == []
    assert len(data["rejected"]) == 1


@pytest.mark.parametrize(
    ("options", "ok"),
    [
        ({"resolution": "normal", "paper_size": "letter"}, True),
        ({"resolution": "superfine", "paper_size": "legal"}, True),
        ({"resolution": "süperfine", "paper_size": "A4"}, True),
        ({"resolution": "ultra"}, False),
        ({"paper_size": "a4"}, False),
        ({"paper_size": "A3"}, False),
        ({"cli": 902165550000}, False),
        ({"phone_books": ["1", "2"], "contacts": "3", "cover_html": "<p>Hi</p>"}, True),
        ({"contacts": [3]}, False),
    ],
)
async def test_options_are_checked(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, options: dict[str, Any], ok: bool
) -> None:
    answer = await post(client, sim.url, form(rpc(**options)))
    if ok:
        assert answer["result"]["message"]["data"]["count"] == 1
    else:
        assert answer["error"]["code"] == -32602
        assert sim.sent_numbers() == []


async def test_cover_page_counts_as_a_page(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    await send(client, sim, cover_html="<h1>Cover</h1>")
    assert sim.faxes[0].pages == 3


def _multipart_without_filename() -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(PDF, {"Content-Type": "application/pdf"})
    part.set_content_disposition("form-data", name="fax_file")
    part = writer.append(json.dumps(rpc()))
    part.set_content_disposition("form-data", name="data")
    return writer


def _data_only() -> aiohttp.FormData:
    body = aiohttp.FormData(default_to_multipart=True)
    body.add_field("data", json.dumps(rpc()))
    return body


def _file_only() -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("fax_file", PDF, filename="doc.pdf", content_type="application/pdf")
    return body


@pytest.mark.parametrize(
    ("make_body", "code", "echoed_id"),
    [
        (lambda: json.dumps(rpc()).encode(), -32600, None),  # not multipart
        (_file_only, -32600, None),
        (_data_only, -32600, "req-1"),
        (_multipart_without_filename, -32600, "req-1"),
        (lambda: form(rpc(), document=b""), -32600, "req-1"),
        (lambda: form('{"jsonrpc": "2.0", "id": "req-1", "method": "Fax.se'), -32700, None),
        (lambda: form("[1, 2]"), -32600, None),
        (lambda: form({**rpc(), "jsonrpc": "1.0"}), -32600, "req-1"),
        (lambda: form({k: v for k, v in rpc().items() if k != "id"}), -32600, None),
        (lambda: form(rpc(method="Fax.cancel_fax")), -32601, "req-1"),
        (lambda: form({**rpc(), "params": ["x"]}), -32602, "req-1"),
        (lambda: form(rpc(phones=None)), -32602, "req-1"),
        (lambda: form(rpc(phones=[])), -32602, "req-1"),
        (lambda: form(rpc(phones=[902122222525])), -32602, "req-1"),
        (lambda: form(rpc(phones=[{"api_id": "1"}])), -32602, "req-1"),
    ],
)
async def test_invalid_requests_get_jsonrpc_errors(
    sim: FaxMaxSimulator,
    client: aiohttp.ClientSession,
    make_body: Any,
    code: int,
    echoed_id: str | None,
) -> None:
    answer = await post(client, sim.url, make_body())
    assert answer["jsonrpc"] == "2.0"
    assert answer["id"] == echoed_id
    assert answer["error"]["code"] == code
    assert isinstance(answer["error"]["message"], str)
    assert "result" not in answer
    assert sim.sent_numbers() == []
    [recorded] = sim.requests
    assert recorded.response == answer


async def test_non_pdf_documents_are_accepted_and_recorded(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    body = form(rpc(), document=b"II*\x00tiff", filename="x.tif", content_type="image/tiff")
    answer = await post(client, sim.url, body)
    assert answer["result"]["message"]["data"]["count"] == 1
    assert (sim.requests[0].filename, sim.requests[0].content_type) == ("x.tif", "image/tiff")
    assert sim.requests[0].document == b"II*\x00tiff"


# -- faults -----------------------------------------------------------------------------------


async def test_http_fault_answers_the_page_and_takes_no_effect(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.faults.extend([Fault.http(503), Fault.http(500, "oops", content_type="text/plain")])
    async with client.post(sim.url, data=form(rpc())) as response:
        assert response.status == 503
        assert response.content_type == "text/html"
        assert "503" in await response.text()
    async with client.post(sim.url, data=form(rpc())) as response:
        assert response.status == 500
        assert response.content_type == "text/plain"
        assert await response.text() == "oops"
    assert [r.fault for r in sim.requests] == [
        Fault.http(503),
        Fault.http(500, "oops", "text/plain"),
    ]
    assert all(r.response is None and r.accepted == () for r in sim.requests)
    assert sim.sent_numbers() == []
    await send(client, sim)  # faults are used up one per call
    assert sim.sent_numbers() == [PHONE]


async def test_jsonrpc_error_fault(sim: FaxMaxSimulator, client: aiohttp.ClientSession) -> None:
    sim.faults.append(Fault.jsonrpc_error(-32000, "Invalid number"))
    answer = await post(client, sim.url, form(rpc("abc")))
    assert answer == {
        "jsonrpc": "2.0",
        "id": "abc",
        "error": {"code": -32000, "message": "Invalid number"},
    }
    assert sim.requests[0].response == answer
    assert sim.sent_numbers() == []


@pytest.mark.parametrize("took_effect", [False, True])
async def test_malformed_json_fault(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, took_effect: bool
) -> None:
    sim.faults.append(Fault.malformed_json(took_effect=took_effect))
    async with client.post(sim.url, data=form(rpc())) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        text = await response.text()
    assert text.startswith('{"id": "req-1"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert sim.requests[0].response is None
    assert sim.sent_numbers() == ([PHONE] if took_effect else [])


async def test_stall_times_the_client_out_but_took_effect(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    sim.faults.append(Fault.stall(30))
    with pytest.raises(TimeoutError):
        await post(client, sim.url, form(rpc()), timeout=0.3)
    await sim.wait_for_requests(1)
    assert sim.requests[0].response is None
    assert sim.requests[0].fault == Fault.stall(30)
    assert sim.sent_numbers() == [PHONE]
    await sim.wait_for_pushes_acknowledged(1)  # the fax goes out although nobody heard back
    assert receiver.bodies[0][0]["id"] == sim.faxes[0].fax_id


async def test_short_stall_then_answers_normally(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.faults.append(Fault.stall(0.05))
    data = await send(client, sim)
    assert data["count"] == 1
    assert sim.sent_numbers() == [PHONE]


async def test_reset_drops_the_connection_after_taking_effect(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.faults.append(Fault.reset())
    with pytest.raises(DISCONNECTED):
        await post(client, sim.url, form(rpc()))
    [recorded] = sim.requests
    assert recorded.response is None
    assert recorded.fault == Fault.reset()
    assert sim.sent_numbers() == [PHONE]


@pytest.mark.parametrize("size", [len(PDF), 4 * 1024 * 1024])
async def test_refuse_before_reading_takes_no_effect(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, size: int
) -> None:
    document = (PDF * (size // len(PDF) + 1))[:size]
    body = aiohttp.FormData()
    # as a stream: large raw bytes make aiohttp warn, and warnings are errors here
    body.add_field("fax_file", io.BytesIO(document), filename="doc.pdf")
    body.add_field("data", json.dumps(rpc()))
    sim.faults.append(Fault.refuse_before_reading())
    with pytest.raises(DISCONNECTED):
        await post(client, sim.url, body)
    assert sim.calls == 1
    assert sim.requests == []
    assert sim.sent_numbers() == []
    await send(client, sim)
    assert sim.sent_numbers() == [PHONE]


# -- pushes -----------------------------------------------------------------------------------


async def test_push_is_retried_until_acknowledged(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    receiver.answers.extend([500, 500, 200])
    data = await send(client, sim, cli="902165550000")
    await sim.wait_for_pushes_acknowledged(1)

    assert [p.status for p in sim.pushes] == [500, 500, 200]
    assert [p.attempt for p in sim.pushes] == [1, 2, 3]
    assert [p.acknowledged for p in sim.pushes] == [False, False, True]
    assert all(isinstance(p, PushAttempt) and p.url == receiver.url for p in sim.pushes)
    assert sim.pushes[0].at <= sim.pushes[1].at <= sim.pushes[2].at
    assert len(receiver.bodies) == 3
    assert receiver.bodies[0] == receiver.bodies[1] == receiver.bodies[2]
    assert receiver.bodies[0] == sim.pushes[0].body

    [event] = receiver.bodies[0]
    assert event["type"] == "OUTGOING_FAX"
    assert event["id"] == data["phones"][0]["fax_id"]
    assert event["cli"] == "902165550000"
    assert event["cld"] == PHONE
    assert event["status"] == "SUCCESS"
    assert event["result_message"] == "Fax delivered"
    assert (event["page_count"], event["total_page_count"]) == (2, 2)
    assert event["tried_count"] == 1
    for key in ("requested_on", "sent_on", "queued_on", "tried_on"):
        assert TIME_RE.fullmatch(event[key]), key
    expected = {
        "type", "id", "account_id", "account_name", "cli", "cld", "status", "requested_on",
        "result_message", "page_count", "total_page_count", "ecm_used", "has_t38",
        "remote_station_id", "fax_encoding", "transfer_rate", "sent_on", "queued_on",
        "tried_on", "tried_count",
    }  # fmt: skip
    assert set(event) == expected


async def test_status_sequence_is_pushed_in_order(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    sim.statuses[PHONE] = ["QUEUED", "FAILED"]
    sim.result_messages[PHONE] = "No answer"
    await send(client, sim, phones=[PHONE, "902161111111"])
    await sim.wait_for_pushes_acknowledged(3)
    mine = [body[0] for body in receiver.bodies if body[0]["cld"] == PHONE]
    assert [e["status"] for e in mine] == ["QUEUED", "FAILED"]
    assert [e["result_message"] for e in mine] == ["", "No answer"]
    assert [e["tried_count"] for e in mine] == [0, 1]
    assert mine[1]["page_count"] == 0
    assert mine[1]["sent_on"] == ""
    other = [body[0] for body in receiver.bodies if body[0]["cld"] == "902161111111"]
    assert [e["status"] for e in other] == ["SUCCESS"]


async def test_final_status_default(client: aiohttp.ClientSession, receiver: Receiver) -> None:
    simulator = FaxMaxSimulator(push_url=receiver.url, push_delay=0.0, final_status="FAILED")
    await simulator.start()
    try:
        await send(client, simulator)
        await simulator.wait_for_pushes_acknowledged(1)
        assert receiver.bodies[0][0]["status"] == "FAILED"
    finally:
        await simulator.stop()


async def test_unreachable_push_url_gives_up_after_max_attempts(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim.push_url = f"http://127.0.0.1:{port}/push"
    sim.push_max_attempts = 3
    await send(client, sim)
    await sim.wait_for_push_attempts(3)
    assert [p.status for p in sim.pushes] == [None, None, None]
    assert all(p.error for p in sim.pushes)
    assert sim.pushes_acknowledged() == 0


async def test_no_push_url_means_no_pushes(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.push_before_response = True  # must not block without a URL
    await send(client, sim)
    assert sim.pushes == []


async def test_push_before_response(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    sim.push_delay = 0.05
    sim.push_before_response = True
    sim.statuses[PHONE] = ["QUEUED", "SUCCESS"]
    receiver.log = []
    await send(client, sim)
    receiver.log.append("response")
    assert receiver.log == ["push", "push", "response"]
    assert sim.pushes_acknowledged() == 2


async def test_push_after_response_by_default(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    sim.push_delay = 0.05
    receiver.log = []
    await send(client, sim)
    receiver.log.append("response")
    await sim.wait_for_pushes_acknowledged(1)
    assert receiver.log == ["response", "push"]


async def test_push_events_sends_an_arbitrary_array(
    sim: FaxMaxSimulator, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    receiver.answers.append(503)
    events = [{"type": "INCOMING_FAX", "id": "in-1", "content": "SUkqAA=="}]
    await sim.push_events(events)
    assert receiver.bodies == [events, events]
    assert [p.status for p in sim.pushes] == [503, 200]


async def test_stop_cancels_pending_pushes(
    client: aiohttp.ClientSession, receiver: Receiver
) -> None:
    simulator = FaxMaxSimulator(push_url=receiver.url, push_delay=0.0, push_retry_interval=30)
    receiver.answers.append(500)
    await simulator.start()
    await send(client, simulator)
    await simulator.wait_for_push_attempts(1)
    await asyncio.wait_for(simulator.stop(), 1.0)  # the 30 s retry wait is cancelled
    await simulator.stop()  # idempotent
    assert len(receiver.bodies) == 1


# -- pause ------------------------------------------------------------------------------------


async def test_pause_holds_calls_until_resume(
    sim: FaxMaxSimulator, client: aiohttp.ClientSession
) -> None:
    sim.pause()
    assert sim.paused
    tasks = [asyncio.create_task(send(client, sim, phones=f"9021200000{i}")) for i in range(3)]
    await sim.wait_for_paused_calls(3)
    assert sim.requests == []
    assert not any(task.done() for task in tasks)
    sim.resume()
    assert not sim.paused
    results = await asyncio.gather(*tasks)
    assert [r["count"] for r in results] == [1, 1, 1]
    assert sorted(sim.sent_numbers()) == [f"9021200000{i}" for i in range(3)]
    assert sim.paused_calls == 0


async def test_stop_while_paused_drops_the_calls(client: aiohttp.ClientSession) -> None:
    simulator = FaxMaxSimulator()
    await simulator.start()
    simulator.pause()
    task = asyncio.create_task(send(client, simulator))
    await simulator.wait_for_paused_calls(1)
    await asyncio.wait_for(simulator.stop(), 1.0)
    with pytest.raises(DISCONNECTED):
        await task
    assert simulator.requests == []


# -- helpers ----------------------------------------------------------------------------------


async def test_waits_time_out_with_a_message(sim: FaxMaxSimulator) -> None:
    with pytest.raises(TimeoutError, match="1 requests"):
        await sim.wait_for_requests(1, timeout=0.01)


def test_count_pdf_pages() -> None:
    assert count_pdf_pages(PDF) == 2
    assert count_pdf_pages(b"<< /Type /Pages >>") == 0
    assert count_pdf_pages(b"<</Type/Page>>") == 1
    assert count_pdf_pages(b"not a pdf") == 0


def test_format_provider_time() -> None:
    assert format_provider_time(datetime(2016, 1, 5, 12, 5, 31)) == "2016-01-05 12:05:31"


# -- FaxMAX incoming faxes --------------------------------------------------------------------


def tiff(pages: int) -> bytes:
    images = [Image.new("1", (16, 16), 1) for _ in range(pages)]
    out = io.BytesIO()
    images[0].save(out, format="TIFF", save_all=True, append_images=images[1:])
    return out.getvalue()


def test_count_tiff_pages() -> None:
    assert count_tiff_pages(tiff(1)) == 1
    assert count_tiff_pages(tiff(3)) == 3
    # big-endian, two empty IFDs at 8 and 14
    big = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">HI", 0, 14) + struct.pack(">HI", 0, 0)
    assert count_tiff_pages(big) == 2
    looped = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, 8)  # points at itself
    assert count_tiff_pages(looped) == 1
    truncated = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 40)
    assert count_tiff_pages(truncated) == 1
    assert count_tiff_pages(b"not a tiff") == 1
    assert count_tiff_pages(b"II*\x00") == 1


def test_incoming_event_has_the_documented_fields(sim: FaxMaxSimulator) -> None:
    document = tiff(3)
    hostile = "EVIL\r\nBcc: x@example.com\n"
    event = sim.incoming_event(tiff=document, cld="902122222525", remote_station_id=hostile)
    assert set(event) == {
        "type", "id", "account_id", "account_name", "cli", "cld", "status", "requested_on",
        "result_message", "page_count", "total_page_count", "ecm_used", "has_t38",
        "remote_station_id", "fax_encoding", "transfer_rate", "content",
    }  # fmt: skip
    assert event["type"] == "INCOMING_FAX"
    assert UUID_RE.fullmatch(event["id"])
    assert (event["cli"], event["cld"], event["status"]) == ("", "902122222525", "SUCCESS")
    assert (event["page_count"], event["total_page_count"]) == (3, 3)
    assert event["remote_station_id"] == hostile
    assert base64.b64decode(event["content"], validate=True) == document
    assert TIME_RE.fullmatch(event["requested_on"])
    assert event["account_id"] == sim.account_id

    other = sim.incoming_event(
        tiff=b"junk", cld="90212", cli="90216", pages=5, fax_id="in-1", status="FAILED"
    )
    assert (other["id"], other["cli"], other["status"]) == ("in-1", "90216", "FAILED")
    assert other["page_count"] == 5
    assert sim.incoming_event(tiff=b"junk", cld="90212")["page_count"] == 1
    assert sim.incoming_event(tiff=b"", cld="90212")["id"] != other["id"]


async def test_push_incoming_is_retried_and_delivered(
    sim: FaxMaxSimulator, receiver: Receiver
) -> None:
    sim.push_url = receiver.url
    receiver.answers.append(503)
    event = await sim.push_incoming(tiff=tiff(2), cld="902122222525", cli="905551112233")
    assert receiver.bodies == [[event], [event]]
    assert [p.status for p in sim.pushes] == [503, 200]
    assert event["page_count"] == 2


# -- 秒速FAX Plus ---------------------------------------------------------------------------------

OUR_NUMBER = "0368680000"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def byo(clock: FakeClock) -> AsyncIterator[ByosokuSimulator]:
    simulator = ByosokuSimulator(clock=clock)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def call_log(
    client: aiohttp.ClientSession, byo: ByosokuSimulator, method: str = "GET"
) -> tuple[int, str, bytes]:
    async with client.request(method, byo.log_url) as response:
        return response.status, response.content_type, await response.read()


async def call_pdf(
    client: aiohttp.ClientSession, byo: ByosokuSimulator, pdf_id: str | None, method: str = "GET"
) -> aiohttp.ClientResponse:
    params = {} if pdf_id is None else {"pdfId": pdf_id}
    if method == "GET":
        response = await client.get(byo.pdf_url, params=params)
    else:
        response = await client.post(byo.pdf_url, data=params)
    await response.read()
    return response


async def log_rows(
    client: aiohttp.ClientSession, byo: ByosokuSimulator, clock: FakeClock
) -> list[dict[str, Any]]:
    clock.advance(byo.log_interval)
    status, content_type, body = await call_log(client, byo)
    assert (status, content_type) == (200, "application/json")
    answer = json.loads(body)
    assert (answer["status"], answer["ErrorMsg"]) == (0, "")
    rows: list[dict[str, Any]] = answer["Results"]
    return rows


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json"
    answer = await response.json()
    assert answer["status"] == 1
    return response.status, answer["ErrorMsg"]


@pytest.mark.parametrize("sender_field", ["senderNumber", "sendNumber"])
async def test_log_shape(
    client: aiohttp.ClientSession, clock: FakeClock, sender_field: str
) -> None:
    async with ByosokuSimulator(clock=clock, sender_field=sender_field) as byo:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/receive/log", byo.log_url)
        assert byo.pdf_url == byo.log_url.replace("/log", "/pdf")
        first = byo.add_fax(fax_number=OUR_NUMBER, sender="0312345678", pages=3)
        clock.advance(60)
        second = byo.add_fax(fax_number=OUR_NUMBER)  # withheld sender
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", first)
        rows = await log_rows(client, byo, clock)
        assert [set(row) for row in rows] == [
            {"receiveDate", "faxNumber", "page", sender_field, "pdfId"}
        ] * 2
        assert [row["pdfId"] for row in rows] == [second, first]
        assert rows[1]["page"] == "3" and rows[0]["page"] == "1"
        assert (rows[1][sender_field], rows[0][sender_field]) == ("0312345678", "")
        assert rows[0]["faxNumber"] == OUR_NUMBER
        japan = datetime.fromtimestamp(clock.now() - byo.log_interval, UTC).astimezone(JAPAN_TIME)
        assert rows[0]["receiveDate"] == format_provider_time(japan)
        assert japan.utcoffset() == timedelta(hours=9)
        assert byo.log_calls == [clock.now()]
        async with client.get(byo.base_url + "/receive/nope") as response:
            assert response.status == 404
    with pytest.raises(ValueError):
        ByosokuSimulator(sender_field="sender")


async def test_log_is_newest_first_and_capped_at_50(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    ids = []
    for _ in range(60):
        ids.append(byo.add_fax(fax_number=OUR_NUMBER))
        clock.advance(1)
    old = byo.add_fax(fax_number=OUR_NUMBER, received_at=datetime(2014, 4, 16, 3, 9))
    rows = await log_rows(client, byo, clock)
    assert [row["pdfId"] for row in rows] == ids[::-1][:50]
    assert old not in {row["pdfId"] for row in rows}
    assert TIME_RE.fullmatch(rows[0]["receiveDate"])


async def test_log_accepts_post(byo: ByosokuSimulator, client: aiohttp.ClientSession) -> None:
    byo.add_fax(fax_number=OUR_NUMBER)
    status, _, body = await call_log(client, byo, "POST")
    assert status == 200 and len(json.loads(body)["Results"]) == 1


async def test_log_interval_is_enforced_and_early_calls_do_not_restart_it(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    assert (await call_log(client, byo))[0] == 200
    clock.advance(59.9)
    status, _, body = await call_log(client, byo)
    assert (status, json.loads(body)) == (400, {"status": 1, "ErrorMsg": "ERR_ACCESS_INTERVAL"})
    assert (byo.violations, byo.log_violations, byo.pdf_violations) == (1, 1, 0)
    clock.advance(0.1)  # 60 s after the first answer; the early call did not restart the wait
    assert (await call_log(client, byo))[0] == 200
    assert byo.violations == 1
    start = clock.now() - 60
    assert byo.log_calls == [start, start + 59.9, clock.now()]


async def test_pdf_interval_is_shared_across_pdf_ids(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    a, b = byo.add_fax(fax_number=OUR_NUMBER), byo.add_fax(fax_number=OUR_NUMBER)
    assert (await call_pdf(client, byo, a)).status == 200
    clock.advance(0.5)
    assert await error_of(await call_pdf(client, byo, b)) == (400, "ERR_ACCESS_INTERVAL")
    assert (byo.violations, byo.log_violations, byo.pdf_violations) == (1, 0, 1)
    clock.advance(0.5)
    assert (await call_pdf(client, byo, b)).status == 200
    assert (await call_log(client, byo))[0] == 200  # the log has its own interval
    assert byo.fetched == collections.Counter({a: 1, b: 1})


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_pdf_download(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock, method: str
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER, pages=2)
    given = byo.add_fax(fax_number=OUR_NUMBER, pdf=PDF)
    response = await call_pdf(client, byo, pdf_id, method)
    assert response.status == 200
    assert response.content_type == "application/pdf"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{pdf_id}.pdf"'
    document = await response.read()
    assert len(PdfReader(io.BytesIO(document)).pages) == 2
    clock.advance(1)
    assert await (await call_pdf(client, byo, given, method)).read() == PDF
    assert [(pid, m) for _, pid, m in byo.pdf_calls] == [(pdf_id, method), (given, method)]
    assert byo.fetched == collections.Counter({pdf_id: 1, given: 1})
    assert byo.violations == 0


async def test_pdf_id_missing_or_malformed(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    byo.add_fax(fax_number=OUR_NUMBER)
    async with client.get(byo.pdf_url, params=[("pdfId", "a"), ("pdfId", "b")]) as response:
        assert await error_of(response) == (400, "ERR_PDF_ID")
    for pdf_id, method in [(None, "GET"), (None, "POST"), ("a b", "GET"), ("x" * 200, "POST")]:
        clock.advance(1)
        assert await error_of(await call_pdf(client, byo, pdf_id, method)) == (400, "ERR_PDF_ID")
    assert [pid for _, pid, _ in byo.pdf_calls][:3] == ["a,b", "", ""]
    assert byo.fetched.total() == 0 and byo.violations == 0


async def test_unknown_and_deleted_pdfs(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER)
    assert await error_of(await call_pdf(client, byo, "dG8vc2E9NTTTODQ9")) == (400, "ERR_NO_PDF")
    byo.delete_pdf(pdf_id)
    clock.advance(1)
    assert await error_of(await call_pdf(client, byo, pdf_id)) == (400, "ERR_NO_PDF")
    assert [row["pdfId"] for row in await log_rows(client, byo, clock)] == [pdf_id]
    with pytest.raises(KeyError):
        byo.delete_pdf("unknown")


async def test_no_pdf_times_then_served(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER)
    byo.no_pdf_times[pdf_id] = 2
    for _ in range(2):
        assert await error_of(await call_pdf(client, byo, pdf_id)) == (400, "ERR_NO_PDF")
        clock.advance(1)
    assert (await call_pdf(client, byo, pdf_id)).status == 200
    assert byo.no_pdf_times == {} and byo.fetched[pdf_id] == 1


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "ERR_NO_DATA"), (500, "ERR_SERVER_ERR"), (503, "ERR_SERVER_BUSY"), (403, None),
     (404, None)],
)  # fmt: skip
async def test_error_faults(
    byo: ByosokuSimulator,
    client: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
    message: str | None,
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER)
    byo.log_faults.append(ByosokuFault.error(status, message))
    byo.pdf_faults.append(ByosokuFault.error(status, message))
    log_status, content_type, body = await call_log(client, byo)
    response = await call_pdf(client, byo, pdf_id)
    for got_status, got_type, got_body in [
        (log_status, content_type, body),
        (response.status, response.content_type, await response.read()),
    ]:
        assert got_status == status
        if message is None:
            assert got_type == "text/html" and str(status).encode() in got_body
        else:
            assert json.loads(got_body) == {"status": 1, "ErrorMsg": message}
    # a faulted call counts: calling again at once is too early
    status2, _, body2 = await call_log(client, byo)
    assert (status2, json.loads(body2)["ErrorMsg"]) == (400, "ERR_ACCESS_INTERVAL")
    assert byo.fetched.total() == 0
    clock.advance(60)
    assert (await call_log(client, byo))[0] == 200
    assert (await call_pdf(client, byo, pdf_id)).status == 200


async def test_garbage_faults(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER)
    byo.log_faults.append(ByosokuFault.garbage())
    byo.pdf_faults.append(ByosokuFault.garbage())
    status, content_type, body = await call_log(client, byo)
    assert (status, content_type) == (200, "application/json")
    with pytest.raises(ValueError):
        json.loads(body)
    response = await call_pdf(client, byo, pdf_id)
    assert (response.status, response.content_type) == (200, "application/pdf")
    assert not (await response.read()).startswith(b"%PDF-")
    assert byo.fetched.total() == 0


async def test_call_while_another_is_unanswered_is_early(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    byo.log_faults.append(ByosokuFault.stall(30))
    stalled = asyncio.create_task(call_log(client, byo))
    await byo.wait_for_log_calls(1)
    clock.advance(90)
    status, _, _ = await call_log(client, byo)
    assert status == 400 and byo.log_violations == 1
    assert not stalled.done()
    stalled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stalled


async def test_short_stall_answers_normally(
    byo: ByosokuSimulator, client: aiohttp.ClientSession
) -> None:
    pdf_id = byo.add_fax(fax_number=OUR_NUMBER)
    byo.log_faults.append(ByosokuFault.stall(0.05))
    byo.pdf_faults.append(ByosokuFault.stall(0.05))
    status, _, body = await call_log(client, byo)
    assert status == 200 and json.loads(body)["Results"][0]["pdfId"] == pdf_id
    assert (await call_pdf(client, byo, pdf_id)).status == 200
    assert byo.violations == 0 and byo.fetched[pdf_id] == 1


async def test_stall_reference_time_is_the_response(
    byo: ByosokuSimulator, client: aiohttp.ClientSession, clock: FakeClock
) -> None:
    byo.log_faults.append(ByosokuFault.stall(0.2))
    stalled = asyncio.create_task(call_log(client, byo))
    await byo.wait_for_log_calls(1)
    clock.advance(30)  # the answer goes out 30 s (fake) after the call arrived
    assert (await stalled)[0] == 200
    clock.advance(59)  # 89 s after arrival, 59 s after the response
    assert (await call_log(client, byo))[0] == 400
    clock.advance(1)
    assert (await call_log(client, byo))[0] == 200


async def test_stop_drops_a_stalled_call(client: aiohttp.ClientSession) -> None:
    byo = ByosokuSimulator()
    await byo.start()
    byo.log_faults.append(ByosokuFault.stall(30))
    task = asyncio.create_task(call_log(client, byo))
    await byo.wait_for_log_calls(1)
    await asyncio.wait_for(byo.stop(), 2.0)
    with pytest.raises(DISCONNECTED):
        await task
