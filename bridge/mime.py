"""Reading a received mail: what it asks us to fax, and what it must be refused for.

Two passes share one classification of MIME parts, so the verdict given during the SMTP dialogue
(`inspect`, cheap: headers, the first bytes of each attachment, and the headers of each PDF and
picture in full, for bombs) and the work done after `250` (`extract`, in a worker process:
decode every attachment, in memory) never disagree.

Every header access is guarded: the standard library's parser raises on some hostile `From:` and
`Content-Type` values, and an exception here must become a refusal in words, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import headerregistry
from email.headerregistry import AddressHeader
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses
from functools import cached_property
from pathlib import Path

from bridge import body, cover, documents, replies
from bridge.errors import Refusal as Refusal  # what `inspect` and `extract` raise
from bridge.headers import POLICY
from bridge.options import MailOptions, from_headers

MAX_DEPTH = 10
MAX_PARTS = 100
FILENAME_MAX = 100
# What is kept of a mail's headers for its reports (and its cover page). Each report folds
# them into its own headers, and folding a long non-ASCII header is superlinear: a Subject of
# 12 000 characters took 0.56 s per report, on the event loop.
SUBJECT_MAX = 1000  # characters; a longer Subject is cut, and ends in "…"
REFERENCES_MAX = 2000  # characters of References: the newest ids (the last ones) are kept
MESSAGE_ID_MAX = 998  # a longer Message-ID is no id (RFC 5322's line limit): not kept

SIGNATURE_TYPES = {
    "application/pkcs7-signature": "a digital signature",
    "application/x-pkcs7-signature": "a digital signature",
    "application/pgp-signature": "a digital signature",
    "application/pgp-keys": "a PGP key",
    "text/vcard": "a contact card",
    "text/x-vcard": "a contact card",
    "text/directory": "a contact card",
}


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
    from_mailboxes: tuple[str, ...]
    message_id: str
    refs: str
    attachments: tuple[Attachment, ...]
    left_out: tuple[str, ...]
    options: MailOptions = field(default_factory=MailOptions)  # X-Fax-* (`bridge.options`)
    own_text: bool = False  # nothing is attached: the mail's text is faxed (`bridge.body`)

    @property
    def needs_office(self) -> bool:
        """Whether LibreOffice must convert some of it (`bridge.office`)."""
        return self.own_text or any(a.kind in documents.CONVERTED for a in self.attachments)




def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=POLICY).parsebytes(raw)
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


def capped_subject(subject: str) -> str:
    return subject if len(subject) <= SUBJECT_MAX else subject[:SUBJECT_MAX - 1] + "…"


def capped_references(refs: str) -> str:
    """The newest ids of References that fit in REFERENCES_MAX: a reply's own thread is at
    the end of the list (RFC 5322 3.6.4), and the oldest ids are the ones a reader can spare."""
    kept: list[str] = []
    size = 0
    for ref in reversed(refs.split()):
        size += len(ref) + (1 if kept else 0)
        if size > REFERENCES_MAX:
            break
        kept.append(ref)
    return " ".join(reversed(kept))


def all_from(msg: Message) -> str:
    """Every From: header, joined: a second From: header must not hide behind the first."""
    try:
        values = msg.get_all("From") or []
        return ", ".join(" ".join(str(v).split()) for v in values)
    except Exception:
        return ""


def from_mailboxes(msg: Message) -> tuple[str, ...]:
    """The addresses in the From: header(s), read strictly: a header the standard parser finds
    defects in, or that a lenient parser reads differently (`a@x <b@y>`, `a@x<b@y>`), yields
    nothing, so that no two-address trick can pass as one sender."""
    found: list[str] = []
    try:
        for name, raw in msg.raw_items():
            if name.lower() != "from":
                continue
            value = str(raw)
            parsed: headerregistry.BaseHeader = POLICY.header_factory("From", value)
            assert isinstance(parsed, AddressHeader)
            if parsed.defects or (parsed.groups and any(g.display_name for g in parsed.groups)):
                return ()
            strict = [a.addr_spec for a in parsed.addresses]
            lenient = [a for _, a in getaddresses([value]) if a]
            if [a.lower() for a in strict] != [a.lower() for a in lenient]:
                return ()
            found.extend(strict)
    except Exception:
        return ()
    return tuple(found)


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


def _named(part: Message) -> bool:
    """Whether a part carries a file name of its own."""
    try:
        return bool(part.get_filename())
    except Exception:
        return False


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


# --- structure without bodies ---------------------------------------------------------------
#
# The stdlib parser copies every body into Python strings (a 25 MB mail costs ~8x its size).
# The scanner below finds the parts by their boundaries in the raw bytes and parses only their
# header blocks, so inspecting a mail costs little more than the mail itself; a body is
# decoded only when it is needed (its first bytes for sniffing; all of it in a worker process).

_HEADER_END = re.compile(rb"\r?\n\r?\n")
HEADER_LIMIT = 64 * 1024  # per header block; the stdlib parser is quadratic on some headers


@dataclass(frozen=True)
class Part:
    """A leaf of the MIME tree: its parsed headers and where its body lies in the raw mail.

    One pass asks for the same few values several times (type, disposition, transfer
    encoding): each is derived once here and kept; the header parse beneath is `_Registry`'s,
    once per header."""

    headers: EmailMessage
    header_block: bytes
    body_start: int
    body_end: int
    parent: str
    ctype: str

    @cached_property
    def disposition(self) -> str:
        try:
            return (self.headers.get_content_disposition() or "").lower()
        except Exception:
            return ""

    @cached_property
    def cte(self) -> str:
        return header(self.headers, "Content-Transfer-Encoding").lower()

    def body(self, raw: bytes, limit: int | None = None) -> bytes:
        end = self.body_end if limit is None else min(self.body_end, self.body_start + limit)
        return raw[self.body_start:end]

    def as_message(self, raw: bytes, limit: int | None = None) -> EmailMessage:
        """The part as a standalone message, for the stdlib's charset and CTE decoding."""
        return parse(self.header_block + b"\n\n" + self.body(raw, limit))


def _headers(raw: bytes, start: int, end: int) -> tuple[EmailMessage, bytes, int]:
    """Parse the header block at `start`; return it and where the body starts. A block larger
    than HEADER_LIMIT is refused before parsing: the stdlib parser is quadratic on some
    hostile headers."""
    for blank in (b"\r\n", b"\n"):
        if raw.startswith(blank, start):  # an empty header block (RFC 2046 allows it)
            return parse(b"\n"), b"", start + len(blank)
    match = _HEADER_END.search(raw, start, min(end, start + HEADER_LIMIT + 4))
    if match is None and end - start > HEADER_LIMIT:
        raise Refusal(replies.HEADER_BLOCK_TOO_LARGE, kb=HEADER_LIMIT // 1024)
    header_end, body_start = (match.start(), match.end()) if match else (end, end)
    block = raw[start:header_end]
    msg = BytesParser(policy=POLICY).parsebytes(block + b"\n\n", headersonly=True)
    assert isinstance(msg, EmailMessage)
    return msg, block, body_start


def _scan(raw: bytes, start: int, end: int, depth: int, parent: str,
          parsed: tuple[EmailMessage, bytes, int] | None = None) -> Iterator[Part]:
    """The leaves from `start`; `parsed` is its header block when the caller has read it."""
    if depth > MAX_DEPTH:
        raise Refusal(replies.NESTED_TOO_DEEP, depth=MAX_DEPTH)
    headers, header_block, body_start = parsed or _headers(raw, start, end)
    ctype = _content_type(headers)
    try:
        boundary = headers.get_boundary() if ctype.startswith("multipart/") else None
    except Exception:
        boundary = None
    if not boundary:
        yield Part(headers, header_block, body_start, end, parent, ctype)
        return
    delimiter = re.compile(rb"(?:^|(?<=\n))--" + re.escape(boundary.encode("utf-8", "replace"))
                           + rb"(--)?[ \t]*(?:\r?\n|$)", re.MULTILINE)
    part_start: int | None = None
    for match in delimiter.finditer(raw, body_start, end):
        if part_start is not None:
            part_end = match.start()
            # the line break before a delimiter belongs to the delimiter
            if raw[part_end - 2:part_end] == b"\r\n":
                part_end -= 2
            elif raw[part_end - 1:part_end] == b"\n":
                part_end -= 1
            yield from _scan(raw, part_start, max(part_start, part_end), depth + 1, ctype)
        if match.group(1):
            return
        part_start = match.end()
    if part_start is not None and part_start < end:  # no closing delimiter: take the rest
        yield from _scan(raw, part_start, end, depth + 1, ctype)


def parts(raw: bytes) -> tuple[EmailMessage, list[Part]]:
    """The top-level headers and the leaf parts, in mail order."""
    parsed = _headers(raw, 0, len(raw))
    found: list[Part] = []
    for part in _scan(raw, 0, len(raw), 0, "", parsed):
        found.append(part)
        if len(found) > MAX_PARTS:
            raise Refusal(replies.TOO_MANY_PARTS, parts=MAX_PARTS)
    return parsed[0], found


B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64decode(encoded: bytes) -> bytes:
    """Lenient base64, as mail clients write it: line breaks, junk and missing padding are
    tolerated (a cut-off tail loses at most its last incomplete byte)."""
    compact = encoded.translate(None, b"\r\n\t =")  # the usual junk, at C speed
    if compact.translate(None, B64_ALPHABET):  # anything else: the slow, general way
        compact = re.sub(rb"[^A-Za-z0-9+/]", b"", compact)
    if len(compact) % 4 == 1:
        compact = compact[:-1]
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return b""


def _decoded(part: Part, raw: bytes, limit: int | None = None) -> bytes:
    """A leaf's content with its transfer encoding undone (up to about `limit` bytes)."""
    cte = part.cte
    if cte == "base64":
        data = _b64decode(part.body(raw, None if limit is None else limit * 2))
    elif cte == "quoted-printable":
        data = quopri.decodestring(part.body(raw, None if limit is None else limit * 3))
    else:
        data = part.body(raw, limit)
    return data if limit is None else data[:limit]


def _size(part: Part, raw: bytes) -> int:
    """The decoded size, estimated without decoding (base64 lines carry 3 bytes per 4)."""
    length = part.body_end - part.body_start
    if part.cte == "base64":
        if not part.body(raw, 4096).strip():
            return 0
        return length * 3 // 4
    return length if part.body(raw, 4096).strip() or length > 4096 else 0


# Mail labelled with a standard charset is often written with the vendor's superset (Windows
# writes "shift_jis" but means CP932, with ① and ㈱); decoding with the superset loses nothing.
CHARSET_SUPERSETS = {"shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932",
                     "x-sjis": "cp932", "iso-8859-9": "cp1254", "iso-8859-1": "cp1252",
                     "us-ascii": "utf-8", "ascii": "utf-8"}


def _text(part: Part, raw: bytes, limit: int | None = None) -> str:
    """A text part decoded with its declared charset; undecodable bytes become U+FFFD."""
    msg = part.as_message(raw, limit)
    data = msg.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = (msg.get_content_charset() or "utf-8").lower()
    try:
        text = data.decode(CHARSET_SUPERSETS.get(charset, charset), errors="replace")
    except (LookupError, ValueError):  # unknown charset, or a name no codec could have
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


HTML_SCAN_LIMIT = 1_000_000  # bytes of an HTML body searched for cid: references


@dataclass
class _Walk:
    attachments: list[Attachment] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    bodies: list[Part] = field(default_factory=list)
    pictures: list[tuple[str, int, str]] = field(default_factory=list)  # cid, index, name
    own: tuple[body.How, Part] | None = None  # the part faxed when nothing is attached


BOMB_KINDS = documents.PICTURES | {documents.Kind.PDF}  # what `documents.check_bombs` reads


def _walk(raw: bytes, leaves: list[Part], office: bool, fax_body: bool,
          bombs: documents.Limits | None = None) -> _Walk:
    """Classify the leaves; with `bombs` (before `250`), every PDF and picture attached is
    also decoded whole and checked against those caps (`documents.check_bombs`)."""
    walk = _Walk()
    candidates: list[tuple[int, Part, str, bytes, int]] = []
    for index, part in enumerate(leaves):
        ctype = part.ctype
        disposition = part.disposition
        name = _filename(part.headers, index)
        if ctype in SIGNATURE_TYPES:
            walk.left_out.append(f"{name} ({SIGNATURE_TYPES[ctype]})")
            continue
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not (
                disposition == "inline" and _named(part.headers)):  # a file shown inline
            walk.bodies.append(part)
            continue
        if ctype == "message/rfc822":
            raise Refusal(replies.FORWARDED_MAIL)
        head = _decoded(part, raw, documents.SNIFF_BYTES)
        candidates.append((index, part, name, head, _size(part, raw)))
    cids: set[str] = set()
    for part in walk.bodies:
        if part.ctype == "text/html":
            cids.update(body.shown_cids(_text(part, raw, HTML_SCAN_LIMIT)))
    for index, part, name, head, size in candidates:
        content_id = header(part.headers, "Content-ID").strip("<> ").lower()
        # A picture the HTML body shows by cid: inside multipart/related is decoration (a
        # signature logo); a photo attached next to the text is meant to be faxed.
        decoration = (part.parent == "multipart/related" and content_id and content_id in cids
                      and (documents.sniff(head) in documents.PICTURES
                           or body.picture_type(head) is not None))
        if decoration:
            walk.pictures.append((content_id, index, name))
            continue
        # its DocumentError is the refusal
        kind = documents.quick_check(name, head, size, declared=part.ctype, office=office)
        if bombs is not None and kind in BOMB_KINDS:
            documents.check_bombs(name, kind, _decoded(part, raw), bombs)
        walk.attachments.append(Attachment(filename=name, kind=kind, part_index=index))
    walk.own = body.faxed_part(walk.bodies) if fax_body and not walk.attachments else None
    walk.left_out.extend(body.not_shown((name for _, _, name in walk.pictures), bool(walk.own)))
    return walk


def inspect_stored(stored: str | bytes, office: bool = False, fax_body: bool = False,
                   limits: documents.Limits | None = None) -> Inspection:
    """`inspect` of a mail as the SMTP handler keeps it (its bytes, or the path of the file a
    large one is spooled to); what it runs in the sandbox."""
    raw = stored if isinstance(stored, bytes) else Path(stored).read_bytes()
    return inspect(raw, office, fax_body, limits)


def inspect(raw: bytes, office: bool = False, fax_body: bool = False,
            limits: documents.Limits | None = None) -> Inspection:
    """The cheap checks run before `250`: refuse now what can be refused now. `office`: Office
    documents, HTML and text files can be converted (`bridge.office`); `fax_body`: so is the
    text of a mail with nothing attached (`bridge.body`); `limits`: the caps against bombs
    (`documents.Limits()` unless given)."""
    top, leaves = parts(raw)
    auto = header(top, "Auto-Submitted").lower()
    if auto and auto != "no":
        raise Refusal(replies.AUTO_SUBMITTED)
    walk = _walk(raw, leaves, office, fax_body, limits or documents.Limits())
    if walk.own is not None:
        how, part = walk.own
        cut = part.body_end - part.body_start > body.SCAN_LIMIT  # more than is looked at
        body.check(how, _text(part, raw, body.SCAN_LIMIT), cut, {c for c, _, _ in walk.pictures})
    elif not walk.attachments:
        raise Refusal(replies.NOTHING_TO_FAX if fax_body else replies.ATTACHMENTS_ONLY)
    message_id = header(top, "Message-ID")
    return Inspection(
        subject=capped_subject(header(top, "Subject")),
        header_from=all_from(top),
        from_mailboxes=from_mailboxes(top),
        message_id=message_id if len(message_id) <= MESSAGE_ID_MAX else "",
        refs=capped_references(header(top, "References")),
        attachments=tuple(walk.attachments),
        left_out=tuple(walk.left_out),
        options=from_headers(lambda name: header(top, name)),
        own_text=walk.own is not None,
    )


# --- after 250: decode everything ----------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    parts: tuple[tuple[str, bytes], ...]  # (display name, decoded content), in mail order
    body_text: str
    left_out: tuple[str, ...]
    kinds: tuple[documents.Kind, ...] = ()  # of each part; text and HTML come as UTF-8
    own_text: body.Body | None = None  # the mail's text, faxed when nothing is attached


def extract(raw: bytes, office: bool = False, fax_body: bool = False) -> Extraction:
    """Decode every attachment of a stored mail, in memory: the PDF is built from them in the
    same process, so writing them to files only to read them back cost a directory, a file
    per attachment and their removal (a third of converting a small mail). Runs in a worker
    process, whose memory limit bounds them."""
    _, leaves = parts(raw)
    walk = _walk(raw, leaves, office, fax_body)
    decoded = tuple((a.filename, _text(leaves[a.part_index], raw).encode()
                     if a.kind in documents.TEXTS else _decoded(leaves[a.part_index], raw))
                    for a in walk.attachments)
    plain = [b for b in walk.bodies if b.ctype == "text/plain"]
    html_parts = [b for b in walk.bodies if b.ctype == "text/html"]
    text = (_text(plain[0], raw) if plain
            else cover.html_to_text(_text(html_parts[0], raw)) if html_parts else "")
    own = None
    if walk.own is not None:
        how, part = walk.own
        own = body.Body(how, _text(part, raw), tuple(body.Picture(cid, name, _decoded(
            leaves[index], raw)) for cid, index, name in walk.pictures))
    return Extraction(parts=decoded, body_text=text, left_out=tuple(walk.left_out),
                      kinds=tuple(a.kind for a in walk.attachments), own_text=own)
