"""Reading received mail: the body-less structure scan agrees with the stdlib parser, names and
charsets come out right, and any input ends in an inspection or a refusal."""

from __future__ import annotations

import base64
import email
import re
from email import headerregistry
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.policy import default as default_policy
from email.utils import make_msgid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import headers, mime
from bridge.cover import cover_text
from tests.docfactory import make_jpeg, make_pdf, make_png


def stdlib_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    msg = email.message_from_bytes(raw, policy=default_policy)
    out = []
    for part in msg.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            out.append((part.get_content_type(), payload if isinstance(payload, bytes) else b""))
    return out


def scanned_leaves(raw: bytes) -> list[tuple[str, bytes]]:
    _, leaves = mime.parts(raw)
    return [(p.ctype, mime._decoded(p, raw)) for p in leaves]


def rich_mail() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["Subject"] = "Rich"
    msg.set_content("plain body\n")
    msg.add_alternative("<p>html <img src='cid:logo@x'></p>", subtype="html")
    html = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html, EmailMessage)
    html.add_related(make_png(20, 20), maintype="image", subtype="png", cid="<logo@x>")
    msg.add_attachment(make_pdf(2), maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(make_jpeg(64, 64), maintype="image", subtype="jpeg", filename="b.jpg")
    msg.add_attachment("quoted=printable é\n".encode(), maintype="application",
                       subtype="octet-stream", filename="c.bin", cte="quoted-printable")
    return msg


@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_the_structure_scan_finds_the_same_parts_as_the_stdlib_parser(linesep: str) -> None:
    raw = rich_mail().as_bytes(policy=SMTP.clone(linesep=linesep))
    assert scanned_leaves(raw) == stdlib_leaves(raw)
    assert [ctype for ctype, _ in scanned_leaves(raw)] == [
        "text/plain", "text/html", "image/png", "application/pdf", "image/jpeg",
        "application/octet-stream"]


def test_each_header_of_a_mail_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[tuple[str, str]] = []
    parse = headerregistry.HeaderRegistry.__call__

    def counted(registry: headerregistry.HeaderRegistry, name: str,
                value: str) -> headerregistry.BaseHeader:
        parsed.append((name.lower(), value))
        return parse(registry, name, value)

    monkeypatch.setattr(headerregistry.HeaderRegistry, "__call__", counted)
    msg = rich_mail()
    msg.get_payload().pop()  # type: ignore[union-attr]  # drop the unsupported c.bin
    msg["Message-ID"] = make_msgid()
    raw = msg.as_bytes(policy=SMTP)  # a boundary of its own: never parsed before
    parsed.clear()  # what building the mail parsed
    inspection = mime.inspect(raw)
    mime.extract(raw)
    assert inspection.message_id == msg["Message-ID"]
    assert [v for n, v in parsed if n == "content-type" and "boundary" in v]  # it was read
    assert len(parsed) == len(set(parsed))


def test_the_parsed_header_memo_is_bounded_and_parses_as_the_stdlib() -> None:
    registry = headers.Registry()
    stdlib = headerregistry.HeaderRegistry()
    value = 'multipart/mixed; boundary="=_a"; (comment) charset=utf-8'
    assert registry("Content-Type", value) is registry("Content-Type", value)
    ours, theirs = registry("Content-Type", value), stdlib("Content-Type", value)
    assert isinstance(ours, headerregistry.ContentTypeHeader)
    assert isinstance(theirs, headerregistry.ContentTypeHeader)
    assert (str(ours), ours.params, ours.defects) == (str(theirs), theirs.params, theirs.defects)
    for i in range(registry.MEMO_SIZE + 50):
        registry("Subject", f"number {i}")
    long = "x" * (registry.MEMO_VALUE_MAX + 1)
    assert registry("Subject", long) is not registry("Subject", long)
    assert len(registry._parsed) == registry.MEMO_SIZE
    assert ("Content-Type", value) not in registry._parsed  # the oldest went first
    assert ("Subject", f"number {registry.MEMO_SIZE + 49}") in registry._parsed


def test_a_missing_closing_boundary_still_yields_the_last_part() -> None:
    raw = rich_mail().as_bytes(policy=SMTP)
    cut = raw[: raw.rindex(b"--\r\n")]  # drop the final close delimiter's "--"
    assert [c for c, _ in scanned_leaves(cut)][:5] == [c for c, _ in scanned_leaves(raw)][:5]


def test_a_multipart_without_boundary_is_a_single_unusable_leaf() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\n"
           b"no parts here\r\n")
    with pytest.raises(mime.Refusal) as info:
        mime.inspect(raw)
    assert info.value.reply.startswith("554 5.6.1 'attachment-0' is ")


def test_deep_nesting_is_refused_in_words() -> None:
    inner = b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\r\n"
    for depth in range(15):
        b = f"b{depth}".encode()
        inner = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n"
                 + inner + b"\r\n--" + b + b"--\r\n")
    with pytest.raises(mime.Refusal) as info:
        mime.inspect(b"From: a@example.com\r\n" + inner)
    assert info.value.reply == ("554 5.6.0 the message is nested more than 10 levels deep; send "
                                "the documents as plain attachments")


def test_an_oversized_header_block_is_refused_before_parsing() -> None:
    raw = b"Subject: " + b"x" * 200_000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(mime.Refusal) as info:
        mime.inspect(raw)
    assert info.value.reply == "554 5.6.0 a header block is larger than 64 KB"


@pytest.mark.parametrize(("disposition", "expected"), [
    # RFC 2231, ISO-2022-JP
    ("attachment; filename*=iso-2022-jp''%1B%24B8%2B%40Q%3Dq%1B%28B.pdf", "見積書.pdf"),
    # RFC 2047 inside a quoted filename, Shift_JIS (Outlook style)
    ('attachment; filename="=?shift_jis?B?jKmQz4+RLnBkZg==?="', "見積書.pdf"),
    # Turkish UTF-8 (RFC 2231)
    ("attachment; filename*=utf-8''%C5%9Eubat%20%C4%B0zmir%20%C4%9F%C4%B1.pdf",
     "Şubat İzmir ğı.pdf"),
    ('attachment; filename="../../etc/passwd"', "passwd"),
    ('attachment; filename="a\x01b.pdf"', "ab.pdf"),
    ('attachment; filename="' + "x" * 300 + '.pdf"', "x" * 96 + ".pdf"),
])
def test_attachment_names_are_decoded_and_sanitised(disposition: str, expected: str) -> None:
    raw = (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: application/pdf\r\nContent-Disposition: " + disposition.encode()
           + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(make_pdf(1)) + b"\r\n--B--\r\n")
    inspection = mime.inspect(raw)
    assert [a.filename for a in inspection.attachments] == [expected]


def test_extract_decodes_attachments_and_the_body_in_its_charset(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["Subject"] = "=?iso-2022-jp?b?GyRCOCtAUT1xGyhC?="
    msg.set_content("Merhaba, fatura ekte.\n", charset="windows-1254")
    pdf = make_pdf(1)
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="f.pdf")
    spool = tmp_path / "m.eml"
    spool.write_bytes(msg.as_bytes(policy=SMTP))
    extraction = mime.extract(spool.read_bytes())
    [(name, data)] = extraction.parts
    assert name == "f.pdf" and data == pdf
    assert extraction.body_text == "Merhaba, fatura ekte.\n"
    assert mime.inspect(spool.read_bytes()).subject == "見積書"


@pytest.mark.parametrize(("body", "cover"), [
    ("Please sign page 2.\n\n-- \nAlice\nACME", "Please sign page 2."),
    ("Thanks!\n\nOn Mon, 1 Jan 2026, Bob <b@x> wrote:\n> old\n", "Thanks!"),
    ("Teşekkürler\n\n1 Ocak 2026 Pzt, Bob şunu yazdı:\n> eski\n", "Teşekkürler"),
    ("Kind regards\n-----Original Message-----\nFrom: x\n", "Kind regards"),
    ("> only a quote\n", ""),
    ("-- \nsignature only\n", ""),
])
def test_cover_text_keeps_only_the_senders_own_words(body: str, cover: str) -> None:
    assert cover_text(body) == cover


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.builds(
    lambda raw, cut, junk: raw[:cut] + junk + raw[cut:],
    st.just(rich_mail().as_bytes(policy=SMTP)), st.integers(0, 3000), st.binary(max_size=50)))
def test_any_input_ends_in_an_inspection_or_a_refusal(raw: bytes) -> None:
    try:
        result = mime.inspect(raw)
    except mime.Refusal as refusal:
        assert refusal.code in (550, 554)
    else:
        assert result.attachments


def test_message_headers_that_crash_the_stdlib_are_read_as_empty() -> None:
    msg = Message()
    msg["From"] = "alice@example.org<bob@evil.example>, =?x?q?" + "\udcff"
    assert isinstance(mime.header(msg, "From"), str)


@pytest.mark.parametrize(("charset", "text"), [
    ("iso-2022-jp", "いつもお世話になっております。"),
    ("shift_jis", "①番の書類を㈱山田へ"),  # CP932-only characters labelled Shift_JIS
    ("cp932", "見積書"),
    ("windows-1254", "Şubat faturası, İzmir"),
    ("iso-8859-9", "Şubat faturası, İzmir"),
    ("utf-8", "Grüße, Şükrü, 東京"),
])
def test_bodies_in_any_charset_come_out_right(
    tmp_path: Path, charset: str, text: str
) -> None:
    codec = mime.CHARSET_SUPERSETS.get(charset, charset)
    raw = (f"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           f"Content-Type: text/plain; charset={charset}\r\n"
           f"Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(
        text.encode(codec)) + b"\r\n--B\r\nContent-Type: application/pdf\r\n"
    raw += b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(make_pdf(1))
    raw += b"\r\n--B--\r\n"
    spool = tmp_path / "m.eml"
    spool.write_bytes(raw)
    assert mime.extract(spool.read_bytes()).body_text == text


def test_fuzz_finding_a_charset_name_with_a_nul_byte_is_read_as_utf8(tmp_path: Path) -> None:
    """Found by bench/fuzz/fuzz_mail.py: `charset="utf-\\0"` made the codec lookup raise
    ValueError, which escaped `extract`."""
    crash = Path(__file__).parent / "data" / "fuzz-crash-charset-nul.eml"
    spool = tmp_path / "m.eml"
    spool.write_bytes(crash.read_bytes())
    assert [a.filename for a in mime.inspect(spool.read_bytes()).attachments] == [
        "Şubat İzmir.tif"]
    extraction = mime.extract(spool.read_bytes())
    assert isinstance(extraction.body_text, str)


def good_mail() -> bytes:
    """A mail that converts: text, HTML with a logo, a 2-page PDF and a JPEG."""
    msg = rich_mail()
    msg.get_payload().pop()  # type: ignore[union-attr]  # drop the unsupported c.bin
    return msg.as_bytes(policy=SMTP)


def mail_to_pdf(raw: bytes) -> int | str:
    """inspect → extract → build_pdf, as the service runs them: pages, or the refusal."""
    import tempfile

    from bridge import documents
    from bridge.errors import DocumentError

    try:
        mime.inspect(raw)
        with tempfile.TemporaryDirectory() as tmp:
            spool = Path(tmp) / "m.eml"
            spool.write_bytes(raw)
            extraction = mime.extract(spool.read_bytes())
            return documents.build_pdf(extraction.parts, Path(tmp) / "out.pdf")
    except (mime.Refusal, DocumentError) as refusal:
        assert str(refusal)
        return str(refusal)


def test_the_unmutated_mail_converts() -> None:
    assert mail_to_pdf(good_mail()) == 3


@settings(max_examples=80, deadline=None)
@given(st.builds(
    lambda raw, cut, junk: raw[:cut] + junk + raw[cut + len(junk):],
    st.just(good_mail()), st.integers(0, 30_000), st.binary(min_size=1, max_size=64)))
def test_the_whole_mail_to_document_path_ends_in_a_pdf_or_a_refusal(raw: bytes) -> None:
    """Mutated real mails: every input ends in a document or in a refusal with words; no
    other exception escapes."""
    outcome = mail_to_pdf(raw)
    assert isinstance(outcome, str) or outcome >= 1


def test_a_forwarded_mail_is_refused_with_advice() -> None:
    inner = EmailMessage()
    inner["Subject"] = "original"
    inner.set_content("see attachment")
    inner.add_attachment(make_pdf(1), maintype="application", subtype="pdf", filename="a.pdf")
    outer = EmailMessage()
    outer["From"] = "alice@example.com"
    outer.set_content("forwarding")
    outer.add_attachment(inner)
    with pytest.raises(mime.Refusal) as info:
        mime.inspect(outer.as_bytes(policy=SMTP))
    assert info.value.reply == ("554 5.6.1 the message contains a forwarded e-mail; forward "
                                "the documents themselves as attachments instead")


def test_two_thousand_nested_multiparts_are_refused_without_recursion_error() -> None:
    raw = b"From: a@example.com\r\n"
    for depth in range(2000):
        raw += f"Content-Type: multipart/mixed; boundary=b{depth}\r\n\r\n--b{depth}\r\n".encode()
    with pytest.raises(mime.Refusal) as info:
        mime.inspect(raw)
    assert "nested more than 10 levels" in info.value.words


@given(st.binary(max_size=300), st.lists(st.sampled_from([b"\r\n", b"\n", b" ", b"\t", b"=",
                                                           b"*", b"\xff", b"-"]), max_size=20))
def test_lenient_base64_decodes_as_the_general_rule_says_whatever_the_junk(
    data: bytes, junk: list[bytes],
) -> None:
    """The fast path (whitespace only) and the general one (any junk) agree."""
    encoded = base64.b64encode(data)
    for i, piece in enumerate(junk):
        at = (i * 7) % (len(encoded) + 1)
        encoded = encoded[:at] + piece + encoded[at:]
    compact = re.sub(rb"[^A-Za-z0-9+/]", b"", encoded)
    compact = compact[:-1] if len(compact) % 4 == 1 else compact
    try:
        expected = base64.b64decode(compact + b"=" * (-len(compact) % 4))
    except ValueError:
        expected = b""
    assert mime._b64decode(encoded) == expected


def test_the_header_class_cache_stays_small_whatever_header_names_mail_brings() -> None:
    """Kept per kind of header, not per name: a stream of mails with ever new header names
    (hostile, or just X- headers) cannot grow it in a long-lived process."""
    registry = headers.POLICY.header_factory
    assert isinstance(registry, headers.Registry)
    for n in range(300):
        msg = mime.parse(f"X-Trace-{n}: hop {n}\r\nSubject: =?utf-8?q?Rechnung_{n}?=\r\n"
                         f"From: a{n}@example.com\r\n\r\nbody\r\n".encode())
        assert msg[f"X-Trace-{n}"] == f"hop {n}"
        assert msg["Subject"] == f"Rechnung {n}"
        assert msg["From"].addresses[0].addr_spec == f"a{n}@example.com"
    assert len(registry._classes) <= len(set(registry.registry.values())) + 1
