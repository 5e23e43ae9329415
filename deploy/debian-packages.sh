#!/bin/sh
# Install the Debian packages fax-bridge uses at run time, beside its virtual environment
# (deploy/install.sh): LibreOffice, which turns Office documents, HTML and text into fax pages
# (documents.office), its Python bridge (python3-uno), fonts for Turkish and Japanese and
# metric-compatible stand-ins for Calibri, Cambria, Arial and Times (so a Word document keeps
# its line and page breaks), util-linux's `unshare`, which starts LibreOffice without
# network, and OCRmyPDF with Tesseract's Turkish, Japanese and English data, which give
# received faxes a text layer (documents.ocr). The Dockerfile and .ci/run run this; on a
# Debian host, run it as root once.
#   usage: deploy/debian-packages.sh [EXTRA-PACKAGE...]
set -eu
packages="libreoffice-writer libreoffice-calc libreoffice-impress python3-uno
  fonts-noto-cjk fonts-dejavu fonts-liberation2 fonts-crosextra-carlito
  fonts-crosextra-caladea util-linux
  ocrmypdf tesseract-ocr tesseract-ocr-eng tesseract-ocr-jpn tesseract-ocr-tur"
missing=""
for package in $packages "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $package"
done
[ -n "$missing" ] || exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
