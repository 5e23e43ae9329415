"""An email as a mail reader reads it: its text and HTML parts, the pictures its HTML shows
inline (opened, and so checked, by Pillow), and its attachments."""

from __future__ import annotations

import io
from email.message import EmailMessage, Message

from PIL import Image


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def images(msg: EmailMessage) -> dict[str, Image.Image]:
    """Every inline picture in the email by its Content-ID, opened (and so checked) by
    Pillow."""
    found: dict[str, Image.Image] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "image" and part["Content-ID"]:
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            image = Image.open(io.BytesIO(data))
            image.load()
            assert image.format == "PNG" and part.get_content_type() == "image/png"
            found[str(part["Content-ID"]).strip().strip("<>")] = image
    return found


def attachments(msg: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(filename, mime type, data) of each attachment, in order."""
    found = []
    for part in msg.iter_attachments():
        assert isinstance(part, Message)
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        found.append((part.get_filename() or "", part.get_content_type(), data))
    return found
