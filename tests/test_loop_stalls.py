"""Large hostile input is handled off the event loop (issue 19, item 8): the cover page is made
in the sandbox and kept once, in a file; reports are rendered in a thread, from a Subject and
References capped where the mail is inspected; a large push is parsed in the sandbox; a large
answer from the sandbox crosses the pipe in a thread. The figures (loop lag under 50 ms) are
in bench/loop_stalls.py; these tests check where the work runs, by patching what the service
must not call (the sandbox's children are fresh interpreters, which a patch does not reach).
"""

from __future__ import annotations

import email
import io
import json
import multiprocessing.connection
import random
import threading
from dataclasses import replace
from email.policy import default
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import cover, mail, mime
from bridge.ingress.pushes import PARSE_HERE_BYTES
from bridge.mail import Templates
from bridge.sandbox import LARGE_BYTES, Sandbox
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState, Message, MessageState
from bridge.workers.sender import cover_of
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import PUSH_TOKEN, MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state


def _not_here(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("called in the service process")


async def test_the_cover_page_is_made_in_the_sandbox_and_kept_once_next_to_the_pdf(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Escaping a body of `&` grows it fivefold: the page is made in the child, written to a
    file, and each send streams it; the row holds no copy."""
    render = Templates.render

    def no_cover_here(self: Templates, name: str, context: Any) -> str:
        if name == "cover.html.j2":
            raise AssertionError("the cover page was rendered in the service process")
        return render(self, name, context)

    bridge = await make_bridge(faxmax={"cover_page": "always"})  # its start renders samples
    monkeypatch.setattr(Templates, "render", no_cover_here)
    monkeypatch.setattr("bridge.cover.cover_text", _not_here)
    # 100 lines: within the cover's three pages (`cover.fit`), so none is cut.
    mail = fax_mail(("a.pdf", "application/pdf", make_pdf(1)), body="Tom & Jerry\n" * 100)
    await smtp_send(bridge.smtp_port, mail, rcpts=["02122222525@fax.local",
                                                  "02122222526@fax.local"])
    await faxmax.wait_for_requests(2)
    sent = [r.data["params"]["cover_html"] for r in faxmax.requests]
    assert sent[0] == sent[1] and sent[0].count("Tom &amp; Jerry") == 100
    [(document, in_row)] = await query(bridge.store.path,
                                       "SELECT document_path, cover_html FROM messages")
    assert in_row is None
    assert json.loads(cover.cover_file(document).read_text()) == sent[0]


async def test_a_cover_kept_in_the_row_by_an_older_version_moves_to_its_file(
    tmp_path: Path,
) -> None:
    """A mail converted before the upgrade has its cover in the row: its first send writes the
    file, and every send streams the file."""
    document = tmp_path / "message-1" / "fax.pdf"
    document.parent.mkdir()
    document.write_bytes(make_pdf(1))
    message = Message(
        id=1, state=MessageState.READY, mail_from="alice@example.com", header_from="",
        subject="", message_id="", refs="", spool_path="", document_path=str(document),
        cover_html="<p>old & kept</p>", pages=1, left_out=(), error=None, received_at=0.0)
    path = await cover_of(message, document)
    assert path == cover.cover_file(document)
    assert json.loads(path.read_text()) == "<p>old & kept</p>"
    assert await cover_of(replace(message, cover_html=None), document) == path
    path.unlink()
    assert await cover_of(replace(message, cover_html=None), document) is None


async def test_reports_are_rendered_off_the_event_loop(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render = Templates.render
    threads: list[bool] = []

    def noting(self: Templates, name: str, context: Any, language: str = "en") -> str:
        if name.startswith("report."):
            threads.append(threading.current_thread() is threading.main_thread())
        return render(self, name, context, language)

    bridge = await make_bridge()  # its start renders every template's samples, on the loop
    monkeypatch.setattr(Templates, "render", noting)
    faxmax.rejected_numbers.add("902122222525")
    await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1))))
    await wait_for_state(bridge, 1, JobState.FAILED)
    await relay.wait_for(1)
    assert threads and not any(threads), "a report was rendered on the event loop's thread"


async def test_a_huge_subject_and_references_are_capped_where_the_mail_is_inspected(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    """30 KB of encoded non-ASCII Subject, 400 References: what is kept is bounded, the
    Subject ends in "…" and References keeps the newest ids, the report's thread."""
    subject = " ".join(["ğüşiöç çalışma ödeme"] * 700)
    refs = " ".join(f"<ref-{n:04d}@example.com>" for n in range(400))
    mail = fax_mail(("a.pdf", "application/pdf", make_pdf(1)))
    del mail["Subject"]
    mail["Subject"] = subject
    mail["References"] = refs
    raw = mail.as_bytes()
    assert len(raw[raw.index(b"Subject:"):raw.index(b"References:")]) > 30_000
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, mail)
    assert result.data is not None and result.data[0] == 250, result
    await wait_for_state(bridge, 1, JobState.SUBMITTED, JobState.DELIVERED)
    [(kept_subject, kept_refs)] = await query(bridge.store.path,
                                              "SELECT subject, refs FROM messages")
    assert len(kept_subject) == mime.SUBJECT_MAX and kept_subject.endswith("…")
    # (the spaces where the sender's client split encoded words do not survive decoding)
    assert "".join(subject.split()).startswith("".join(kept_subject[:-1].split()))
    assert len(kept_refs) <= mime.REFERENCES_MAX
    assert kept_refs.endswith("<ref-0399@example.com>") and "<ref-0000@" not in kept_refs
    assert kept_refs.split()[0].startswith("<ref-")  # whole ids only
    [report] = await relay.wait_for(1)
    message = email.message_from_bytes(report.data, policy=default)
    assert "<ref-0399@example.com>" in message["References"]


async def test_a_large_push_is_parsed_in_the_sandbox_and_its_fax_stored(
    make_bridge: MakeBridge, relay: RelaySink, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JSON- and base64-decoding a push of tens of MB are single C calls that would hold the
    loop; over PARSE_HERE_BYTES the body goes to a child."""
    monkeypatch.setattr("bridge.providers.faxmax.parse_incoming", _not_here)
    bridge = await make_bridge(routing={"default": ("office@example.com",)})
    tiff = make_tiff(1) + b"\0" * PARSE_HERE_BYTES  # a TIFF with room to spare, still a TIFF
    sim = FaxMaxSimulator()
    event = sim.incoming_event(tiff=tiff, cld="902121110000", cli="903125550000",
                               fax_id="big-1")
    url = f"http://127.0.0.1:{bridge.http_port}/faxmax/push/{PUSH_TOKEN}"
    body = io.BytesIO(json.dumps([event]).encode())
    async with aiohttp.ClientSession() as session, session.post(
            url, data=body, headers={"Content-Type": "application/json"}) as answer:
        assert answer.status == 200, await answer.text()
    rows = await query(bridge.store.path, "SELECT external_id, length(document) FROM inbound")
    assert rows == [("big-1", len(tiff))]
    await relay.wait_for(1)


def _large(size: int) -> bytes:
    return b"x" * size


def _length(data: bytes) -> int:
    return len(data)


async def test_a_large_job_and_its_large_answer_cross_the_pipe_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop: list[tuple[str, int, bool]] = []
    methods = vars(multiprocessing.connection.Connection)
    send, recv = methods["_send_bytes"], methods["_recv_bytes"]

    def sending(self: Any, buf: Any) -> None:
        on_loop.append(("send", len(buf), threading.current_thread() is threading.main_thread()))
        send(self, buf)

    def receiving(self: Any, maxsize: int | None = None) -> Any:
        got = recv(self, maxsize)
        on_loop.append(("recv", got.getbuffer().nbytes,
                        threading.current_thread() is threading.main_thread()))
        return got

    monkeypatch.setattr(multiprocessing.connection.Connection, "_send_bytes", sending)
    monkeypatch.setattr(multiprocessing.connection.Connection, "_recv_bytes", receiving)
    sandbox = Sandbox(size=1)
    try:
        assert len(await sandbox.run(_large, 2 * LARGE_BYTES)) == 2 * LARGE_BYTES
        assert await sandbox.run(_length, _large(2 * LARGE_BYTES)) == 2 * LARGE_BYTES
        assert await sandbox.run(_length, b"small") == 5
    finally:
        await sandbox.close()
    large = [(kind, here) for kind, size, here in on_loop if size > LARGE_BYTES]
    assert sorted(large) == [("recv", False), ("send", False)]
    assert any(here for kind, size, here in on_loop if size < 1000)  # small ones stay here


def test_maildir_line_ends_are_converted_piece_by_piece_as_one_replace_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A "\\r\\n" split across two pieces is still one line end."""
    monkeypatch.setattr(mail, "LOCAL_CHUNK", 7)
    rng = random.Random(19)
    for _ in range(500):
        body = bytes(rng.choice(b"\r\nab") for _ in range(rng.randint(0, 40)))
        out = io.BytesIO()
        mail._write_local(body, out)
        assert out.getvalue() == body.replace(b"\r\n", b"\n"), body
