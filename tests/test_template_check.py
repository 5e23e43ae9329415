"""Templates are rendered with sample data by `check-config` (and at start-up), so a broken
override fails there, naming its file, instead of failing every mail at run time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import jinja2
import jinja2.meta
import pytest

from bridge import mail
from bridge.config import MailSettings, Settings
from bridge.errors import ConfigError
from bridge.mail import Templates, builtin_templates_dir
from bridge.simulators import FaxMaxSimulator
from bridge.template_check import check_templates, samples
from tests.cli_runner import run_cli
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send

ADMIN = "admin@example.com"


def with_overrides(tmp_path: Path, **files: str) -> tuple[Templates, Settings]:
    """Templates and settings for a `mail.templates_dir` holding `files` (name: text)."""
    overrides = tmp_path / "templates"
    overrides.mkdir(exist_ok=True)
    for name, text in files.items():
        (overrides / name).write_text(text, encoding="utf-8")
    settings = replace(Settings(), mail=MailSettings(templates_dir=str(overrides)))
    return Templates(str(overrides)), settings


def refusal(tmp_path: Path, **files: str) -> str:
    templates, settings = with_overrides(tmp_path, **files)
    with pytest.raises(ConfigError) as info:
        check_templates(templates, settings)
    return str(info.value)


def variables_per_template() -> dict[str, set[str]]:
    """Every template the bridge renders, with the variables its sample contexts hold."""
    found: dict[str, set[str]] = {}
    for name, _, context in samples(Settings()):
        found.setdefault(name, set()).update(context)
    return found


@pytest.mark.parametrize("timezone", ["Europe/Istanbul", "Asia/Tokyo", "UTC"])
def test_the_shipped_templates_pass(timezone: str) -> None:
    check_templates(Templates(), replace(Settings(), mail=MailSettings(timezone=timezone)))


def test_every_shipped_template_is_checked_with_every_variable_it_uses() -> None:
    checked = variables_per_template()
    shipped = {path.name for path in builtin_templates_dir().glob("*.j2")}
    assert set(checked) == shipped
    env = jinja2.Environment()
    for name, variables in checked.items():
        source = (builtin_templates_dir() / name).read_text(encoding="utf-8")
        assert jinja2.meta.find_undeclared_variables(env.parse(source)) <= variables, name


def test_a_syntax_error_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, **{"report.txt.j2": "Your fax\n{% if state %}\nno end\n"})
    path = tmp_path / "templates" / "report.txt.j2"
    assert message.startswith(f"template {path}, line 3: ")
    assert "endif" in message


def test_an_undefined_variable_is_refused_naming_the_file_and_the_sample(tmp_path: Path) -> None:
    message = refusal(tmp_path, **{"fax.subject.j2": "Fax {{ job.nosuch.attr }}\n"})
    path = tmp_path / "templates" / "fax.subject.j2"
    assert message == (f"template {path}, line 1: 'job' is undefined "
                       "(rendering a sample received fax, every value set)")


def test_an_unknown_filter_is_refused_naming_the_file(tmp_path: Path) -> None:
    message = refusal(tmp_path, **{"alert.html.j2": "<p>{{ summary | shout }}</p>\n"})
    assert message == (f"template {tmp_path / 'templates' / 'alert.html.j2'}, line 1: "
                       "No filter named 'shout'.")


def test_an_error_only_on_the_empty_side_of_an_if_is_found(tmp_path: Path) -> None:
    message = refusal(tmp_path, **{
        "cover.html.j2": "{% if subject %}{{ subject }}{% else %}{{ subjet }}{% endif %}\n"})
    assert message.endswith("'subjet' is undefined (rendering a sample cover page, optional "
                            "values empty)")


def test_an_error_raised_while_rendering_names_the_included_file_it_is_in(
    tmp_path: Path,
) -> None:
    message = refusal(tmp_path, **{
        "report.html.j2": "<p>{{ number }}</p>\n{% include 'footer.html' %}\n",
        "footer.html": "<p>fax-bridge</p>\n<p>{{ pages // 0 }}</p>\n"})
    assert message.startswith(f"template {tmp_path / 'templates' / 'footer.html'}, line 2: "
                              "ZeroDivisionError: ")


def test_a_templates_dir_that_is_not_there_is_refused(tmp_path: Path) -> None:
    settings = replace(Settings(), mail=MailSettings(templates_dir=str(tmp_path / "nosuch")))
    with pytest.raises(ConfigError) as info:
        check_templates(Templates(settings.mail.templates_dir), settings)
    assert str(info.value) == f"mail.templates_dir: {str(tmp_path / 'nosuch')!r} is not a directory"


def test_a_template_missing_everywhere_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    monkeypatch.setattr(mail, "builtin_templates_dir", lambda: builtin)
    with pytest.raises(ConfigError) as info:
        check_templates(Templates(), Settings())
    assert str(info.value) == "template report.subject.j2: not found in the built-in templates"


def test_check_config_exits_1_naming_a_broken_override(tmp_path: Path) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    config_file = tmp_path / "fax-bridge.toml"
    config_file.write_text(f"[mail]\ntemplates_dir = {str(overrides)!r}\n", encoding="utf-8")
    (overrides / "fax.subject.j2").write_text("FAX受信: {{ sender }} ({{ station }})\n",
                                              encoding="utf-8")
    good = run_cli("check-config", "-c", str(config_file))
    assert good.returncode == 0, good.stderr
    for text, error in (("Fax {{ sender }\n", "line 1: unexpected '}'"),
                        ("Fax {{ job.nosuch.attr }}\n", "line 1: 'job' is undefined"),
                        ("Fax {{ sender | nosuch }}\n", "line 1: No filter named 'nosuch'")):
        (overrides / "report.subject.j2").write_text(text, encoding="utf-8")
        bad = run_cli("check-config", "-c", str(config_file))
        assert bad.returncode == 1
        assert bad.stdout == ""
        assert bad.stderr.startswith(
            f"fax-bridge: template {overrides / 'report.subject.j2'}, {error}"), bad.stderr


async def test_every_sample_variable_is_one_the_bridge_really_passes(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, tmp_path: Path,
) -> None:
    """Overrides that print every sample variable, with production's StrictUndefined: a sample
    variable the bridge does not pass would stop that mail (or the cover page) here."""
    overrides = tmp_path / "templates"
    overrides.mkdir()
    for name, variables in variables_per_template().items():
        text = " ".join(f"{v}=[{{{{ {v} }}}}]" for v in sorted(variables))
        (overrides / name).write_text(text + "\n", encoding="utf-8")
    bridge = await make_bridge(mail={"templates_dir": str(overrides)},
                               routing={"default": ("frontdesk@example.com",), "admin": ADMIN})
    sent = await smtp_send(bridge.smtp_port, fax_mail(("a.pdf", "application/pdf", make_pdf(1)),
                                                      body="Please fax this.\n"))
    assert sent.data == (250, "2.0.0 queued as fax jobs 1")
    [report] = await relay.wait_for(1)
    assert report.message["Subject"].startswith("attempts=[")
    assert "job_id=[1]" in report.message["Subject"]
    cover = faxmax.requests[0].data["params"]["cover_html"]
    assert "subject=[Invoice 42]" in cover and "text=[Please fax this.]" in cover
    await faxmax.push_incoming(tiff=make_tiff(1)[:60], cld="902121110000", cli="903125550000")
    mails = await relay.wait_for(3)
    subjects = {m.rcpt_tos[0]: m.message["Subject"] for m in mails[1:]}
    assert "sender=[903125550000]" in subjects["frontdesk@example.com"]
    assert "cause=[inbound-conversion-" in subjects[ADMIN]


async def test_the_service_does_not_start_with_a_broken_override(
    tmp_path: Path, make_bridge: MakeBridge,
) -> None:
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "alert.txt.j2").write_text("{{ summary | nosuch }}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"alert\.txt\.j2, line 1: No filter named 'nosuch'"):
        await make_bridge(mail={"templates_dir": str(overrides)})
