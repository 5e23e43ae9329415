"""Coverage-guided fuzzing of the whole MIME → document path with atheris (not run in CI).

Every input must end in an inspection plus a PDF, or in a refusal (`Refusal`, `DocumentError`);
any other exception is a crash that atheris reports with the input that caused it.

    .venv/bin/pip install atheris
    .venv/bin/python bench/fuzz/fuzz_mail.py bench/fuzz/corpus -max_total_time=600 \\
        -rss_limit_mb=2048 -max_len=65536

`--make-corpus DIR` writes seed mails (PDF, PNG, JPEG, TIFF attachments; Japanese and Turkish
names; nested parts) to start from.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from bridge import documents, mime
    from bridge.errors import DocumentError


def one_input(data: bytes) -> None:
    try:
        mime.inspect(data)
    except mime.Refusal:
        return
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "mail.eml"
        spool.write_bytes(data)
        try:
            extraction = mime.extract(spool.read_bytes())
            documents.build_pdf(extraction.parts, Path(tmp) / "out.pdf",
                                documents.Limits(max_pages=20, max_image_pixels=4_000_000))
        except (mime.Refusal, DocumentError):
            return


def make_corpus(directory: Path) -> None:
    from email.message import EmailMessage
    from email.policy import SMTP

    from bridge.samples import sample_fax_tiff, sample_pdf

    directory.mkdir(parents=True, exist_ok=True)
    seeds = []
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["Subject"] = "=?iso-2022-jp?b?GyRCOCtAUT1xGyhC?="
    msg.set_content("本文です", charset="iso-2022-jp")
    msg.add_attachment(sample_pdf(), maintype="application", subtype="pdf",
                       filename="見積書.pdf")
    seeds.append(msg)
    msg = EmailMessage()
    msg["From"] = "ali@example.com.tr"
    msg.set_content("Merhaba")
    msg.add_alternative("<p>Merhaba <img src='cid:logo@x'></p>", subtype="html")
    msg.add_attachment(sample_fax_tiff(), maintype="image", subtype="tiff",
                       filename="Şubat İzmir.tif")
    seeds.append(msg)
    for n, seed in enumerate(seeds):
        (directory / f"seed-{n}.eml").write_bytes(seed.as_bytes(policy=SMTP))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(Path(sys.argv[2]))
        raise SystemExit(0)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
