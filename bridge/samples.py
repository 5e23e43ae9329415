"""Sample documents for `fax-bridge demo` and `fax-bridge send-test`: made on the spot with
Pillow (and, for Word, the few XML parts a DOCX needs), so nothing binary ships with the
package; and the sample mail the sandbox's children check before their first real one
(`SAMPLE_MAIL`)."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage
from xml.sax.saxutils import escape

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


_DOCX_PARTS = {  # in this order: Word's first entry is [Content_Types].xml, as filetypes reads
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'),
}


def sample_docx(*paragraphs: str) -> bytes:
    """A one-page Word document (DOCX) of `paragraphs`."""
    body = "".join(f"<w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p>" for text in paragraphs)
    document = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/'
                f'main"><w:body>{body}</w:body></w:document>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (*_DOCX_PARTS.items(), ("word/document.xml", document)):
            archive.writestr(name, text)
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
