"""Reading an SMTP DATA section in blocks, straight into where the mail will be kept.

aiosmtpd reads DATA one line at a time into a list of small buffers and joins them at the end:
about three times the mail's size in memory for every mail being received, and a Python step
per line on the event loop (330 000 of them for a 25 MB mail). Here the section is read in
blocks, the terminating `.` found and the dot-stuffing undone with bytes methods (C speed), and
the mail goes into a `Spool`: memory up to a small size, beyond it a file of its own. So the
memory a mail being received costs is bounded by the block and the small size, however large
the mail and however many arrive at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from contextlib import AbstractContextManager
from pathlib import Path

from bridge import replies
from bridge.files import atomic_path
from bridge.store import is_disk_full

log = logging.getLogger(__name__)

BLOCK = 64 * 1024
END = b"\r\n.\r\n"  # the line break ending the last line, then a line holding only "."
CRLF = b"\r\n"
TOO_MUCH = "552 Error: Too much mail data"  # aiosmtpd's words; FaxSMTP rewords them
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


class _NotKept(Exception):
    """How `Spool.discard` leaves the `atomic_path` of a mail it did not keep."""


class Spool:
    """A mail being received: in memory up to `in_memory` bytes, beyond that in the temporary
    file of an `atomic_path` in `directory`, which `keep()` makes durable under its final
    name. Whatever is not kept is removed by `discard()` (a refused mail, a dropped
    connection)."""

    def __init__(self, directory: Path, in_memory: int) -> None:
        self.directory = directory
        self.in_memory = in_memory
        self.size = 0
        self._memory: list[bytes] = []
        self._file: int | None = None
        # Entered when the mail spills to a file, left by keep() or discard(): the file is
        # written over many blocks, between which the event loop serves other sessions.
        self._writing: AbstractContextManager[Path] | None = None
        self._final: Path | None = None
        self.path: Path | None = None  # once kept

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is None and self.size <= self.in_memory:
            self._memory.append(data)
            return
        if self._file is None:  # spill: a page-cache write per block, no fsync yet
            final = self.directory / f"{uuid.uuid4().hex}.eml"
            writing = atomic_path(final)
            temporary = writing.__enter__()
            self._writing, self._final = writing, final
            self._file = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._write(b"".join(self._memory))
            self._memory = []
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._file, view):]

    @property
    def in_file(self) -> bool:
        return self._file is not None

    def content(self) -> bytes:
        """The mail, when it stayed in memory."""
        assert self._file is None
        return b"".join(self._memory)

    async def keep(self) -> Path:
        """The file, durable under its final name (`atomic_path`'s fsyncs and rename)."""
        assert self._writing is not None and self._final is not None
        writing, self._writing = self._writing, None
        await asyncio.to_thread(writing.__exit__, None, None, None)
        self.path = self._final
        return self.path

    def discard(self) -> None:
        """Close the file; remove it unless it was kept."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.__exit__(_NotKept, _NotKept(), None)
        self._memory = []


def remove_orphans(directory: Path, referenced: set[str], before: float) -> list[str]:
    """Remove the files in the spool `directory` that no mail refers to (`referenced`: file
    names) and that were last written before `before` (the start), and return their names.

    A client that disconnects after its spool file is durable but before the row naming it
    is committed, or a crash mid-write, leaves such a file; nothing else would ever remove
    it. Run at start, before the SMTP listener opens, when no mail is being received."""
    removed = []
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if path.name in referenced or not path.is_file() or path.stat().st_mtime >= before:
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def _unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Give back what a pipelining client sent after the final `.`: its next commands.
    StreamReader has no public way to do this; its buffer is a bytearray in every CPython
    since 3.4."""
    reader._buffer[:0] = data  # type: ignore[attr-defined]


async def read_data(reader: asyncio.StreamReader, spool: Spool, *, max_bytes: int,
                    max_line: int) -> str | None:
    """Read DATA up to its final `.` into `spool`, without the dot-stuffing; None when the
    mail is complete, else the reply that refuses it. As RFC 5321 4.2.5 implies, a refused
    mail is still read to its end (and thrown away) before the reply.

    `pending` is the stream from its last line break on, with a line break put in front of the
    first line: every piece handed on starts at a line break and ends before one, so a stuffed
    dot (`\\r\\n.`) never straddles two pieces and is undone with one `replace`.
    """
    pending = CRLF
    first = True
    refusal: str | None = None
    while True:
        block = await reader.read(BLOCK)
        if not block:  # aiosmtpd cancels DATA when the client closes; this is the rest
            raise ConnectionResetError("the connection closed during DATA")
        pending += block
        end = pending.find(END)
        if end >= 0:
            rest = pending[end + len(END):]
            if rest:
                _unread(reader, rest)
            piece, pending = pending[:end + 2], b""
        elif refusal is not None:  # only the end is looked for now
            pending = pending[-(len(END) - 1):]
            continue
        else:
            cut = pending.rfind(CRLF)
            piece, pending = pending[:cut], pending[cut:]
            if len(pending) > max_line + 2:  # a line with no end in sight
                refusal = LINE_TOO_LONG
        if refusal is None and piece:
            refusal = _take(piece, spool, first=first, max_bytes=max_bytes, max_line=max_line)
            first = False
        if refusal is not None:
            spool.discard()
            pending = pending[-(len(END) - 1):]
        if end >= 0:
            return refusal


def _take(piece: bytes, spool: Spool, *, first: bool, max_bytes: int,
          max_line: int) -> str | None:
    """Check one piece of whole lines and add it to the mail; the refusal if it breaks a
    limit."""
    if max(map(len, piece.split(CRLF))) + 2 > max_line:
        return LINE_TOO_LONG
    mail = piece.replace(b"\r\n.", CRLF)
    if first:  # the line break put in front of the first line
        mail = mail[2:]
    if spool.size + len(mail) > max_bytes:
        return TOO_MUCH
    try:
        spool.write(mail)
    except OSError as exc:
        # Refused like a mail over a limit: the rest of the mail is still read to its final
        # `.` (else it would be read as commands), then the client is told to try again.
        log.error("smtp: the mail being received could not be written to the spool after %d "
                  "bytes: %s", spool.size, exc)
        return replies.render(replies.OUT_OF_STORAGE if is_disk_full(exc)
                              else replies.INTERNAL_ERROR)
    return None
