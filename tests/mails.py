"""Mails as the tests send them: what a mail client writes, and what an attacker does."""

from __future__ import annotations

import base64
from email.message import EmailMessage

from tests.docfactory import make_pdf


def fax_mail(
    *attachments: tuple[str, str, bytes], body: str = "", subject: str = "Invoice 42",
    to: str = "02122222525@fax.local", sender: str = "alice@example.com",
    message_id: str = "<original-1@example.com>",
) -> EmailMessage:
    """A mail as a client writes it: (filename, mime type, data) attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content(body or "\n")
    for filename, mimetype, data in attachments:
        maintype, _, subtype = mimetype.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def header_bomb() -> bytes:
    """A folded Content-Type with many ';' inside a quoted parameter: quadratic to parse."""
    param = ";" * 60_000
    folded = "\r\n ".join(param[i:i + 70] for i in range(0, len(param), 70))
    return (b"From: alice@example.com\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=B;\r\n x=\"" + folded.encode()
            + b"\"\r\n\r\n--B\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(make_pdf(1)) + b"\r\n--B--\r\n")
