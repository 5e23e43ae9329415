"""Office documents to PDF through one warm LibreOffice, with a time limit that kills.

LibreOffice takes about a second to start (more with a new profile), and a conversion a fraction
of that (bench/documents.py), so one is kept running (`soffice_worker`) and handed documents one
at a time. It is a sandbox of its own, since LibreOffice is far too large to run in the
service's document children (`bridge.sandbox`, under 1 GB of address space):
- it runs in a network namespace of its own (`bridge.office.tools`): nothing a document links
  to is fetched, whatever LibreOffice would do;
- under `documents.office_memory_mb` of address space, in a new session: a conversion that
  overruns `documents.timeout`, or LibreOffice crashing on a document, gets the whole process
  group killed, LibreOffice and anything it started, and costs that document a refusal; the
  next document gets a new LibreOffice. One that cannot start is the machine's trouble: the
  mail stays queued (`convert`);
- with a profile of its own (its temporary files inside), made for it and deleted with it and
  its pipes, so that nothing one document leaves there reaches another LibreOffice; replaced
  after `MAX_CONVERSIONS`; what a killed service left behind is swept before the next start;
- dying with the service: the driver, and LibreOffice under it, get SIGKILL when their parent
  dies (`PR_SET_PDEATHSIG`).
Macros never run and questions a document asks (a password) are refused (`soffice_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge import replies
from bridge.errors import DocumentError
from bridge.office.tools import Office

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("soffice_worker.py")
MAX_CONVERSIONS = 100  # documents per LibreOffice before it is replaced
How = Literal["office", "text", "html"]

# Defence in depth for the profile: macros at the highest security level and disabled, and
# no image fetched from a link the document carries (the namespace already cuts the network).
PROFILE_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry"
 xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">
<prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">
<prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting">
<prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
</oor:items>
"""


@dataclass
class _Running:
    """One LibreOffice: its driver's process (the leader of its process group), the profile
    made for it, the pipe sockets it left in /tmp, and how many documents it has converted."""

    process: asyncio.subprocess.Process
    profile: Path
    sockets: tuple[Path, ...] = ()
    conversions: int = 0


class OfficeDown(OSError):
    """LibreOffice could not start, or died before it was given the document: the machine's
    trouble, never the document's (`EAGAIN`: try again later)."""

    def __init__(self, words: str) -> None:
        super().__init__(errno.EAGAIN, words)


PIPES = Path("/tmp")  # where LibreOffice's pipes (OSL_PIPE_*) go, whatever TMPDIR says
STOP_SECONDS = 5.0  # a LibreOffice asked to quit has this long before its group is killed


class OfficeConverter:
    """`await converter.convert(source, target, how, name)`: `source` as a PDF at `target`,
    or a `DocumentError` naming the file `name`. One conversion at a time."""

    def __init__(self, office: Office, *, seconds: float, memory_bytes: int,
                 work_dir: Path, nice: int = 10) -> None:
        self.office = office
        self.nice = nice  # background work, as the conversion sandbox's (bridge.pipeline)
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self.work_dir = work_dir
        self._lock = asyncio.Lock()
        self._running: _Running | None = None  # ready
        self._starting: _Running | None = None
        self._swept = False

    @property
    def warm(self) -> bool:
        """A LibreOffice is running and has said it is ready."""
        return self._running is not None and self._running.process.returncode is None

    async def warm_up(self) -> None:
        """Start LibreOffice now, so that the first document does not wait for it; a failure
        is logged, and the first document tries again."""
        async with self._lock:
            try:
                await self._ready()
            except OSError as exc:
                log.warning("office: %s", exc)

    async def convert(self, source: Path, target: Path, how: How, name: str) -> None:
        """A LibreOffice that cannot start, or that died while idle, is the machine's trouble,
        not the document's: `OfficeDown`, and the mail waits (`bridge.workers.converter`).
        Once LibreOffice has the document, within `seconds` of that (its start does not
        count), anything that goes wrong is the document's: one refusal naming it."""
        async with self._lock:
            try:
                answer = await self._converted_by_a_live_one(source, target, how, name)
            except BaseException:  # cancelled (a stop): its answer must not be the next one's
                await asyncio.shield(self._stop())
                raise
            if answer.get("error") == "crashed":
                await self._stop()
            elif self._running is not None and self._running.conversions >= MAX_CONVERSIONS:
                await self._stop(gently=True)
        if answer.get("error") == "crashed":
            log.warning("office: LibreOffice crashed converting %s", name)
            raise DocumentError(replies.CONVERTER_DIED, name=name)
        if answer.get("error") == "protected":
            raise DocumentError(replies.PROTECTED_DOCUMENT, name=name)
        if not answer.get("ok"):
            log.info("office: %s: %s", name, answer.get("detail", answer))
            raise DocumentError(replies.NOT_CONVERTIBLE, name=name)

    async def _converted_by_a_live_one(self, source: Path, target: Path, how: How,
                                       name: str) -> dict[str, Any]:
        """The answer of a LibreOffice that was alive when it got the document: one found
        dead at that moment (killed while idle) is replaced once."""
        for attempt in (1, 2):
            running = await self._ready()
            try:
                answer = await asyncio.wait_for(self._converted(running, source, target, how),
                                                self.seconds)
            except TimeoutError:
                log.warning("office: %s took longer than %gs; LibreOffice is killed", name,
                            self.seconds)
                await self._stop()
                raise DocumentError(replies.TOO_SLOW, what=f"'{name}'",
                                    seconds=self.seconds) from None
            except (OSError, EOFError, ValueError) as exc:
                log.warning("office: LibreOffice stopped while converting %s: %s", name, exc)
                await self._stop()
                raise DocumentError(replies.CONVERTER_DIED, name=name) from None
            if answer.get("error") != "gone":
                return answer
            log.warning("office: LibreOffice had died while idle (attempt %d for %s)",
                        attempt, name)
            await self._stop()
        raise OfficeDown("LibreOffice died before it was given the document, twice")

    async def _converted(self, running: _Running, source: Path, target: Path,
                         how: How) -> dict[str, Any]:
        running.conversions += 1
        stdin = running.process.stdin
        assert stdin is not None
        stdin.write(json.dumps({"in": str(source), "out": str(target), "as": how}).encode()
                    + b"\n")
        await stdin.drain()
        return await self._answer(running)

    async def _ready(self) -> _Running:
        """The running LibreOffice, or a new one within `seconds`; `OfficeDown` if it does
        not start."""
        if self.warm:
            assert self._running is not None
            return self._running
        await self._stop()
        if not self._swept:  # what a LibreOffice killed with the service left behind
            await asyncio.to_thread(self._sweep)
            self._swept = True
        try:
            return await asyncio.wait_for(self._start(), self.seconds)
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            await self._stop()
            raise OfficeDown(f"LibreOffice did not start: {exc or type(exc).__name__}") from exc

    def _sweep(self) -> None:
        """Profiles of LibreOffices that did not outlive a killed service: this service alone
        uses `work_dir` (the data directory's instance lock), and none of its own runs yet."""
        for stale in self.work_dir.glob("libreoffice-*"):
            shutil.rmtree(stale, ignore_errors=True)

    async def _start(self) -> _Running:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="libreoffice-", dir=self.work_dir))
        (profile / "user").mkdir()
        (profile / "user" / "registrymodifications.xcu").write_text(PROFILE_SETTINGS)
        (profile / "tmp").mkdir()  # its temporary files, deleted with the profile
        pipe = f"fax-bridge-{secrets.token_hex(8)}"  # not a name another user could take
        before = await asyncio.to_thread(_pipes)
        process = await asyncio.create_subprocess_exec(
            *self.office.isolate, self.office.python, str(WORKER), self.office.soffice,
            str(profile), str(self.memory_bytes), str(self.nice), pipe,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TMPDIR": str(profile / "tmp")})
        running = _Running(process, profile)
        self._starting = running  # for `_stop`, should the start fail
        answer = await self._answer(running)
        running.sockets = tuple(await asyncio.to_thread(_pipes) - before)
        if not answer.get("ready"):
            raise ValueError("LibreOffice did not say it was ready")
        self._running, self._starting = running, None
        log.info("office: LibreOffice started (process %d)", process.pid)
        return running

    @staticmethod
    async def _answer(running: _Running) -> dict[str, Any]:
        assert running.process.stdout is not None
        line = await running.process.stdout.readline()
        if not line:
            raise EOFError("LibreOffice's worker exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _stop(self, *, gently: bool = False) -> None:
        """Kill LibreOffice's whole process group and delete its profile and pipes. `gently`:
        ask it to quit first (its input closed), as after its `MAX_CONVERSIONS`th document
        and at a stop; after a failure there is nothing it needs to finish."""
        running = self._running or self._starting
        self._running = self._starting = None
        if running is None:
            return
        if gently and running.process.stdin is not None:
            running.process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.process.wait(), STOP_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        await running.process.wait()
        await asyncio.to_thread(_remove, running)

    async def close(self) -> None:
        """Stop LibreOffice, letting it quit by itself first."""
        async with self._lock:
            await self._stop(gently=True)


def _pipes() -> set[Path]:
    """LibreOffice's pipe sockets in /tmp: ours are the ones that appear as it starts."""
    return set(PIPES.glob("OSL_PIPE_*"))


def _remove(running: _Running) -> None:
    shutil.rmtree(running.profile, ignore_errors=True)
    for socket in running.sockets:
        socket.unlink(missing_ok=True)
