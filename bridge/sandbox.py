"""Runs document parsing in a throw-away process with a memory cap and a time limit.

Pillow, pypdf and the MIME parser read hostile input. In a child process under `RLIMIT_AS`, a
decompression bomb or a pathological file costs one refused document, never the service: the
child is killed when it overruns its time, and dies alone when it overruns its memory.

Children are forked from a forkserver that has already imported the parsing modules, so each
job starts in milliseconds and never inherits the event loop's threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.errors import DocumentError

T = TypeVar("T")

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["bridge.documents", "bridge.mime", "bridge.workers.converter",
                                 "bridge.workers.inbox"])


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1024 * 1024 * 1024
    seconds: float = 60.0


def _child(conn: multiprocessing.connection.Connection, func: Callable[..., Any],
           args: tuple[Any, ...], limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    cpu = int(limits.seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    try:
        result: tuple[bool, Any] = (True, func(*args))
    except MemoryError:
        result = (False, DocumentError(
            f"the document needs more than {limits.memory_bytes // 2**20} MB of memory to "
            "read; it may be damaged or built to overload fax gateways"))
    except BaseException as exc:  # every failure goes back to the parent, which decides
        result = (False, exc)
    try:
        conn.send(result)
    except Exception as exc:  # an unpicklable exception: send its words instead
        conn.send((False, DocumentError(f"the document could not be read ({exc})")))
    finally:
        conn.close()


class Sandbox:
    """`await sandbox.run(func, *args)`: func(*args) in a limited child process."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits

    async def run(self, func: Callable[..., T], *args: Any, what: str = "the document") -> T:
        """`what` names the input in refusals ("the mail", "the document")."""
        receiver, sender = _CONTEXT.Pipe(duplex=False)
        process = _CONTEXT.Process(target=_child, args=(sender, func, args, self.limits),
                                   daemon=True)
        await asyncio.to_thread(process.start)
        sender.close()
        try:
            ready = await asyncio.to_thread(receiver.poll, self.limits.seconds)
            if not ready:
                raise DocumentError(
                    f"reading {what} took longer than {self.limits.seconds:g} seconds; it may "
                    "be damaged or built to overload fax gateways")
            try:
                ok, value = receiver.recv()
            except EOFError:
                raise DocumentError(
                    f"{what} could not be read: the reader ran out of memory or time; it may "
                    "be damaged or built to overload fax gateways") from None
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            await asyncio.to_thread(process.join)
        if ok:
            result: T = value
            return result
        raise value
