"""The mails of the SMTP intake benchmarks (`bench/intake.py`, `bench/ceiling_postfix.py`): ~5 KB
(text plus a small real one-page PDF, a bilevel CCITT G4 page) and ~300 KB (a real one-page PDF
of ~220 KB, a greyscale JPEG "scan", base64 in the mail), both built with Pillow and opened with
pypdf, each mail with its own Message-ID, Subject and MIME boundary."""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from functools import cache
from typing import Any

from PIL import Image, ImageDraw
from pypdf import PdfReader

SENDER = "alice@example.com"
RCPT = "0312345678@fax.local"
ID_WIDTH = 24
PLACEHOLDER = "Z" * ID_WIDTH


def _page_lines(draw: Any, w: int, h: int, rng: random.Random, fill: Any) -> None:
    """Rows of word-like blocks, as a scanned letter looks from afar."""
    y = h // 12
    while y < h - h // 12:
        x = w // 10
        while x < w - w // 10:
            word = rng.randint(w // 60, w // 12)
            draw.rectangle((x, y, min(x + word, w - w // 10), y + h // 110), fill=fill(rng))
            x += word + w // 80
        y += h // 40


@cache
def small_pdf() -> bytes:
    """A one-page PDF of a bilevel page (CCITT G4), about 3 KB."""
    image = Image.new("1", (425, 550), 1)
    _page_lines(ImageDraw.Draw(image), 425, 550, random.Random(5), lambda _: 0)
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=50)
    return buffer.getvalue()


@cache
def scan_pdf(target: int = 220_000) -> bytes:
    """A one-page PDF of a greyscale letter-size scan at 150 dpi (JPEG), its quality chosen so
    that the file is as close to `target` bytes as the JPEG quality steps allow."""
    image = Image.new("L", (1275, 1650), 255)
    _page_lines(ImageDraw.Draw(image), 1275, 1650, random.Random(7),
                lambda rng: rng.randint(0, 60))

    def pdf(quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PDF", resolution=150, quality=quality)
        return buffer.getvalue()

    return min((pdf(q) for q in range(60, 97)), key=lambda data: abs(len(data) - target))


@dataclass(frozen=True)
class MailTemplate:
    """A mail's DATA bytes (dot-stuffed, CRLF), split at a fixed-width id placeholder so that
    each mail gets its own Message-ID, Subject and MIME boundary without building it again."""

    name: str
    pdf_bytes: int
    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts) + (len(self.parts) - 1) * ID_WIDTH

    def data(self, tag: str) -> bytes:
        """The DATA bytes without the terminating `.` line."""
        unique = tag.encode().rjust(ID_WIDTH, b"0")[-ID_WIDTH:]
        return unique.join(self.parts)


def make_template(name: str, pdf: bytes, size: int) -> MailTemplate:
    if len(PdfReader(io.BytesIO(pdf)).pages) != 1:  # a real PDF, or this raises
        raise ValueError(f"{name}: the attachment should be a one-page PDF")

    def build(body: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = SENDER
        msg["To"] = RCPT
        msg["Subject"] = f"Invoice {PLACEHOLDER}"
        msg["Message-ID"] = f"<{PLACEHOLDER}@bench.example>"
        msg.set_content(body)
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="invoice.pdf")
        msg.set_boundary(f"=_{PLACEHOLDER}")  # each mail its own, as mail clients write them
        return msg.as_bytes(policy=SMTP_POLICY)

    short = build("Please fax this.\n")
    filler = max(0, size - len(short))
    lines = ["Please fax this."] + ["x" * 75] * (filler // 77) + ["x" * max(0, filler % 77 - 2)]
    raw = build("\n".join(lines) + "\n")
    body = re.sub(rb"(?m)^\.", b"..", raw)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    parts = tuple(body.split(PLACEHOLDER.encode()))
    # Subject, Message-ID, the boundary parameter and the three delimiter lines
    assert len(parts) == 7, "the placeholder must be in Subject, Message-ID and boundary only"
    return MailTemplate(name, len(pdf), parts)


@cache
def templates() -> dict[str, MailTemplate]:
    """The two sizes, by the names the scripts' `--sizes` take."""
    return {"5KB": make_template("5KB", small_pdf(), 5_000),
            "300KB": make_template("300KB", scan_pdf(), 300_000)}
