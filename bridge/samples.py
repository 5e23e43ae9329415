"""Sample documents for `fax-bridge demo` and `fax-bridge send-test`: made on the spot with
Pillow, so nothing binary ships with the package; and the sample mail the sandbox's children
check before their first real one (`SAMPLE_MAIL`)."""

from __future__ import annotations

import io
from email.message import EmailMessage

from PIL import Image, ImageDraw, ImageFont

A4_200DPI = (1654, 2339)
FAX_FINE = (1728, 2292)  # pixels of an A4 page at 204 x 196 dpi


def _page(size: tuple[int, int], mode: str, text: str) -> Image.Image:
    page = Image.new(mode, size, 255 if mode == "L" else 1)
    draw = ImageDraw.Draw(page)
    draw.text((150, 200), text, fill=0, font=ImageFont.load_default(size=64))
    return page


def sample_pdf(text: str = "fax-bridge test fax") -> bytes:
    """A one-page A4 PDF with a line of text."""
    out = io.BytesIO()
    _page(A4_200DPI, "L", text).save(out, "PDF", resolution=200.0)
    return out.getvalue()


def sample_fax_tiff(text: str = "a received fax") -> bytes:
    """A one-page bilevel G4 TIFF at fine fax resolution, as fax providers deliver them."""
    out = io.BytesIO()
    _page(FAX_FINE, "1", text).save(out, "TIFF", compression="group4", dpi=(204, 196))
    return out.getvalue()


def sample_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Example <alice@example.com>"
    msg["To"] = "0312345678@fax.local"
    msg["Subject"] = "Invoice 42"
    msg["Date"] = "Mon, 07 Dec 2026 09:00:00 +0900"
    msg["Message-ID"] = "<sample-1@example.com>"
    msg.set_content("Please fax the attached invoice.\n")
    msg.add_attachment(b"%PDF-1.4\n" + b"0" * 2048 + b"\n%%EOF\n", maintype="application",
                       subtype="pdf", filename="invoice.pdf")
    return msg.as_bytes()


# A mail as clients write them: what each new sandbox child checks before its first real one
# (`Sandbox(warm_up=...)`), so that no sender's `250` pays for a fresh child.
SAMPLE_MAIL = sample_mail()
