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
- with a profile of its own, made for it and deleted with it, so that nothing one document
  leaves in a profile reaches another LibreOffice; and replaced after `MAX_CONVERSIONS`.
Macros never run and questions a document asks (a password) are refused (`soffice_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
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
    process: asyncio.subprocess.Process
    profile: Path
    conversions: int = 0


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

    @property
    def warm(self) -> bool:
        """A LibreOffice is running and has said it is ready."""
        return self._running is not None and self._running.process.returncode is None

    async def warm_up(self) -> None:
        """Start LibreOffice now, so that the first document does not wait for it; a failure
        is logged, and the first document tries again."""
        async with self._lock:
            try:
                await self._ready(self.seconds)
            except OSError as exc:
                log.warning("office: %s", exc)

    async def convert(self, source: Path, target: Path, how: How, name: str) -> None:
        """A LibreOffice that cannot start (or crashed while idle) is the machine's trouble,
        not the document's: `OSError(EAGAIN)`, so the mail stays queued and is tried again
        (`bridge.workers.converter.transient`). Once it has the document, anything that goes
        wrong is the document's: one refusal naming it."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.seconds
            running = await self._ready(self.seconds)
            try:
                answer = await asyncio.wait_for(self._converted(running, source, target, how),
                                                max(0.0, deadline - loop.time()))
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
            if answer.get("error") == "crashed" or running.conversions >= MAX_CONVERSIONS:
                await self._stop()
        if answer.get("error") == "crashed":
            log.warning("office: LibreOffice crashed converting %s", name)
            raise DocumentError(replies.CONVERTER_DIED, name=name)
        if answer.get("error") == "protected":
            raise DocumentError(replies.PROTECTED_DOCUMENT, name=name)
        if not answer.get("ok"):
            log.info("office: %s: %s", name, answer.get("detail", answer))
            raise DocumentError(replies.NOT_CONVERTIBLE, name=name)

    async def _converted(self, running: _Running, source: Path, target: Path,
                         how: How) -> dict[str, Any]:
        running.conversions += 1
        stdin = running.process.stdin
        assert stdin is not None
        stdin.write(json.dumps({"in": str(source), "out": str(target), "as": how}).encode()
                    + b"\n")
        await stdin.drain()
        return await self._answer(running)

    async def _ready(self, seconds: float) -> _Running:
        """The running LibreOffice, or a new one within `seconds`; `OSError(EAGAIN)` if it
        does not start."""
        if self.warm:
            assert self._running is not None
            return self._running
        await self._stop()
        try:
            return await asyncio.wait_for(self._start(), seconds)
        except (OSError, EOFError, ValueError, TimeoutError) as exc:
            await self._stop()
            raise OSError(errno.EAGAIN, "LibreOffice did not start: "
                          f"{exc or type(exc).__name__}") from exc

    async def _start(self) -> _Running:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="libreoffice-", dir=self.work_dir))
        (profile / "user").mkdir()
        (profile / "user" / "registrymodifications.xcu").write_text(PROFILE_SETTINGS)
        process = await asyncio.create_subprocess_exec(
            *self.office.isolate, self.office.python, str(WORKER), self.office.soffice,
            str(profile), str(self.memory_bytes), str(self.nice),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        running = _Running(process, profile)
        self._starting = running  # for `_stop`, should the start fail
        if not (await self._answer(running)).get("ready"):
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

    async def _stop(self) -> None:
        """Kill LibreOffice's whole process group and delete its profile."""
        running = self._running or self._starting
        self._running = self._starting = None
        if running is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        await running.process.wait()
        await asyncio.to_thread(shutil.rmtree, running.profile, True)

    async def close(self) -> None:
        async with self._lock:
            await self._stop()
