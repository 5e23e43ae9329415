"""Runs document parsing in child processes with a memory cap and a time limit.

Pillow, pypdf and the MIME parser read hostile input. In a child process under `RLIMIT_AS`, a
decompression bomb or a pathological file costs one refused document, never the service: the
child is killed when it overruns its time, and dies alone when it overruns its memory.

The children are a small pool, reused from job to job: starting a process per job cost more than
the parsing itself (about 20 ms per mail at SMTP intake). The pool also bounds how many documents
are parsed at once, and with it the memory that parsing can take. A child is replaced after a job
that ran out of time or memory, after it has grown large, and after `MAX_JOBS` jobs, so that no
job inherits much from the ones before it. Children are forked from a forkserver that has already
imported the parsing modules, and never inherit the event loop's threads.

A large job or answer (a received fax, a push, the email that carries a fax: over `LARGE_BYTES`
once pickled) crosses the pipe in a thread: written or read on the event loop, a 30 MB document
held it for tens of milliseconds. The pipe's reads and writes release the interpreter, so the
loop serves mail and pushes meanwhile; small ones, nearly all, still go straight through, since
the hop to a thread would cost more than they do.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

from bridge import replies
from bridge.errors import DocumentError

T = TypeVar("T")
log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["bridge.documents", "bridge.mime", "bridge.workers.converter",
                                 "bridge.workers.inbox", "bridge.providers.faxmax"])
MAX_JOBS = 200  # jobs per child before it is replaced
MAX_RSS_KB = 256 * 1024  # a child whose peak memory passed this is replaced after its job
LARGE_BYTES = 1 << 20  # a job or answer larger than this, pickled, crosses the pipe in a thread


@dataclass(frozen=True)
class _Follows:
    """The child's answer comes next, in a message of its own: it is large."""


def _send(conn: multiprocessing.connection.Connection, func: Callable[..., Any],
          args: tuple[Any, ...]) -> None:
    """A job with a large document, pickled and written in a thread."""
    conn.send_bytes(ForkingPickler.dumps((func, args)))


def _receive(conn: multiprocessing.connection.Connection) -> Any:
    """A large answer, read and unpickled in a thread (see the module's docstring)."""
    return ForkingPickler.loads(conn.recv_bytes())


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 1024 * 1024 * 1024
    seconds: float = 60.0
    nice: int = 0  # background work (conversions) yields the CPU to mail being received


def _serve(conn: multiprocessing.connection.Connection, limits: Limits) -> None:
    """The child: run jobs until told to stop (EOF), or until it should be replaced."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the service, which stops us
    os.nice(limits.nice)
    # A task woken through a pipe is placed on its waker's CPU and, as a normal task, runs
    # there at once: the event loop that handed over the job stood still until the job was
    # done (2 ms a mail check, 5 a conversion, while the other CPU idled). As a batch task it
    # waits for the loop to sleep or moves to an idle CPU, with the same share of the CPU.
    # Where the kernel refuses it (a restrictive seccomp profile), children run as before.
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    # What the forkserver imported is never garbage; frozen, it is not walked by the collection
    # after every job (12 ms per job with pypdf and Pillow loaded, against microseconds).
    gc.freeze()
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    for done in range(1, MAX_JOBS + 1):
        try:
            func, args = conn.recv()
        except EOFError:
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(usage.ru_utime + usage.ru_stime + limits.seconds) + 1  # this job's share
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_hard))
        replace = done == MAX_JOBS
        try:
            result: tuple[bool, Any] = (True, func(*args))
        except MemoryError:
            replace = True
            result = (False, DocumentError(replies.OUT_OF_MEMORY,
                                           mb=limits.memory_bytes // 2**20))
        except BaseException as exc:  # every failure goes back to the parent, which decides
            result = (False, exc)
        replace = replace or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > MAX_RSS_KB
        try:
            answer = ForkingPickler.dumps((*result, replace))
        except Exception as exc:  # an unpicklable result: send its words instead
            answer = ForkingPickler.dumps(
                (False, DocumentError(replies.UNSENDABLE_RESULT, error=str(exc)), replace))
        if len(answer) > LARGE_BYTES:  # the parent reads it in a thread
            conn.send(_Follows())
        conn.send_bytes(answer)
        if replace:
            return
        # pypdf's reference cycles would otherwise carry into the next job. Collected after
        # the answer has gone, not before: the parent is waiting for it (a mail's `250`), the
        # next job is not yet (up to 0.6 ms of a 1 ms mail check, in the slowest 1 %).
        del func, args, result, answer
        gc.collect()


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: multiprocessing.connection.Connection
    usable: bool = field(default=True)


class Sandbox:
    """`await sandbox.run(func, *args)`: func(*args) in a limited child process. At most `size`
    jobs run at once; more wait for a free child. Background work (conversions) passes
    `give_way`, awaited before each job: it returns when the work may take the CPU (see
    `bridge.ingress.arrivals`).

    `warm_up` is a job (func, args) each new child runs before it joins the pool. A child's
    first job costs more than its later ones (about 2.5 ms against 0.6 for a mail's checks):
    its first touch of each page it shares with the forkserver copies that page, and its
    caches are empty. Paid by a sample, not by the `250` of the first mail after a child was
    replaced.

    `lull`, when given, is awaited before a spare child is started (see `_fill`)."""

    def __init__(self, limits: Limits = Limits(), size: int | None = None, *,
                 give_way: Callable[[], Awaitable[object]] | None = None,
                 warm_up: tuple[Callable[..., object], tuple[Any, ...]] | None = None,
                 lull: Callable[[], Awaitable[object]] | None = None) -> None:
        self.limits = limits
        self.give_way = give_way
        self.warm_up = warm_up
        self.lull = lull
        self._closing = asyncio.Event()
        self.size = size or max(2, os.cpu_count() or 2)
        self._slots = asyncio.Semaphore(self.size)
        self._idle: list[_Child] = []
        self._live = 0  # children started or starting, and not retired
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(self, func: Callable[..., T], *args: Any, what: str = "the document") -> T:
        """`what` names the input in refusals ("the mail", "the document")."""
        if self.give_way is not None:
            await self.give_way()
        async with self._slots:
            child = await self._take()
            self._fill()
            try:
                ok, value = await self._call(child, func, args, what)
            finally:
                if child.usable and not self._closed:
                    self._idle.append(child)
                else:
                    self._retire(child)
        if ok:
            result: T = value
            return result
        raise value

    async def _call(self, child: _Child, func: Callable[..., Any], args: tuple[Any, ...],
                    what: str) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = child.conn.fileno()

        def answered() -> None:
            if not readable.done():
                readable.set_result(None)

        child.usable = False  # until it has answered this job
        if any(isinstance(arg, bytes) and len(arg) > LARGE_BYTES for arg in args):
            await asyncio.to_thread(_send, child.conn, func, args)  # pickled there too
        else:
            job = ForkingPickler.dumps((func, args))
            if len(job) > LARGE_BYTES:
                await asyncio.to_thread(child.conn.send_bytes, job)
            else:
                child.conn.send_bytes(job)
            del job
        loop.add_reader(fd, answered)
        try:
            await asyncio.wait_for(readable, self.limits.seconds)
        except TimeoutError:
            raise DocumentError(replies.TOO_SLOW, what=what,
                                seconds=self.limits.seconds) from None
        finally:
            loop.remove_reader(fd)
        try:
            answer = child.conn.recv()
            if isinstance(answer, _Follows):
                answer = await asyncio.to_thread(_receive, child.conn)
            ok, value, replace = answer
        except (EOFError, OSError):  # it died mid-job: killed by the kernel or a limit
            raise DocumentError(replies.READER_DIED, what=what) from None
        child.usable = not replace
        return ok, value

    async def _take(self) -> _Child:
        """An idle child, or a new one. One that died while idle (the kernel's OOM killer,
        an operator's kill) is replaced rather than handed a job it cannot answer."""
        while self._idle:
            child = self._idle.pop()
            if child.process.is_alive():
                return child
            child.usable = False
            self._retire(child)
        return await self._start()

    # Starting a process takes longer than checking a mail (about 15 ms against 2 here), so
    # once the pool is in use it keeps `size` children ready, as prefork servers keep spares:
    # when one is retired (after MAX_JOBS jobs, a failure, or growing large) the next job goes
    # to a spare while its successor starts in the background. With a `lull`, and another
    # child idle for the next job, in a pause: a start takes the cores for about 10 ms, and
    # started while mail kept coming it held back the commit, and so the `250`, of the mail
    # whose check retired a child (1 mail in 200, by 4-5 ms). A job that finds no idle child
    # meanwhile starts one itself, as it always could.

    def _fill(self) -> None:
        while not self._closed and self._live < self.size:
            self._live += 1
            self._in_background(self._spare())

    def _retire(self, child: _Child) -> None:
        """Stop a child after its job's answer has gone back, and start its successor."""
        self._live -= 1
        self._in_background(self._stop(child))
        self._fill()

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="sandbox pool upkeep")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _spare(self) -> None:
        if self.lull is not None and self._idle:  # another child takes the next job meanwhile
            await _first(self.lull(), self._closing.wait())
        if self._closed or self._live > self.size:  # a job started one itself meanwhile
            self._live -= 1
            return
        try:
            child = await self._launch()
        except Exception:  # a job that needs a child starts one itself, and reports why not
            self._live -= 1
            log.warning("sandbox: could not start a spare child", exc_info=True)
            return
        if self._closed:
            await self._stop(child)
        else:
            self._idle.append(child)

    async def _start(self) -> _Child:
        """A child for a job waiting now: counted with the pool, which it joins after."""
        self._live += 1
        try:
            return await self._launch()
        except BaseException:
            self._live -= 1
            raise

    async def _launch(self) -> _Child:
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=_serve, args=(theirs, self.limits), daemon=True)
        try:
            await asyncio.to_thread(process.start)
        finally:
            theirs.close()
        child = _Child(process, ours)
        if self.warm_up is not None:
            await self._warm(child, *self.warm_up)
        return child

    async def _warm(self, child: _Child, func: Callable[..., object],
                    args: tuple[Any, ...]) -> None:
        """Run the warm-up job. One that fails leaves a child that still serves (only its
        first real job is slower); one that cannot finish leaves none, and that is the
        service's fault, never the document's of whoever waits for the child."""
        try:
            ok, value = await self._call(child, func, args, "a sample")
        except BaseException as exc:
            await self._stop(child)
            if isinstance(exc, DocumentError):
                raise RuntimeError(f"a new sandbox child failed its warm-up: {exc}") from exc
            raise
        if not ok:
            log.warning("sandbox: a new child's warm-up job failed: %s", value)
        if not child.usable:  # it grew past MAX_RSS_KB on the sample alone, and has exited
            await self._stop(child)
            raise RuntimeError("a new sandbox child grew too large on its warm-up job")

    async def _stop(self, child: _Child) -> None:
        child.conn.close()  # an idle child reads EOF and exits
        if child.usable:
            await asyncio.to_thread(child.process.join, 5)
        if child.process.is_alive():
            child.process.kill()
        await asyncio.to_thread(child.process.join)
        child.process.close()

    async def close(self) -> None:
        """Stop the idle children; busy ones stop when their job ends."""
        self._closed = True
        self._closing.set()
        await asyncio.gather(*self._background, return_exceptions=True)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._stop(child) for child in idle))


async def _first(*waits: Awaitable[object]) -> None:
    """Return when the first of `waits` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
