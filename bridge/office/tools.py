"""Whether this machine can convert Office documents, and with what.

Three things must be there: LibreOffice's `soffice.bin`, a Python that can import LibreOffice's
`uno` module (Debian's /usr/bin/python3 with python3-uno), and a way to start it with no
network (`unshare --net`, in a user namespace when the service is not root). Without the last,
a document's linked image would be fetched from wherever the sender pointed it, so the gateway
converts nothing rather than convert with the network on. `find` says which is missing, in
words for `check-config`, `status` and the log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROBE_SECONDS = 20.0
# Where distributions and LibreOffice's own packages put it, after `soffice` on PATH.
PLACES = ("/usr/lib/libreoffice/program", "/opt/libreoffice/program")
ISOLATIONS = (("unshare", "--net", "--map-root-user"), ("unshare", "--net"))


@dataclass(frozen=True)
class Office:
    """How to run LibreOffice here: `isolate` + `python` + the worker script + `soffice`."""

    soffice: str  # soffice.bin itself: its `soffice` launcher would fork it away
    python: str
    isolate: tuple[str, ...]

    def describe(self) -> str:
        return (f"available: LibreOffice {self.soffice}, driven by {self.python}, "
                f"without network ({' '.join(self.isolate)})")


@dataclass(frozen=True)
class Missing:
    """Why this machine lacks what a feature needs (LibreOffice for Office documents, OCRmyPDF
    and Tesseract for searchable faxes, `bridge.ocr`), in words for the operator."""

    reason: str

    def describe(self) -> str:
        return f"not available: {self.reason}"


def _runs(command: list[str]) -> bool:
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=PROBE_SECONDS).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _soffice(configured: str) -> Path | None:
    """`documents.libreoffice`, else `soffice` on PATH, else a usual place; a `soffice`
    launcher is followed to the `soffice.bin` beside it."""
    found = configured or shutil.which("soffice")
    candidates = [Path(found)] if found else [Path(p) / "soffice.bin" for p in PLACES]
    for candidate in candidates:
        path = candidate.resolve()
        if path.name == "soffice" and (path.parent / "soffice.bin").exists():
            path = path.parent / "soffice.bin"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _python(program: Path) -> str | None:
    """A Python that imports `uno`: LibreOffice's own (its builds from TDF carry one), else the
    system's (Debian's python3-uno)."""
    for candidate in (program.parent / "python", Path("/usr/bin/python3")):
        if candidate.is_file() and _runs([str(candidate), "-c", "import uno"]):
            return str(candidate)
    return None


def find(configured: str = "") -> Office | Missing:
    """Look for LibreOffice (`configured`: the `documents.libreoffice` path, or "" to search).
    Runs a few short programs: call it off the event loop."""
    program = _soffice(configured)
    if program is None:
        where = configured or "on PATH or in " + " or ".join(PLACES)
        return Missing(f"LibreOffice is not installed (no soffice {where}); install "
                       "libreoffice-writer, libreoffice-calc and libreoffice-impress")
    python = _python(program)
    if python is None:
        return Missing(f"no Python here can import LibreOffice's uno module for {program}; "
                       "install python3-uno")
    for isolate in ISOLATIONS:
        if _runs([*isolate, "true"]):
            return Office(soffice=str(program), python=python, isolate=isolate)
    return Missing("LibreOffice cannot be started without network access here: "
                   "'unshare --net' is refused (allow user namespaces, or run in a container "
                   "that permits them); documents could fetch what they link to")
