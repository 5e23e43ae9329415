"""The files an operator installs from `deploy/`: the systemd unit passes systemd's own check and
has the hardening the README promises; the container image installs with the script `.ci/run`
tests, runs as a user, keeps its data on a volume and checks `/healthz`; its environment is
valid configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import config
from bridge.workers.sender import RECORD_GRACE

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def directives(text: str) -> dict[str, str]:
    """KEY=value lines of a unit file (comments and sections dropped; the last one wins)."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs it)")
    text = (DEPLOY / "fax-bridge.service").read_text()
    # verify insists that ExecStart exists: point it at this checkout's installed command.
    installed = Path(sys.executable).parent / "fax-bridge"
    unit = tmp_path / "fax-bridge.service"
    unit.write_text(text.replace("/opt/fax-bridge/bin/fax-bridge", str(installed)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""  # no unknown or misplaced directive


def test_the_systemd_unit_lets_libreoffice_start_without_network_and_nothing_more() -> None:
    """`unshare --net` in a user namespace (bridge.office.tools): the unit must allow exactly
    those two; `RestrictNamespaces=true` made every Office document a refusal."""
    unit = directives((DEPLOY / "fax-bridge.service").read_text())
    assert set(unit["RestrictNamespaces"].split()) == {"user", "net"}


def test_the_systemd_unit_runs_it_as_its_own_user_confined_and_stops_it_gracefully() -> None:
    text = (DEPLOY / "fax-bridge.service").read_text()
    unit = directives(text)
    assert unit["User"] == "fax-bridge" and unit["ExecStart"].endswith("fax-bridge serve")
    assert unit["StateDirectory"] == "fax-bridge"
    assert "\nEnvironment=FAX_BRIDGE_DATA_DIR=/var/lib/fax-bridge\n" in text
    assert unit["ProtectSystem"] == "strict" and unit["NoNewPrivileges"] == "true"
    assert unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM" and unit["KillMode"] == "mixed"
    # systemd must give the service's own shutdown deadlines time to run out first: the one
    # of the rest of the work, and the longer one of a FaxMAX call in flight.
    defaults = config.Settings()
    assert float(unit["TimeoutStopSec"]) > max(defaults.shutdown_timeout,
                                               defaults.faxmax.timeout + RECORD_GRACE)


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_installs_with_the_scripts_that_ci_runs() -> None:
    """The Debian packages (LibreOffice and its fonts) and the service, as CI installs them."""
    runs = re.findall(r"^RUN (.*?)(?<!\\)$", dockerfile(), re.MULTILINE | re.DOTALL)
    assert " ".join(runs[0].replace("\\\n", " ").split()) == (
        "/src/deploy/debian-packages.sh && rm -rf /var/lib/apt/lists/* "
        "&& /src/deploy/install.sh /opt/fax-bridge && rm -rf /src")
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^deploy/install\.sh \.venv dev$", ci, re.MULTILINE)
    assert re.search(r"^deploy/debian-packages\.sh postfix swaks systemd chromium chromium-driver$",
                     ci, re.MULTILINE)


def test_the_debian_packages_carry_libreoffice_fonts_for_turkish_and_japanese_and_unshare(
) -> None:
    script = (DEPLOY / "debian-packages.sh").read_text()
    listed = re.search(r'^packages="(.*?)"', script, re.MULTILINE | re.DOTALL)
    assert listed is not None
    assert {"libreoffice-writer", "libreoffice-calc", "libreoffice-impress", "python3-uno",
            "fonts-noto-cjk", "fonts-dejavu", "util-linux"} <= set(listed[1].split())


def test_the_image_runs_unprivileged_with_a_data_volume_and_a_health_check() -> None:
    text = dockerfile()
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.MULTILINE)
    assert re.search(r"^USER fax-bridge$", text, re.MULTILINE)
    assert re.search(r"^VOLUME /var/lib/fax-bridge$", text, re.MULTILINE)
    assert re.search(r'^    CMD \["fax-bridge", "healthcheck"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["fax-bridge", "serve"\]$', text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)


def test_the_image_is_run_with_a_stop_timeout_past_the_services_own() -> None:
    defaults = config.Settings()
    [seconds] = set(re.findall(r"--stop-timeout (\d+)", dockerfile()))
    assert int(seconds) > max(defaults.shutdown_timeout, defaults.faxmax.timeout + RECORD_GRACE)


def test_the_images_environment_is_valid_configuration() -> None:
    block = re.search(r"^ENV (.*?)(?=^\S)", dockerfile(), re.MULTILINE | re.DOTALL)
    assert block is not None
    env = dict(re.findall(r"(FAX_BRIDGE_\w+)=(\S+)", block[1]))
    settings = config.load(None, env=env)
    assert settings.data_dir == "/var/lib/fax-bridge"
    assert (settings.smtp.listen, settings.http.listen) == ("0.0.0.0:2525", "0.0.0.0:8025")
    assert env["FAX_BRIDGE_LOG_FORMAT"] == "json"
