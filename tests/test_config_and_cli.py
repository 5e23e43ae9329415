"""Configuration and the command line, run as a user runs them."""

from __future__ import annotations

import dataclasses
import email
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import typing
from email.policy import default as default_policy
from pathlib import Path

import pytest

from bridge import config
from bridge.config.settings import key_name
from bridge.errors import ConfigError
from bridge.passwords import verify_password
from tests.cli_runner import REPO, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fax-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """
data_dir = "/srv/fax"
[smtp]
max_recipients = 5
allowed_senders = ["@example.com"]
[faxmax]
token_file = "%s"
[routing.numbers]
"81368680000" = ["tokyo@example.com"]
""" % (tmp_path / "token"))
    (tmp_path / "token").write_text("file-token\n")
    settings = config.load(path, env={"FAX_BRIDGE_SMTP__MAX_RECIPIENTS": "7",
                                      "FAX_BRIDGE_FAXMAX__PAPER_SIZE": "letter"})
    assert settings.data_dir == "/srv/fax"
    assert settings.smtp.max_recipients == 7
    assert settings.smtp.allowed_senders == ("@example.com",)
    assert settings.faxmax.token == "file-token"
    assert settings.faxmax.paper_size == "letter"
    assert dict(settings.routing.numbers) == {"81368680000": ("tokyo@example.com",)}


@pytest.mark.parametrize(("toml", "env", "message"), [
    ("[smtp]\nlisten = 25\n", {}, "smtp.listen (from {path}): expected a string, got 25"),
    ("[smtp]\nlisen = '1:2'\n", {}, "smtp.lisen (from {path}): unknown setting; known ones:"),
    ("[faxmax]\nresolution = 'ultra'\n", {},
     "faxmax.resolution (from {path}): must be one of 'normal', 'fine', 'superfine', got 'ultra'"),
    ("[faxmax]\ncover_page = 'sometimes'\n", {},
     "faxmax.cover_page (from {path}): must be one of 'auto', 'always', 'never', got 'sometimes'"),
    ("", {"FAX_BRIDGE_MAIL__REPORT_TO_SENDER": "sometimes"},
     "mail.report_to_sender (from environment FAX_BRIDGE_MAIL__REPORT_TO_SENDER): must be one "
     "of 'always', 'failures', 'never', got 'sometimes'"),
    ("[mail]\nsmtp_security = 1\n", {},
     "mail.smtp_security (from {path}): expected a string, got 1"),
    ("", {"FAX_BRIDGE_SMTP__MAX_RECIPIENTS": "lots"},
     "smtp.max_recipients (from environment FAX_BRIDGE_SMTP__MAX_RECIPIENTS): expected a whole "
     "number, got 'lots'"),
    ("[faxmax]\nenabled = true\ntoken = 'x'\n", {},
     "http.push_token: required when faxmax.enabled, at least 16 characters"),
    ("[faxmax]\nurl = 'http://faxmax.example/api'\n", {},
     "faxmax.url: provider URLs must use https://"),
    ("[mail]\ntimezone = 'Mars/Olympus'\n", {}, "mail.timezone: unknown time zone"),
    ("[http]\nmetrics_allow_from = ['127.0.0.1/33']\n", {},
     "http.metrics_allow_from: '127.0.0.1/33' does not appear to be an IPv4 or IPv6 network"),
    ("[mail]\nsmtp_final_dot_timeout = 0\n", {},
     "mail.smtp_final_dot_timeout: must be greater than 0, got 0"),
    ("[numbers]\ndeny = ['09x']\n", {}, "numbers.deny: '09x' is not a number prefix"),
    ("[documents]\nocr_timeout = 0\n", {}, "documents.ocr_timeout: must be greater than 0, got 0"),
    ("[byosoku]\nocr_languages = 'japanese'\n", {},
     "byosoku.ocr_languages: expected Tesseract language codes joined by +, such as "
     "\"tur+eng\", got 'japanese'"),
    ("[byosoku]\nenabled = true\nlog_url = 'https://a.example/log'\n"
     "pdf_url = 'https://a.example/pdf'\npoll_interval = 10\n", {},
     "byosoku.poll_interval: the provider allows one call per 60 seconds, got 10"),
    ("[[smtp.users]]\nname = 'bob'\npassword_hash = 'scrypt$1$1$1$x'\n", {},
     "smtp.users[0] (bob): set addresses, the addresses this user sends as (MAIL FROM and the "
     "From: printed on the cover page), or use an address as the name"),
    ("[smtp\n", {}, "{path}: not valid TOML"),
    ("", {"FAX_BRIDGE_SMTP__LISTN": "0.0.0.0:25"},
     "environment FAX_BRIDGE_SMTP__LISTN: [smtp] has no such setting; known ones: "
     "allowed_senders, auth_lockout, auth_max_failures, auth_required, domain,"),
    ("", {"FAX_BRIDGE_DATADIR": "/srv"},
     "environment FAX_BRIDGE_DATADIR: no such setting; top-level ones are FAX_BRIDGE_DATA_DIR,"),
    ("", {"FAX_BRIDGE_FAXMAKS__TOKEN": "x"},
     "environment FAX_BRIDGE_FAXMAKS__TOKEN: there is no [faxmaks] section; known: smtp,"),
])
def test_errors_name_the_key_and_where_it_came_from(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        config.load(path, env=env)
    assert message.format(path=path) in str(info.value)


def choice_settings() -> list[tuple[str, str, tuple[str, ...]]]:
    """(section, key, allowed values) of every setting typed as a `Literal`."""
    found = []
    sections = typing.get_type_hints(config.Settings)
    for section in dataclasses.fields(config.Settings):
        cls = sections[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is typing.Literal:
                found.append((section.name, name.rstrip("_"), typing.get_args(hint)))
    return found


def test_every_choice_is_a_literal_refused_at_load_naming_the_key_and_the_choices(
    tmp_path: Path,
) -> None:
    choices = choice_settings()
    assert {f"{section}.{key}" for section, key, _ in choices} == {
        "faxmax.paper_size", "faxmax.resolution", "faxmax.cover_page", "byosoku.pdf_method",
        "byosoku.initial_sync", "mail.transport", "mail.smtp_security", "mail.report_to_sender",
        "mail.report_copy",
        "documents.office", "documents.body", "documents.ocr"}
    for section, key, allowed in choices:
        path = write(tmp_path, f"[{section}]\n{key} = 'sometimes'\n")
        with pytest.raises(ConfigError) as info:
            config.load(path, env={})
        assert str(info.value) == (f"{section}.{key} (from {path}): must be one of "
                                   f"{', '.join(repr(c) for c in allowed)}, got 'sometimes'")
        for value in allowed:  # and each allowed value is taken as it is
            write(tmp_path, f"[{section}]\n{key} = '{value}'\n"
                            + ("smtp_host = 'relay.example'\n" if key == "transport" else ""))
            loaded = config.load(path, env={})
            assert getattr(getattr(loaded, section), key) == value


def test_check_config_masks_secrets_and_exits_1_on_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[faxmax]\nenabled = true\ntoken = 'super-secret-token'\n"
                           "[http]\npush_token = 'another-secret-0123456789'\n")
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "super-secret" not in result.stdout and "another-secret" not in result.stdout
    assert 'token = "********"' in result.stdout
    assert 'push_token = "********"' in result.stdout
    bad = run_cli("check-config", "-c", str(write(tmp_path, "[smtp]\nmax_recipients = 'x'\n")))
    assert bad.returncode == 1
    assert bad.stderr.startswith("fax-bridge: smtp.max_recipients (from ")


def test_serve_without_a_provider_exits_1_and_says_what_to_configure(tmp_path: Path) -> None:
    result = run_cli("serve", cwd=tmp_path)
    assert result.returncode == 1
    assert "no provider is enabled" in result.stderr
    assert "fax-bridge demo" in result.stderr


def test_hash_password_reads_stdin_and_the_hash_verifies() -> None:
    result = run_cli("hash-password", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert encoded.startswith("scrypt$")
    assert verify_password(b"correct horse", encoded)
    assert not verify_password(b"wrong", encoded)


def test_the_annotated_example_configuration_is_exactly_the_defaults() -> None:
    settings = config.load(REPO / "deploy" / "fax-bridge.example.toml", env={})
    assert settings == config.Settings(source=settings.source)


def test_the_annotated_example_configuration_names_every_key() -> None:
    """Equal to the defaults says nothing of a key it leaves out: each one must be there."""
    example = tomllib.loads((REPO / "deploy" / "fax-bridge.example.toml").read_text())
    missing = []
    for section in dataclasses.fields(config.Settings):
        value = getattr(config.Settings(), section.name)
        if not dataclasses.is_dataclass(value):
            continue
        written = example.get(section.name, {})
        missing += [f"{section.name}.{key_name(f)}" for f in dataclasses.fields(value)
                    if key_name(f) not in written and f.name != "users"]
    assert missing == []


def quick_start() -> list[str]:
    """The commands of the README's quick start, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL)]


def test_the_quick_start_is_two_commands_the_install_ci_tests_and_its_test_command() -> None:
    install_and_demo, run_tests = quick_start()[:2]
    assert install_and_demo == "deploy/install.sh .venv dev && .venv/bin/fax-bridge demo"
    assert run_tests == ".venv/bin/pytest"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "deploy/install.sh .venv dev" in ci  # the same install, then the same tests
    assert ci[-1].startswith(run_tests + " ")


def test_demo_runs_and_a_test_fax_ends_as_a_delivery_report_in_its_maildir(
    tmp_path: Path,
) -> None:
    """The quick start's demo, as its command runs it: the installed `fax-bridge` (only on
    ephemeral ports here, so tests may run beside a demo)."""
    demo_command = quick_start()[0].rsplit("&& ", 1)[1].split()
    assert demo_command == [".venv/bin/fax-bridge", "demo"]
    installed = Path(sys.executable).parent / "fax-bridge"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAX_BRIDGE_")}
    demo = subprocess.Popen(
        [str(installed), "demo", "--smtp-port", "0", "--http-port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        command = ""
        for line in demo.stdout:
            if "Send a test fax:" in line:
                command = line.split(":", 1)[1].strip()
                break
        assert command.startswith(f"{installed} send-test --smtp 127.0.0.1:")
        sent = subprocess.run(command.split(), capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60, check=False)  # exactly as printed
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.strip() == "250 2.0.0 queued as fax jobs 1"
        word = subprocess.run([*command.split(), "--docx"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60, check=False)
        assert word.stdout.strip() == "250 2.0.0 queued as fax jobs 2", word.stderr
        new = tmp_path / "demo-data" / "maildir" / "new"
        deadline = time.monotonic() + 60
        while not (new.is_dir() and len(list(new.iterdir())) >= 4):
            assert time.monotonic() < deadline, "the demo Maildir did not fill"
            assert demo.poll() is None, demo.stderr.read() if demo.stderr else ""
            time.sleep(0.1)
        subjects = {email.message_from_bytes(path.read_bytes(), policy=default_policy)["Subject"]
                    for path in new.iterdir()}
        assert subjects == {"Fax delivered to (0212) 222 25 25: fax-bridge test fax",
                            "Fax delivered to (0212) 222 25 25: fax-bridge test fax (Word)",
                            "Fax from (0312) 555 00 00 to (0212) 111 00 00 (1 page)",
                            "Fax from 03-1234-5678 to 03-6868-0000 (1 page)"}
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
        if demo.stdout:
            demo.stdout.close()
        if demo.stderr:
            demo.stderr.close()
