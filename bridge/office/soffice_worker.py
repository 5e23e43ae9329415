"""A LibreOffice kept warm, converting documents to PDF one at a time on request.

Runs as a program of its own, under the Python that LibreOffice's `uno` module was built for
(Debian's /usr/bin/python3 with python3-uno), never imported by the service: the service starts
it (`bridge.office.converter`) inside a network namespace of its own, in a process group that
it kills whole when a conversion overruns. Its arguments are soffice.bin, a throw-away profile
directory, a memory limit in bytes and a niceness, which it sets on itself and so on
LibreOffice, and the name of the pipe to reach LibreOffice by. It starts `soffice.bin`
headless, says `{"ready": true}` once it is connected (starting is what a cold conversion pays,
hence the warmth), then answers one JSON line on stdout for each on stdin:
`{"in": path, "out": path, "as": "office" | "text" | "html"}` gets `{"ok": true}` or
`{"error": "protected" | "unreadable" | "crashed" | "gone", "detail": words}`; after "crashed"
(LibreOffice died on the document) and "gone" (it had died before it was given the document)
it exits, and the service starts another.

Documents come from strangers, so every load asks LibreOffice to run no macro and update no link
(`MacroExecutionMode`, `UpdateDocMode`), opens read-only and hidden, and answers any question a
document asks with a refusal; a password request is noted, so a protected document is refused
as protected rather than as unreadable. Spreadsheets are scaled to the page's width (never cut
into columns across pages) before they are exported.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

import uno  # type: ignore[import-not-found]
import unohelper  # type: ignore[import-not-found]
from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]
from com.sun.star.connection import NoConnectException  # type: ignore[import-not-found]
from com.sun.star.task import XInteractionHandler  # type: ignore[import-not-found]

NEVER_EXECUTE = 0  # com.sun.star.document.MacroExecMode.NEVER_EXECUTE
NO_UPDATE = 0  # com.sun.star.document.UpdateDocMode.NO_UPDATE
START_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
QUIT_SECONDS = 4.0  # LibreOffice asked to quit has this long (the service waits a little more)
RESTART_REQUESTED = 81  # soffice.bin's exit status after it set up a new profile
FILTERS = {"text": ("Text (encoded)", "UTF8,LF,,,"), "html": ("HTML (StarWriter)", "")}
EXPORTS = (  # the document's service, and its PDF export filter
    ("com.sun.star.sheet.SpreadsheetDocument", "calc_pdf_Export"),
    ("com.sun.star.presentation.PresentationDocument", "impress_pdf_Export"),
    ("com.sun.star.drawing.DrawingDocument", "draw_pdf_Export"),
    ("com.sun.star.text.WebDocument", "writer_web_pdf_Export"),
    ("com.sun.star.text.TextDocument", "writer_pdf_Export"),
)
PASSWORD_REQUESTS = ("DocumentPasswordRequest", "DocumentMSPasswordRequest")


def _prop(name: str, value: Any) -> Any:
    prop = PropertyValue()
    prop.Name = name
    prop.Value = value
    return prop


class _Questions(unohelper.Base, XInteractionHandler):  # type: ignore[misc]
    """Answers every question a document asks with no continuation (the load fails), noting
    whether one asked for a password."""

    def __init__(self) -> None:
        self.password_asked = False

    def handle(self, request: Any) -> None:
        asked = request.getRequest()
        type_name = getattr(asked, "typeName", "") or type(asked).__name__
        if any(word in type_name for word in PASSWORD_REQUESTS):
            self.password_asked = True


def _die_with_parent() -> None:
    """SIGKILL for this process when its parent dies: a service killed outright must not
    leave LibreOffice running (Linux's PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _launch(soffice: str, profile: str, pipe: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [soffice, "--headless", "--invisible", "--nologo", "--nodefault", "--norestore",
         "--nolockcheck", f"-env:UserInstallation={uno.systemPathToFileUrl(profile)}",
         f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent)  # this driver has no other thread: safe here


def _start(soffice: str, profile: str, pipe: str) -> tuple[subprocess.Popen[bytes], Any]:
    """LibreOffice, connected. With a new profile it exits once after writing the profile,
    asking to be started again (as its own launcher, oosplash, does)."""
    office = _launch(soffice, profile, pipe)
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            context = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
            break
        except NoConnectException:
            if office.poll() == RESTART_REQUESTED:
                office = _launch(soffice, profile, pipe)
            elif office.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("LibreOffice did not start") from None
            time.sleep(0.05)
    desktop = context.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop",
                                                               context)
    return office, desktop


def _fit_sheets_to_width(document: Any) -> None:
    """Each sheet's page style: as many pages down as it needs, one page across."""
    styles = document.StyleFamilies.getByName("PageStyles")
    for sheet in document.Sheets:
        style = styles.getByName(sheet.PageStyle)
        style.ScaleToPagesX = 1
        style.ScaleToPagesY = 0


def _export_filter(document: Any) -> str:
    for service, export in EXPORTS:
        if document.supportsService(service):
            return export
    raise ValueError("not a text, spreadsheet, presentation or drawing")


def convert(desktop: Any, source: str, target: str, how: str) -> dict[str, Any]:
    """One document as a PDF, or the error that says why not (see the module's docstring)."""
    questions = _Questions()
    props = [_prop("Hidden", True), _prop("ReadOnly", True),
             _prop("MacroExecutionMode", NEVER_EXECUTE), _prop("UpdateDocMode", NO_UPDATE),
             _prop("InteractionHandler", questions)]
    if how in FILTERS:
        name, options = FILTERS[how]
        props += [_prop("FilterName", name), _prop("FilterOptions", options)]
    try:
        document = desktop.loadComponentFromURL(uno.systemPathToFileUrl(source), "_blank", 0,
                                                tuple(props))
    except Exception as error:  # IllegalArgumentException, IOException: the file's fault
        document, detail = None, str(error)
    else:
        detail = "LibreOffice could not open it"
    if questions.password_asked:
        if document is not None:
            document.close(True)
        return {"error": "protected", "detail": "it asks for a password"}
    if document is None:
        return {"error": "unreadable", "detail": detail}
    try:
        if document.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
            _fit_sheets_to_width(document)
        document.storeToURL(uno.systemPathToFileUrl(target),
                            (_prop("FilterName", _export_filter(document)),))
    except Exception as error:
        return {"error": "unreadable", "detail": str(error)}
    finally:
        document.close(True)
    return {"ok": True}


def _alive(office: subprocess.Popen[bytes], desktop: Any) -> bool:
    """Whether LibreOffice still runs and answers: a call to a dead one raises at once (its
    bridge is disposed), before its process has been reaped."""
    if office.poll() is not None:
        return False
    try:
        desktop.getFrames().getCount()
    except Exception:
        return False
    return True


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Start LibreOffice and serve requests until the service closes our input."""
    _die_with_parent()
    soffice, profile, memory, nice, pipe = sys.argv[1:6]
    memory_bytes = int(memory)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))  # LibreOffice's too
    os.nice(int(nice))  # conversions are background work: mail being received goes first
    with contextlib.suppress(OSError):  # as the service's sandbox children (bridge.sandbox)
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    office, desktop = _start(soffice, profile, pipe)
    _answer({"ready": True})
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if not _alive(office, desktop):  # killed while idle: not this document's doing
                _answer({"error": "gone", "detail": f"exit status {office.poll()}"})
                return
            answer = convert(desktop, request["in"], request["out"], request["as"])
            if "error" in answer and not _alive(office, desktop):  # it died on the document
                _answer({"error": "crashed", "detail": f"exit status {office.poll()}"})
                return
            _answer(answer)
    finally:
        with contextlib.suppress(Exception):  # it is going anyway: its group is killed after
            desktop.terminate()
        try:
            office.wait(QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            office.kill()


if __name__ == "__main__":
    main()
