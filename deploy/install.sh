#!/bin/sh
# Install fax-bridge from this source tree into a virtual environment. These are the exact steps
# the Dockerfile runs and `.ci/run` runs before the tests, so what ships is what was tested.
#   usage: deploy/install.sh VENV [EXTRAS]      e.g. deploy/install.sh /opt/fax-bridge
# The Debian packages it runs with (LibreOffice, fonts for Turkish and Japanese, unshare) are
# deploy/debian-packages.sh's, installed as root before this.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 VENV [EXTRAS]" >&2; exit 2; }
src=$(cd "$(dirname "$0")/.." && pwd)
venv=$(realpath -m "$1")
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --no-cache-dir --upgrade pip
"$venv/bin/python" -m pip install --quiet --no-cache-dir "$src${2:+[$2]}"
# The installed package must carry its email templates: checked from outside the source tree.
cd / && "$venv/bin/python" -c "from bridge.mail import builtin_templates_dir as d; \
assert (d() / 'report.txt.j2').is_file() and 'site-packages' in str(d()), d()"
