"""Reading a received mail: what it asks us to fax, and what it must be refused for.

Two passes share one classification of MIME parts, so the verdict given during the SMTP dialogue
(`inspect`, cheap: headers and the first bytes of each attachment) and the work done after `250`
(`extract`, in a worker process: decode every attachment to a file) never disagree.

Every header access is guarded: the standard library's parser raises on some hostile `From:` and
`Content-Type` values, and an exception here must become a refusal in words, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path

from bridge import documents
from bridge.errors import BridgeError, DocumentError

MAX_DEPTH = 10
MAX_PARTS = 100
FILENAME_MAX = 100

SIGNATURE_TYPES = {
    "application/pkcs7-signature": "a digital signature",
    "application/x-pkcs7-signature": "a digital signature",
    "application/pgp-signature": "a digital signature",
    "application/pgp-keys": "a PGP key",
    "text/vcard": "a contact card",
    "text/x-vcard": "a contact card",
    "text/directory": "a contact card",
}


class Refusal(BridgeError):
    """A mail we will not fax, with the SMTP reply that says why."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.enhanced = enhanced
        self.text = text

    def __reduce__(self) -> tuple[type[Refusal], tuple[int, str, str]]:
        # crosses the process-pool boundary, which pickles exceptions by their args
        return Refusal, (self.code, self.enhanced, self.text)

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Attachment:
    """A part that will become fax pages."""

    filename: str
    kind: documents.Kind
    part_index: int


@dataclass(frozen=True)
class Inspection:
    subject: str
    header_from: str
    message_id: str
    refs: str
    attachments: tuple[Attachment, ...]
    left_out: tuple[str, ...]


@dataclass
class _Walk:
    attachments: list[Attachment] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    bodies: list[EmailMessage] = field(default_factory=list)


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def header(msg: Message, name: str) -> str:
    """A header as text, or "" when it is missing or cannot be parsed."""
    try:
        value = msg.get(name)
    except Exception:  # the stdlib header parser raises assorted errors on hostile input
        return ""
    if value is None:
        return ""
    try:
        text = str(value)
    except Exception:
        return ""
    return " ".join(text.split())


def sanitize_filename(name: str, fallback: str) -> str:
    """A name safe to show and to use on disk: no path, no control characters, capped length."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().lstrip(".")
    if not name:
        return fallback
    if len(name) > FILENAME_MAX:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:10] if dot else ""
        name = (stem if dot else name)[: FILENAME_MAX - len(ext) - 1] + ("." + ext if ext else "")
    return name


def _filename(part: Message, index: int) -> str:
    try:
        raw = part.get_filename() or ""
    except Exception:
        raw = ""
    return sanitize_filename(str(raw), f"attachment-{index}")


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _head_bytes(part: Message) -> tuple[bytes, int]:
    """The first bytes of a part's decoded content and an estimate of its size, cheaply:
    base64 is decoded only as far as sniffing needs."""
    cte = header(part, "Content-Transfer-Encoding").lower()
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        return b"", 0
    if cte == "base64":
        compact = re.sub(r"[^A-Za-z0-9+/=]", "", payload[: documents.SNIFF_BYTES * 2])
        compact = compact[: len(compact) // 4 * 4]
        try:
            head = base64.b64decode(compact)
        except (binascii.Error, ValueError):
            head = b""
        size = len(payload.strip()) * 3 // 4 if payload.strip() else 0
        return head[: documents.SNIFF_BYTES], size
    data = part.get_payload(decode=True)
    data = data if isinstance(data, bytes) else b""
    return data[: documents.SNIFF_BYTES], len(data)


def _cid_references(walk: _Walk) -> set[str]:
    refs: set[str] = set()
    for body in walk.bodies:
        if _content_type(body) == "text/html":
            refs.update(m.lower() for m in re.findall(r"cid:([^\"'\s>)]+)", _text(body), re.I))
    return refs


def _iter_parts(msg: Message, depth: int = 0, parent: str = "") -> Iterator[tuple[Message, str]]:
    """Leaf parts with the content type of their container."""
    if depth > MAX_DEPTH:
        raise Refusal(554, "5.6.0", f"the message is nested more than {MAX_DEPTH} levels deep; "
                                    "send the documents as plain attachments")
    if msg.is_multipart():
        payload = msg.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _iter_parts(sub, depth + 1, _content_type(msg))
        return
    yield msg, parent


def _walk(msg: EmailMessage) -> _Walk:
    walk = _Walk()
    candidates: list[tuple[int, Message, str, str, bytes, int]] = []
    for index, (part, parent) in enumerate(_iter_parts(msg)):
        if index >= MAX_PARTS:
            raise Refusal(554, "5.6.0", f"the message has more than {MAX_PARTS} parts")
        ctype = _content_type(part)
        disposition = _disposition(part)
        name = _filename(part, index)
        if ctype in SIGNATURE_TYPES:
            walk.left_out.append(f"{name} ({SIGNATURE_TYPES[ctype]})")
            continue
        if ctype in ("text/plain", "text/html") and disposition != "attachment":
            walk.bodies.append(part)  # type: ignore[arg-type]
            continue
        if ctype == "message/rfc822":
            raise Refusal(554, "5.6.1", "the message contains a forwarded e-mail; forward the "
                                        "documents themselves as attachments instead")
        head, size = _head_bytes(part)
        candidates.append((index, part, parent, name, head, size))
    cids = _cid_references(walk)
    for index, part, parent, name, head, size in candidates:
        content_id = header(part, "Content-ID").strip("<> ").lower()
        # A picture the HTML body shows by cid: inside multipart/related is decoration (a
        # signature logo); a photo attached next to the text is meant to be faxed.
        decoration = (parent == "multipart/related" and content_id and content_id in cids
                      and documents.sniff(head) is not None)
        if decoration:
            walk.left_out.append(f"{name} (an image shown inside the message text)")
            continue
        try:
            kind = documents.quick_check(name, head, size)
        except DocumentError as exc:
            raise Refusal(554, "5.6.1", str(exc)) from exc
        walk.attachments.append(Attachment(filename=name, kind=kind, part_index=index))
    return walk


def inspect(raw: bytes) -> Inspection:
    """The cheap checks run before `250`: refuse now what can be refused now."""
    try:
        msg = parse(raw)
    except RecursionError as exc:
        raise Refusal(554, "5.6.0", "the message structure is too deeply nested") from exc
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        raise Refusal(550, "5.7.1", "automatically generated mail (Auto-Submitted) is not "
                                    "faxed, to avoid mail loops")
    try:
        walk = _walk(msg)
    except RecursionError as exc:
        raise Refusal(554, "5.6.0", "the message structure is too deeply nested") from exc
    if not walk.attachments:
        raise Refusal(554, "5.6.0", "there is nothing to fax: attach a PDF, TIFF, PNG or JPEG "
                                    "file")
    message_id = header(msg, "Message-ID")
    refs = header(msg, "References")
    return Inspection(
        subject=header(msg, "Subject"),
        header_from=header(msg, "From"),
        message_id=message_id,
        refs=refs,
        attachments=tuple(walk.attachments),
        left_out=tuple(walk.left_out),
    )


# --- after 250: decode everything ----------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    parts: tuple[tuple[str, Path], ...]  # (display name, decoded file), in mail order
    body_text: str
    left_out: tuple[str, ...]


class _TextOf(HTMLParser):
    """Visible text of an HTML body, for a cover page when the mail has no plain-text part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    return html.unescape("".join(parser.out))


def _text(part: Message) -> str:
    """A text part decoded with its declared charset; undecodable bytes become U+FFFD."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, AttributeError, ValueError):
        pass
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def extract(raw_path: Path, workdir: Path) -> Extraction:
    """Decode every attachment of a stored mail to a file. Runs in a worker process."""
    msg = parse(raw_path.read_bytes())
    walk = _walk(msg)
    parts = [part for part, _ in _iter_parts(msg)]
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for n, attachment in enumerate(walk.attachments):
        data = parts[attachment.part_index].get_payload(decode=True)
        path = workdir / f"part-{n:03d}"
        path.write_bytes(data if isinstance(data, bytes) else b"")
        files.append((attachment.filename, path))
    plain = [b for b in walk.bodies if _content_type(b) == "text/plain"]
    html_parts = [b for b in walk.bodies if _content_type(b) == "text/html"]
    body = _text(plain[0]) if plain else html_to_text(_text(html_parts[0])) if html_parts else ""
    return Extraction(parts=tuple(files), body_text=body, left_out=tuple(walk.left_out))


_REPLY_MARKERS = re.compile(
    r"^(-----\s*Original Message\s*-----|_{20,}|On .{0,200}wrote:|.{0,200} yazdı:|"
    r"From: .+|Gönderen: .+|差出人: .+|.{0,100}のメッセージ:|.{0,100}wrote:)\s*$",
    re.IGNORECASE,
)


def cover_text(body: str) -> str:
    """The sender's own words: the body without signature, quoted reply or forwarded history."""
    kept: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        stripped = line.rstrip()
        if stripped in ("-- ", "--") or _REPLY_MARKERS.match(stripped.strip()):
            break
        if stripped.lstrip().startswith(">"):
            continue
        kept.append(stripped)
    return "\n".join(kept).strip()
