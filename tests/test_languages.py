"""Every email and the cover page in English, Turkish and Japanese (issue 22): the language
chosen by the sender's user, the sender's domain, the receiving number, or `mail.language`,
with English where a translation is missing; numbers as people of the reader's country write
them. Emails are read as a mail reader sees them, at the relay sink of the real service.

The test plan: docs/RELIABILITY.md R1.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.language import format_time, written_number
from bridge.mail import Templates
from bridge.simulators import Fault, FaxMaxSimulator
from bridge.store import JobState
from bridge.template_check import samples
from tests.docfactory import make_pdf, make_tiff
from tests.mails import fax_mail
from tests.relay import RelaySink
from tests.rigs import ADMIN
from tests.settings import MakeBridge
from tests.smtp_client import smtp_send
from tests.waits import wait_for_state

NUMBER = "902122222525"
PDF = ("a.pdf", "application/pdf", make_pdf(1))
TR_DATE = re.compile(r"\b\d{1,2} (Ocak|Şubat|Mart|Nisan|Mayıs|Haziran|Temmuz|Ağustos|Eylül|"
                     r"Ekim|Kasım|Aralık) 20\d\d \d\d:\d\d\b")
JA_DATE = re.compile(r"20\d\d年\d{1,2}月\d{1,2}日 \d\d:\d\d")
EN_DATE = re.compile(r"20\d\d-\d\d-\d\d \d\d:\d\d \+03")
LANGUAGE_OF_ALICE = {"sender_languages": {"@example.com": "tr"}}


def text_of(msg: EmailMessage) -> str:
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return str(text).replace("\r\n", "\n")


def html_of(msg: EmailMessage) -> str:
    return str(msg.get_body(("html",)).get_content())  # type: ignore[union-attr]


async def report_of(make_bridge: MakeBridge, relay: RelaySink, state: JobState,
                    **sections: dict[str, Any]) -> EmailMessage:
    bridge = await make_bridge(**sections)
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await wait_for_state(bridge, 1, state)
    [report] = await relay.wait_for(1)
    return report.message


@pytest.mark.parametrize(("language", "subject", "phrase", "date"), [
    ("en", "Fax delivered to (0212) 222 25 25: Invoice 42",
     "Your fax to (0212) 222 25 25 was delivered.", EN_DATE),
    ("tr", "Faksınız iletildi: (0212) 222 25 25 – Invoice 42",
     "(0212) 222 25 25 numarasına gönderdiğiniz faks iletildi.", TR_DATE),
    ("ja", "【FAX送信完了】(0212) 222 25 25「Invoice 42」",
     "(0212) 222 25 25 宛てのFAXの送信が完了しました。", JA_DATE),
])
async def test_a_delivered_report_in_each_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, language: str,
    subject: str, phrase: str, date: re.Pattern[str],
) -> None:
    faxmax.statuses[NUMBER] = ["SUCCESS"]
    msg = await report_of(make_bridge, relay, JobState.DELIVERED,
                          mail={"language": language})
    assert msg["Subject"] == subject
    text = text_of(msg)
    assert phrase in text
    assert date.search(text), text
    assert date.search(html_of(msg))


@pytest.mark.parametrize(("language", "subject", "phrase"), [
    ("en", "Fax NOT delivered to (0212) 222 25 25: Invoice 42",
     "Reason: Remote machine refused the call"),
    ("tr", "Faksınız iletilemedi: (0212) 222 25 25 – Invoice 42",
     "Nedeni: FaxMAX'ın mesajı: “Remote machine refused the call”"),  # as it came, labelled
    ("ja", "【FAX送信失敗】(0212) 222 25 25「Invoice 42」",
     "理由：FaxMAXからのメッセージ「Remote machine refused the call」"),
])
async def test_a_failed_report_in_each_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, language: str,
    subject: str, phrase: str,
) -> None:
    faxmax.statuses[NUMBER] = ["FAILED"]
    faxmax.result_messages[NUMBER] = "Remote machine refused the call"
    msg = await report_of(make_bridge, relay, JobState.FAILED, mail={"language": language})
    assert msg["Subject"] == subject
    assert phrase in text_of(msg)


@pytest.mark.parametrize(("language", "subject", "phrase"), [
    ("en", "Fax to (0212) 222 25 25: outcome unknown: Invoice 42", "cannot tell whether"),
    ("tr", "Faksınızın durumu belirsiz: (0212) 222 25 25 – Invoice 42",
     "faksın alıcıya ulaşıp ulaşmadığı bilinmiyor"),
    ("ja", "【FAX送信結果不明】(0212) 222 25 25「Invoice 42」", "届いたかどうか確認できません"),
])
async def test_an_unknown_outcome_report_in_each_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, language: str,
    subject: str, phrase: str,
) -> None:
    faxmax.faults.append(Fault.malformed_json(took_effect=True))
    msg = await report_of(make_bridge, relay, JobState.UNKNOWN, mail={"language": language},
                          faxmax={"match_window": 0})  # no push settles it meanwhile
    assert msg["Subject"] == subject
    assert phrase in text_of(msg)


@pytest.mark.parametrize(("language", "subject", "why"), [
    ("en", "Fax to (0212) 222 25 25 cancelled: Invoice 42",
     "Why: an operator cancelled it (fax-bridge cancel)"),
    ("tr", "Faksınız iptal edildi: (0212) 222 25 25 – Invoice 42",
     "Nedeni: Yönetici tarafından iptal edildi (fax-bridge cancel)."),
    ("ja", "【FAX送信取消】(0212) 222 25 25「Invoice 42」",
     "理由：管理者が取り消しました（fax-bridge cancel）。"),
])
async def test_a_cancelled_report_in_each_language_with_the_bridges_own_reason_translated(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, language: str,
    subject: str, why: str,
) -> None:
    faxmax.faults.append(Fault.http(503))  # the job waits for its retry: queued
    bridge = await make_bridge(mail={"language": language},
                               faxmax={"retry_base": 60.0, "retry_cap": 60.0})
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await faxmax.wait_for_requests(1)
    await wait_for_state(bridge, 1, JobState.QUEUED)
    assert await bridge.store.jobs.cancel(1, bridge.clock.now()) is None
    bridge.pipeline.reporter.wake()  # type: ignore[union-attr]
    [report] = await relay.wait_for(1)
    assert report.message["Subject"] == subject
    assert why in text_of(report.message)


async def test_the_language_comes_from_the_user_then_the_sender_domain_then_mail_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    faxmax.statuses[NUMBER] = ["SUCCESS"]
    faxmax.statuses["903125550000"] = ["SUCCESS"]
    faxmax.statuses["904125550000"] = ["SUCCESS"]
    bridge = await make_bridge(
        mail={"language": "en", "sender_languages": {"@example.co.jp": "ja",
                                                     "@branch.example.co.jp": "tr"}})
    await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="taro@example.co.jp"),
                    mail_from="taro@example.co.jp")
    await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="ayse@branch.example.co.jp",
                                               to="03125550000@fax.local"),
                    mail_from="ayse@branch.example.co.jp", rcpts=["03125550000@fax.local"])
    await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="bob@example.org",
                                               to="04125550000@fax.local"),
                    mail_from="bob@example.org", rcpts=["04125550000@fax.local"])
    reports = await relay.wait_for(3)
    subjects = {r.rcpt_tos[0]: r.message["Subject"] for r in reports}
    assert subjects == {
        "taro@example.co.jp": "【FAX送信完了】(0212) 222 25 25「Invoice 42」",
        "ayse@branch.example.co.jp": "Faksınız iletildi: (0312) 555 00 00 – Invoice 42",
        "bob@example.org": "Fax delivered to (0412) 555 00 00: Invoice 42"}


def test_a_users_language_comes_before_the_sender_domains() -> None:
    from dataclasses import replace

    from bridge.config import MailSettings, Settings, SmtpSettings, SmtpUser
    from bridge.language import for_sender

    settings = replace(Settings(), smtp=SmtpSettings(users=(
        SmtpUser(name="alice@example.com", password_hash="x", language="ja"),)),
        mail=MailSettings(language="en", sender_languages={"@example.com": "tr"}))
    assert for_sender(settings, "Alice@Example.com") == "ja"
    assert for_sender(settings, "bob@example.com") == "tr"
    assert for_sender(settings, "carol@example.org") == "en"


async def test_the_cover_page_is_in_the_senders_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    bridge = await make_bridge(mail=LANGUAGE_OF_ALICE)
    await smtp_send(bridge.smtp_port, fax_mail(PDF, body="Faturayı ekte bulabilirsiniz.\n"))
    await faxmax.wait_for_requests(1)
    cover = faxmax.requests[0].data["params"]["cover_html"]
    assert "<h1>Faks</h1>" in cover and "<td>Gönderen:</td>" in cover
    assert "Faturayı ekte bulabilirsiniz." in cover


ROUTING: dict[str, Any] = {
    "numbers": {"902121110000": ("istanbul@example.com",), "902121110001": ("tokyo@example.com",)},
    "languages": {"02121110000": "tr", "902121110001": "ja"},  # either form of the number
    "admin": ADMIN}


@pytest.mark.parametrize(("cld", "cli", "to", "subject", "phrase", "date"), [
    ("902121110000", "903125550000", "istanbul@example.com",
     "Gelen faks: (0312) 555 00 00 → (0212) 111 00 00 (2 sayfa)", "Bir faks aldınız.", TR_DATE),
    ("902121110001", "81368680000", "tokyo@example.com",
     "【FAX受信】+81 3-6868-0000 → (0212) 111 00 01（2枚）", "FAXを受信しました。", JA_DATE),
    ("902121110001", "", "tokyo@example.com",
     "【FAX受信】非通知 → (0212) 111 00 01（2枚）", "送信元:     非通知", JA_DATE),
])
async def test_a_received_fax_is_mailed_in_its_numbers_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, cld: str, cli: str,
    to: str, subject: str, phrase: str, date: re.Pattern[str],
) -> None:
    await make_bridge(routing=ROUTING)
    await faxmax.push_incoming(tiff=make_tiff(2), cld=cld, cli=cli)
    [mail] = await relay.wait_for(1)
    assert mail.rcpt_tos == [to]
    assert mail.message["Subject"] == subject
    text = text_of(mail.message)
    assert phrase in text
    assert date.search(text), text


async def test_a_received_fax_on_an_unlisted_number_is_in_mail_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    await make_bridge(routing={"default": ("frontdesk@example.com",)})
    await faxmax.push_incoming(tiff=make_tiff(1), cld="902121110000", cli="903125550000")
    [mail] = await relay.wait_for(1)
    assert mail.message["Subject"] == "Fax from (0312) 555 00 00 to (0212) 111 00 00 (1 page)"


@pytest.mark.parametrize(("language", "subject", "phrases"), [
    ("en", "[fax-bridge] received fax 1 could not be converted to PDF",
     ("cause: inbound-", "It was delivered to frontdesk@example.com as the original file")),
    ("tr", "[fax-bridge] Uyarı: gelen 1 numaralı faks PDF'ye dönüştürülemedi",
     ("neden: inbound-conversion-1", "Faks frontdesk@example.com adresine özgün dosya olarak")),
    ("ja", "【fax-bridge 警告】受信したFAX 1をPDFに変換できませんでした",
     ("原因：inbound-conversion-1", "frontdesk@example.comには元のファイル（")),
])
async def test_an_alert_is_in_mail_language(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, language: str,
    subject: str, phrases: tuple[str, ...],
) -> None:
    """The alert's own words, subject and body, come from `bridge.alert_texts` in the admin's
    language; the problem itself (Pillow's words) stays as it came."""
    await make_bridge(mail={"language": language},
                      routing={"default": ("frontdesk@example.com",), "admin": ADMIN})
    await faxmax.push_incoming(tiff=make_tiff(1)[:60], cld="902121110000", cli="903125550000")
    mails = await relay.wait_for(2)
    [alert] = [m.message for m in mails if m.rcpt_tos == [ADMIN]]
    assert alert["Subject"] == subject
    for phrase in phrases:
        assert phrase in text_of(alert)


async def test_non_ascii_headers_are_rfc2047_and_bodies_utf8(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink,
) -> None:
    faxmax.statuses[NUMBER] = ["SUCCESS"]
    bridge = await make_bridge(mail={"language": "ja"})
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    [report] = await relay.wait_for(1)
    assert report.data.isascii()  # 7-bit on the wire, whatever the language
    headers = report.data.split(b"\r\n\r\n", 1)[0].decode()
    assert re.search(r"^Subject: =\?utf-8\?", headers, re.MULTILINE), headers
    assert report.message.get_body(("plain",)).get_content_charset() == "utf-8"  # type: ignore[union-attr]
    assert report.message["Subject"] == "【FAX送信完了】(0212) 222 25 25「Invoice 42」"


async def test_a_missing_override_falls_back_to_the_built_in_translation_then_english(
    make_bridge: MakeBridge, faxmax: FaxMaxSimulator, relay: RelaySink, tmp_path: Path,
) -> None:
    overrides = tmp_path / "templates"
    (overrides / "tr").mkdir(parents=True)
    (overrides / "tr" / "report.subject.j2").write_text(
        "Faks raporu: {{ written_number }}\n", encoding="utf-8")
    (overrides / "de").mkdir()  # a language with no translation of its own: English
    faxmax.statuses[NUMBER] = ["SUCCESS"]
    faxmax.statuses["903125550000"] = ["SUCCESS"]
    bridge = await make_bridge(mail={"templates_dir": str(overrides), "sender_languages": {
        "@example.com": "tr", "@example.de": "de"}})
    await smtp_send(bridge.smtp_port, fax_mail(PDF))
    await smtp_send(bridge.smtp_port, fax_mail(PDF, sender="hans@example.de",
                                               to="03125550000@fax.local"),
                    mail_from="hans@example.de", rcpts=["03125550000@fax.local"])
    reports = {r.rcpt_tos[0]: r.message for r in await relay.wait_for(2)}
    turkish = reports["alice@example.com"]
    assert turkish["Subject"] == "Faks raporu: (0212) 222 25 25"  # the operator's
    assert "numarasına gönderdiğiniz faks iletildi" in text_of(turkish)  # the built-in tr
    german = reports["hans@example.de"]
    assert german["Subject"] == "Fax delivered to (0312) 555 00 00: Invoice 42"
    assert "Your fax to (0312) 555 00 00 was delivered." in text_of(german)


@pytest.mark.parametrize(("number", "home", "language", "written"), [
    ("903125550000", "90", "tr", "(0312) 555 00 00"),
    ("81368680000", "81", "ja", "03-6868-0000"),
    ("81368680000", "90", "tr", "+81 3-6868-0000"),
    ("903125550000", "81", "ja", "+90 312 555 00 00"),
    ("4930123456", "90", "en", "+49 30 123456"),
    ("", "90", "tr", "gizli numara"),
    ("", "81", "ja", "非通知"),
    ("", "90", "en", "withheld"),
    ("999", "90", "en", "+999"),  # not a number phonenumbers knows: as it came
])
def test_numbers_are_written_as_the_readers_country_writes_them(
    number: str, home: str, language: str, written: str,
) -> None:
    assert written_number(number, home, language) == written


def test_dates_are_written_in_each_languages_own_form() -> None:
    moment = 1_796_646_840.0  # 2026-12-07 12:34 UTC
    assert format_time(moment, "Europe/Istanbul", "tr") == "7 Aralık 2026 15:34"
    assert format_time(moment, "Asia/Tokyo", "ja") == "2026年12月7日 21:34"
    assert format_time(moment, "Europe/Istanbul", "en") == "2026-12-07 15:34 +03"
    assert format_time(moment, "Europe/Istanbul", "de") == "2026-12-07 15:34 +03"


@pytest.mark.parametrize(("language", "letter"), [
    ("en", "Paper size:  letter"), ("tr", "Kâğıt boyutu:        Letter (ABD)"),
    ("ja", "用紙サイズ:   レター")])
def test_a_paper_size_is_named_in_the_readers_words(language: str, letter: str) -> None:
    name, _, context = next(s for s in samples(Settings(), language) if s[0] == "report.txt.j2")
    text = Templates().render(name, dict(context, paper_size="letter"), language)
    assert letter in text
