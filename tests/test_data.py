"""DATA read in blocks (`bridge/ingress/data.py`): the mail exactly as the client meant it,
whatever the block boundaries; limits; what a pipelining client sends next; the spool file."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ingress import data, smtp
from bridge.ingress.data import LINE_TOO_LONG, TOO_MUCH, Spool, read_data
from bridge.simulators import FaxMaxSimulator
from bridge.store import JobState
from tests.docfactory import make_pdf
from tests.mails import fax_mail
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.sql import query
from tests.waits import wait_for_state


def stuffed(mail: bytes) -> bytes:
    """What a client sends for `mail` (CRLF lines): dot-stuffed, then the final `.`."""
    lines = mail.split(b"\r\n")[:-1] if mail else []
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def files(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.glob(pattern))


async def receive(wire: bytes, spool: Spool, *, max_bytes: int = 10**9,
                  max_line: int = 1001) -> tuple[str | None, bytes]:
    """Feed `wire` to a StreamReader, read DATA from it; (refusal, what is left unread)."""
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    refusal = await read_data(reader, spool, max_bytes=max_bytes, max_line=max_line)
    return refusal, await reader.read()


LINE = st.one_of(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                 st.sampled_from([b".", b"..", b".\r", b". x", b"", b"\r.", b".\n"]))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(LINE, max_size=30), block=st.integers(1, 9),
       after=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"]))
def test_the_mail_comes_out_as_sent_whatever_the_block_boundaries(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], block: int, after: bytes
) -> None:
    mail = b"".join(line + b"\r\n" for line in lines)
    spool = Spool(tmp_path_factory.mktemp("spool"), in_memory=1 << 20)
    original, data.BLOCK = data.BLOCK, block
    try:
        refusal, rest = asyncio.run(receive(stuffed(mail) + after, spool))
    finally:
        data.BLOCK = original
    assert refusal is None
    assert spool.content() == mail
    assert rest == after  # a pipelining client's next commands are still there to read


async def test_a_large_mail_spills_to_a_file_that_is_kept_durably_or_removed(
    tmp_path: Path
) -> None:
    mail = b"".join(b"line %06d .dots. here\r\n" % n for n in range(20_000))
    kept = Spool(tmp_path, in_memory=64 * 1024)
    assert await receive(stuffed(mail) + b"QUIT\r\n", kept) == (None, b"QUIT\r\n")
    assert kept.in_file and kept.size == len(mail)
    path = await kept.keep()
    kept.discard()
    assert files(tmp_path) == [path]
    assert path.read_bytes() == mail

    dropped = Spool(tmp_path / "other", in_memory=64 * 1024)
    await receive(stuffed(mail), dropped)
    assert len(files(tmp_path / "other")) == 1  # the temporary file
    dropped.discard()
    assert files(tmp_path / "other") == []


@pytest.mark.parametrize("block", [3, 64 * 1024])
async def test_limits_refuse_only_after_reading_to_the_end(tmp_path: Path, block: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "BLOCK", block)
    long_line = b"a" * 1000 + b"\r\n"
    spool = Spool(tmp_path, in_memory=10)
    assert await receive(stuffed(b"ok\r\n" + long_line) + b"QUIT\r\n", spool) == (
        LINE_TOO_LONG, b"QUIT\r\n")
    endless = b"b" * 5000  # no line break at all, then the end
    assert await receive(endless + b"\r\n.\r\nQUIT\r\n", Spool(tmp_path, 10)) == (
        LINE_TOO_LONG, b"QUIT\r\n")
    big = b"x" * 500 + b"\r\n"
    assert await receive(stuffed(big * 10) + b"NOOP\r\n", Spool(tmp_path, 10),
                         max_bytes=4000) == (TOO_MUCH, b"NOOP\r\n")
    assert files(tmp_path) == []  # what spilled was removed at the refusal


async def test_a_connection_lost_during_a_large_data_leaves_no_file(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge()
    spool_dir = Path(bridge.settings.data_dir) / "spool"
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.smtp_port)
    await reader.readline()
    writer.write(b"EHLO x\r\nMAIL FROM:<alice@example.com>\r\n"
                 b"RCPT TO:<02122222525@fax.local>\r\nDATA\r\n")
    writer.write(b"Subject: cut off\r\n\r\n" + (b"y" * 70 + b"\r\n") * 40_000)  # 2.9 MB
    await writer.drain()
    while b"354" not in await reader.readline():
        pass
    for _ in range(100):  # the server has spilled it to a temporary file
        if files(spool_dir, ".*.tmp"):
            break
        await asyncio.sleep(0.02)
    assert files(spool_dir, ".*.tmp")
    writer.close()
    for _ in range(100):
        if not files(spool_dir):
            break
        await asyncio.sleep(0.02)
    assert files(spool_dir) == []
    assert await bridge.store.jobs.counts() == {}


async def test_a_mail_over_a_mebibyte_is_spooled_and_faxed(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator
) -> None:
    bridge = await make_bridge(faxmax={"cover_page": "never"})
    pdf = make_pdf(2) + b"\n%" + b"z" * 1_200_000  # a comment after %%EOF pads it
    result = await smtp_send(bridge.smtp_port, fax_mail(("big.pdf", "application/pdf", pdf)))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    [(spool_path, raw)] = await query(bridge.store.path, "SELECT spool_path, raw FROM messages")
    assert raw is None and files(Path(spool_path).parent) == [Path(spool_path)]
    await wait_for_state(bridge, 1, JobState.DELIVERED)


async def test_a_spool_file_no_mail_refers_to_is_removed_at_the_next_start(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that disconnects after its spool file is durable but before the row that
    refers to it is committed leaves a file nothing will ever remove; the next start does."""
    caplog.set_level(logging.INFO, logger="bridge.app")
    monkeypatch.setattr(smtp, "RAW_IN_ROW_BYTES", 0)  # every mail goes to a spool file
    bridge = await make_bridge()
    result = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf",
                                                         make_pdf(1))))
    assert result.data == (250, "2.0.0 queued as fax jobs 1")
    [(spool_path,)] = await query(bridge.store.path, "SELECT spool_path FROM messages")
    kept = Path(spool_path)
    await wait_for_state(bridge, 1, JobState.DELIVERED)
    await bridge.stop()
    orphans = [kept.with_name("0123456789abcdef.eml"), kept.with_name(".x.eml.0123abcd.tmp")]
    an_hour_ago = time.time() - 3600
    for orphan in orphans:  # left by an earlier run
        orphan.write_bytes(b"Subject: never stored\r\n\r\nlost connection\r\n")
        os.utime(orphan, (an_hour_ago, an_hour_ago))

    await make_bridge()  # a start on the same data_dir
    assert files(kept.parent) == [kept]
    [line] = [r.getMessage() for r in caplog.records if "no mail refers to" in r.getMessage()]
    assert line == (f"spool: removed 2 file(s) in {kept.parent} that no mail refers to (a "
                    "connection lost before its mail was stored): .x.eml.0123abcd.tmp, "
                    "0123456789abcdef.eml")
