"""Office documents as people send them, made here with the libraries that write them: Word
(python-docx), Excel (openpyxl), OpenDocument text (odfpy) and RTF, each with Turkish and
Japanese words, so a test can find them in the PDF that reaches FaxMAX (`texts`)."""

from __future__ import annotations

import io
import zipfile

import docx
import openpyxl
import pypdf
from docx.enum.text import WD_BREAK
from msoffcrypto.format.ooxml import OOXMLFile
from odf.opendocument import OpenDocumentText
from odf.text import P

TURKISH = "Teklif Şubat ığüşöç İstanbul"
JAPANESE = "見積書 東京都 御中"


def make_docx(pages: int = 1, words: str = f"{TURKISH} {JAPANESE}",
              linked_image: str = "") -> bytes:
    """`pages` pages, each starting with "Page N" and `words`; `linked_image`: the address of
    a picture the document links to rather than carries (Insert > Picture > Link to file)."""
    document = docx.Document()
    for page in range(1, pages + 1):
        paragraph = document.add_paragraph(f"Page {page}: {words}")
        if page < pages:
            paragraph.add_run().add_break(WD_BREAK.PAGE)
    out = io.BytesIO()
    document.save(out)
    data = out.getvalue()
    return _with_linked_image(data, linked_image) if linked_image else data


def _with_linked_image(data: bytes, url: str) -> bytes:
    """A DOCX whose one picture is an external link (`TargetMode="External"`), as Word writes
    it for a linked picture."""

    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "word/_rels/document.xml.rels":
                content = content.replace(b"</Relationships>", (
                    '<Relationship Id="rIdLinked" Type="http://schemas.openxmlformats.org/'
                    f'officeDocument/2006/relationships/image" Target="{url}" '
                    'TargetMode="External"/></Relationships>').encode())
            if item.filename == "word/document.xml":
                content = content.replace(b"</w:body>", _LINKED_PICTURE + b"</w:body>", 1)
            target.writestr(item, content)
    return out.getvalue()


_LINKED_PICTURE = (
    b'<w:p><w:r><w:drawing><wp:inline xmlns:wp="http://schemas.openxmlformats.org/'
    b'drawingml/2006/wordprocessingDrawing"><wp:extent cx="914400" cy="914400"/>'
    b'<wp:docPr id="99" name="linked"/><a:graphic xmlns:a="http://schemas.openxmlformats.org/'
    b'drawingml/2006/main"><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/'
    b'2006/picture"><pic:pic xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/'
    b'picture"><pic:nvPicPr><pic:cNvPr id="99" name="linked"/><pic:cNvPicPr/></pic:nvPicPr>'
    b'<pic:blipFill><a:blip xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships" r:link="rIdLinked"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>'
    b'<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="914400" cy="914400"/></a:xfrm>'
    b'<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></pic:spPr></pic:pic></a:graphicData>'
    b'</a:graphic></wp:inline></w:drawing></w:r></w:p>')


def make_xlsx(sheets: int = 1, rows: int = 30, columns: int = 8,
              words: str = f"{TURKISH} {JAPANESE}") -> bytes:
    """`sheets` sheets of `rows` x `columns` cells; cell A1 of each holds `words`, in a column
    wide enough to show them (a spreadsheet clips text at a filled neighbour)."""
    book = openpyxl.Workbook()
    for index in range(sheets):
        sheet = book.active if index == 0 else book.create_sheet()
        assert sheet is not None
        sheet.title = f"Sayfa {index + 1}"
        for row in range(1, rows + 1):
            for column in range(1, columns + 1):
                sheet.cell(row, column, f"R{row}C{column}")
        sheet.cell(1, 1, words)
        sheet.column_dimensions["A"].width = 4 * len(words)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_odt(words: str = f"{TURKISH} {JAPANESE}") -> bytes:
    document = OpenDocumentText()
    document.text.addElement(P(text=words))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def make_rtf(words: str = f"{TURKISH} {JAPANESE}") -> bytes:
    """RTF writes every character outside ASCII as \\uN? (N signed 16-bit)."""
    def escaped(char: str) -> str:
        if char.isascii():
            return char
        code = ord(char)
        return f"\\u{code - 65536 if code > 32767 else code}?"
    return ("{\\rtf1\\ansi\\deff0 " + "".join(escaped(c) for c in words) + "\\par}").encode()


def protected(document: bytes, password: str = "gizli") -> bytes:
    """An Office document encrypted as Word does with File > Protect > Encrypt with password."""
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(document)).encrypt(password, out)
    return out.getvalue()


def texts(document: bytes) -> list[str]:
    """The text of each page, as pypdf reads it, spaces evened out."""
    reader = pypdf.PdfReader(io.BytesIO(document), strict=True)
    return [" ".join(page.extract_text().split()) for page in reader.pages]


def make_odt_with_macro(marker: str, words: str = TURKISH) -> bytes:
    """An OpenDocument text whose Basic macro runs when it is opened (the `dom:load` event) and
    writes `marker`: what a macro virus would do, harmlessly."""
    content = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0"
 xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ooo="http://openoffice.org/2004/office"
 xmlns:dom="http://www.w3.org/2001/xml-events"
 office:version="1.2">
<office:scripts><office:event-listeners>
<script:event-listener script:language="ooo:script" script:event-name="dom:load"
 xlink:type="simple"
 xlink:href="vnd.sun.star.script:Standard.Module1.Main?language=Basic&amp;location=document"/>
</office:event-listeners></office:scripts>
<office:body><office:text><text:p>{words}</text:p></office:text></office:body>
</office:document-content>"""
    module = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE script:module PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "module.dtd">
<script:module xmlns:script="http://openoffice.org/2000/script" script:name="Module1"
 script:language="StarBasic">Sub Main
  Open &quot;{marker}&quot; For Output As #1
  Print #1, &quot;the macro ran&quot;
  Close #1
End Sub
</script:module>"""
    library = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE library:library PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "library.dtd">
<library:library xmlns:library="http://openoffice.org/2000/library" library:name="Standard"
 library:readonly="false" library:passwordprotected="false">
 <library:element library:name="Module1"/></library:library>"""
    libraries = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE library:libraries PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "libraries.dtd">
<library:libraries xmlns:library="http://openoffice.org/2000/library"
 xmlns:xlink="http://www.w3.org/1999/xlink">
 <library:library library:name="Standard" library:link="false"/></library:libraries>"""
    manifest = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"
 manifest:version="1.2">
 <manifest:file-entry manifest:full-path="/" manifest:version="1.2"
  manifest:media-type="application/vnd.oasis.opendocument.text"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/script-lc.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/Standard/script-lb.xml"
  manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="Basic/Standard/Module1.xml"
  manifest:media-type="text/xml"/>
</manifest:manifest>"""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        for name, text in (("content.xml", content), ("Basic/script-lc.xml", libraries),
                           ("Basic/Standard/script-lb.xml", library),
                           ("Basic/Standard/Module1.xml", module),
                           ("META-INF/manifest.xml", manifest)):
            archive.writestr(name, text, zipfile.ZIP_DEFLATED)
    return out.getvalue()
