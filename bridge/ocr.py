"""Received faxes made searchable: a text layer by OCRmyPDF and Tesseract, and its first lines
for the email (`documents.ocr`).

OCR is an extra, never a condition of delivery. The fax's PDF goes to Debian's `ocrmypdf`
program (which drives Tesseract and Ghostscript) in a process group of its own, under
`documents.ocr_memory_mb` of address space, niced, with Tesseract on one thread
(`OMP_THREAD_LIMIT=1`: the machine's other core keeps serving mail). Past `documents.ocr_timeout`
the whole group is killed. Whatever goes wrong, `Ocr.read` answers None and the fax is mailed
without a text layer, at once: a failure is one log line with the fax's id, and an alert only
when OCR keeps failing (`FAILURES_BEFORE_ALERT` faxes in a row), since then it is the machine's.

`find` says whether this machine can do it, in words for `check-config`, `status` and the log,
as `bridge.office.tools.find` does for LibreOffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.alert_texts import said
from bridge.alerts import Alert
from bridge.config import Settings
from bridge.office.tools import Missing as Missing  # re-exported: one shape for both

log = logging.getLogger(__name__)

PROBE_SECONDS = 20.0
FAILURES_BEFORE_ALERT = 3
EXCERPT_LINES = 3
EXCERPT_CHARS = 300
PACKAGES = "ocrmypdf, tesseract-ocr and tesseract-ocr-LANG for each language"

# Run by the service's own Python between the fork and OCRmyPDF: the caps are set in the new
# process, never in the service (a `preexec_fn` is not safe beside the service's threads).
LIMITED = ("import os, resource, sys; cap = int(sys.argv[1]); "
           "resource.setrlimit(resource.RLIMIT_AS, (cap, cap)); os.nice(int(sys.argv[2])); "
           "os.execv(sys.argv[3], sys.argv[3:])")

# Tesseract's Japanese model separates every few characters with a space: joined again between
# two CJK characters (kana, ideographs, full-width forms), so that the words read as written.
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_GAP = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Reader:
    """How to run OCR here: `ocrmypdf` and the `tesseract` it finds on `path`."""

    ocrmypdf: str
    tesseract: str
    path: str  # the PATH both were found on, which OCRmyPDF is given
    languages: tuple[str, ...]

    def describe(self) -> str:
        return (f"available: OCRmyPDF {self.ocrmypdf} with Tesseract {self.tesseract} "
                f"({'+'.join(self.languages)})")


def languages(settings: Settings) -> tuple[str, ...]:
    """Every Tesseract language a provider in use asks for (`faxmax.ocr_languages`, ...)."""
    wanted = [settings.faxmax.ocr_languages]
    if settings.byosoku.enabled:
        wanted.append(settings.byosoku.ocr_languages)
    return tuple(sorted({lang for langs in wanted for lang in langs.split("+")}))


def _installed_languages(tesseract: str) -> set[str] | None:
    try:
        listed = subprocess.run([tesseract, "--list-langs"], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=PROBE_SECONDS)
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return {line.strip() for line in listed.stdout.splitlines()[1:] if line.strip()}


def find(needed: tuple[str, ...], path: str | None = None) -> Reader | Missing:
    """Look for `ocrmypdf` and `tesseract` on `path` (the environment's PATH when None), and
    the `needed` languages. Runs a short program: call it off the event loop."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    tesseract = shutil.which("tesseract", path=path)
    if tesseract is None:
        return Missing(f"Tesseract is not installed (no tesseract on PATH); install {PACKAGES}")
    ocrmypdf = shutil.which("ocrmypdf", path=path)
    if ocrmypdf is None:
        return Missing(f"OCRmyPDF is not installed (no ocrmypdf on PATH); install {PACKAGES}")
    installed = _installed_languages(tesseract)
    if installed is None:
        return Missing(f"{tesseract} --list-langs failed")
    if absent := [lang for lang in needed if lang not in installed]:
        return Missing(f"Tesseract has no data for {', '.join(absent)}; install "
                       + " ".join(f"tesseract-ocr-{lang.replace('_', '-')}" for lang in absent))
    return Reader(ocrmypdf=ocrmypdf, tesseract=tesseract, path=path, languages=needed)


@functools.cache
def _found(needed: tuple[str, ...], path: str) -> Reader | Missing:
    return find(needed, path)


def availability(settings: Settings) -> Reader | Missing:
    """What `documents.ocr` gives here: a Reader, or why not. Looked for once per process and
    PATH."""
    if settings.documents.ocr == "off":
        return Missing("documents.ocr is \"off\"")
    return _found(languages(settings), os.environ.get("PATH", os.defpath))


def excerpt(text: str) -> str:
    """The first non-empty lines of page 1 (OCRmyPDF's sidecar: pages apart by form feeds),
    at most `EXCERPT_LINES` of them and `EXCERPT_CHARS` characters; "" when there are none or
    the page already had text (OCRmyPDF then writes a note in its place, not the page's)."""
    page = text.split("\f", 1)[0]
    if page.lstrip().startswith("[OCR skipped"):
        return ""
    lines = [" ".join(_CONTROL.sub("", line).split()) for line in page.splitlines()]
    lines = [_CJK_GAP.sub("", line) for line in lines if line][:EXCERPT_LINES]
    joined = "\n".join(lines)
    return joined if len(joined) <= EXCERPT_CHARS else joined[:EXCERPT_CHARS - 1] + "…"


@dataclass(frozen=True)
class Text:
    """A fax made searchable: the PDF with its text layer, and what the email quotes of it."""

    pdf: bytes
    pages: int
    excerpt: str


class Ocr:
    """`await ocr.read(pdf, pages, languages, fax_id)`: the PDF with a text layer, or None."""

    def __init__(self, reader: Reader, *, seconds: float, memory_bytes: int, work_dir: Path,
                 alert: Alert, nice: int = 10) -> None:
        self.reader = reader
        self.seconds = seconds
        self.memory_bytes = memory_bytes
        self.work_dir = work_dir
        self.alert = alert
        self.nice = nice  # background work, as the conversion sandbox's (bridge.pipeline)
        self.failures = 0  # faxes in a row OCR failed on

    async def read(self, pdf: bytes, pages: int, langs: str, fax_id: int) -> Text | None:
        """None, logged once with the fax's id, when OCR fails or overruns `seconds`."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ocr-",
                                            dir=self.work_dir))
        try:
            made = await self._run(work, pdf, langs)
        except OSError as exc:
            made = f"could not run OCRmyPDF: {exc}"
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        if isinstance(made, Text):
            self.failures = 0
            return Text(made.pdf, pages, made.excerpt)
        problem = made
        self.failures += 1
        log.warning("fax %s: no text layer, mailed without one: %s", fax_id, problem)
        if self.failures >= FAILURES_BEFORE_ALERT:
            await self.alert("ocr-failing", said("ocr-failing", failures=self.failures,
                                                 fax=fax_id, problem=problem))
        return None

    async def _run(self, work: Path, pdf: bytes, langs: str) -> Text | str:
        """The text, or why not in words."""
        source, target, sidecar = work / "in.pdf", work / "out.pdf", work / "text.txt"
        await asyncio.to_thread(source.write_bytes, pdf)
        (work / "tmp").mkdir()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LIMITED, str(self.memory_bytes), str(self.nice),
            self.reader.ocrmypdf, "--quiet", "--jobs", "1", "--skip-text", "--optimize", "0",
            "--output-type", "pdf", "--language", langs, "--sidecar", str(sidecar),
            str(source), str(target),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={"PATH": self.reader.path, "OMP_THREAD_LIMIT": "1", "LC_ALL": "C.UTF-8",
                 "HOME": str(work), "TMPDIR": str(work / "tmp")})
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.seconds)
        except TimeoutError:
            return f"OCR took longer than documents.ocr_timeout ({self.seconds:g} s)"
        finally:  # its helpers (Tesseract, Ghostscript) too, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if process.returncode != 0:
            last = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return f"OCRmyPDF exited with {process.returncode}: {last[0][:200]}"
        return await asyncio.to_thread(_outputs, target, sidecar)


def _outputs(target: Path, sidecar: Path) -> Text | str:
    try:
        return Text(target.read_bytes(), 0,
                    excerpt(sidecar.read_text(encoding="utf-8", errors="replace")))
    except OSError as exc:
        return f"OCRmyPDF left no output: {exc.strerror}"
