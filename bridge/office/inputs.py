"""What LibreOffice is given: documents checked, HTML made safe, each written to a file.

Runs in a sandboxed child (`bridge.workers.converter.prepare`), like all parsing of what senders
send. A password-protected document is refused here, naming it, before LibreOffice sees it:
Word, Excel and PowerPoint files by their encryption headers (`msoffcrypto`), OpenDocument
files by the encryption entries of their manifest. HTML is cleaned with `nh3` (the Rust
sanitiser `ammonia`): no script, no style sheet, no form, no frame, and no address it could
load but a `cid:` picture of the mail itself, which is put in the page as a `data:` address of
ours (`bridge.body`); relative addresses are denied, so a page cannot pull a file of the
server's into a fax.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msoffcrypto
import nh3

from bridge import replies
from bridge.errors import DocumentError
from bridge.files import write_atomic
from bridge.filetypes import Kind
from bridge.office.converter import How

OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
MANIFEST = "META-INF/manifest.xml"
MANIFEST_MAX = 1 << 20

# The tags and attributes of mail as clients write it, styles included: layout survives, and
# CSS properties that load something (`background-image`, `content`...) do not.
TAGS = nh3.ALLOWED_TAGS | {"font"}  # not `meta`: a page's own charset would undo our UTF-8
ATTRIBUTES = {"*": {"style", "align", "valign", "width", "height", "dir", "lang", "title",
                    "colspan", "rowspan", "border", "cellpadding", "cellspacing", "bgcolor",
                    "color", "face", "size"},
              "img": {"src", "alt"}}
STYLE_PROPERTIES = {
    "color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "vertical-align", "white-space",
    "direction", "width", "height", "max-width", "min-width", "margin", "margin-top",
    "margin-bottom", "margin-left", "margin-right", "padding", "padding-top",
    "padding-bottom", "padding-left", "padding-right", "border", "border-top",
    "border-bottom", "border-left", "border-right", "border-collapse", "border-color",
    "border-style", "border-width", "background-color", "display", "list-style-type"}
DROPPED_WITH_CONTENT = {"script", "style", "noscript", "template", "iframe", "object",
                        "embed", "svg", "math", "form", "select", "textarea", "head", "title"}
_CID = re.compile(r'src="cid:([^"]+)"', re.IGNORECASE)


@dataclass(frozen=True)
class Input:
    """A document written for LibreOffice, and the PDF it is to become."""

    name: str  # as the sender named it, for refusals
    source: str
    target: str
    how: How


def _ole2_protected(data: bytes) -> bool:
    try:
        return bool(msoffcrypto.OfficeFile(io.BytesIO(data)).is_encrypted())
    except Exception:  # not a file msoffcrypto knows (or a damaged one): LibreOffice decides
        return False


def _odf_protected(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo(MANIFEST)
            if info.file_size > MANIFEST_MAX:
                return False
            return b"encryption-data" in archive.read(info)
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def protected(data: bytes) -> bool:
    """Whether an Office document needs a password to be read."""
    if data.startswith(OLE2):
        return _ole2_protected(data)
    return data.startswith(b"PK\x03\x04") and _odf_protected(data)


def clean_html(html: str, pictures: Mapping[str, str]) -> str:
    """`html` with nothing that runs or loads; `cid:` pictures named in `pictures` (content id,
    lowercase → the address to show it by: a `data:` address of its bytes, since LibreOffice's
    profile blocks even a file beside the page) are shown, other ones are dropped."""
    clean = nh3.clean(html, tags=TAGS, clean_content_tags=DROPPED_WITH_CONTENT,
                      attributes=ATTRIBUTES, url_schemes={"cid"}, url_relative="deny",
                      filter_style_properties=STYLE_PROPERTIES, strip_comments=True,
                      link_rel=None)

    def local(match: re.Match[str]) -> str:
        found = pictures.get(match.group(1).lower())
        return f'src="{found}"' if found else 'src=""'

    body = _CID.sub(local, clean)
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>{body}</body></html>'


def write_input(name: str, data: bytes, kind: Kind, work: Path, index: int) -> Input:
    """One attachment as LibreOffice's input in `work`: refused when it is protected. Text and
    HTML come decoded to UTF-8 (`bridge.mime.extract`)."""
    if kind is Kind.OFFICE and protected(data):
        raise DocumentError(replies.PROTECTED_DOCUMENT, name=name)
    how: How = "html" if kind is Kind.HTML else "text" if kind is Kind.TEXT else "office"
    # No extension for Office files: LibreOffice tells Word from Excel by content alone.
    source = work / (f"part-{index}.{'html' if how == 'html' else 'txt'}" if how != "office"
                     else f"part-{index}")
    if kind is Kind.HTML:
        data = clean_html(data.decode("utf-8", "replace"), {}).encode()
    write_atomic(source, data)
    return Input(name=name, source=str(source), target=str(work / f"part-{index}.pdf"), how=how)
