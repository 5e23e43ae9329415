"""The words code inserts into Turkish and Japanese emails are Turkish and Japanese (issue 22):
alerts (`bridge.alert_texts`), the bridge's and FaxMAX's sentences in a report's reason
(`bridge.details`), refusals found after 250 (`bridge.refusal_texts`), FaxMAX's status words
and what a report lists as not faxed. Each is made by the code that makes it in the service
(the provider's answer classifier, the refusal catalogue, the limits' wording), then written
in each language.

The test plan: docs/RELIABILITY.md R1.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from bridge import alert_texts, details, refusal_texts
from bridge.errors import ProviderError
from bridge.limits import try_again, who
from bridge.providers.byosoku import NAME
from bridge.providers.faxmax import interpret_response
from bridge.replies import Reply
from tests.reply_samples import SAMPLES

TRANSLATED = ("tr", "ja")
LATIN_WORDS = re.compile(r"(?<!['’])\b(the|was|could|not|after|with|and|is|of|to|a)\b")
"""English words that give away an untranslated sentence in a Turkish or Japanese text."""


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def english_left(text: str, *values: str) -> list[str]:
    """English words in `text` outside the values inserted as they came (names, errors)."""
    for value in values:
        text = text.replace(value, "")
    text = re.sub(r"`[^`]*`|'[^']*'|\S+@\S+|https?://\S+", "", text)  # commands, names
    return LATIN_WORDS.findall(text)


@pytest.mark.parametrize("key", sorted(alert_texts.TEXTS))
def test_every_alert_is_written_in_each_language_with_the_same_slots(key: str) -> None:
    texts = alert_texts.TEXTS[key]
    assert set(texts) == {"en", "tr", "ja"}
    assert {lang: fields(t[0]) | fields(t[1]) for lang, t in texts.items()} == {
        lang: fields(texts["en"][0]) | fields(texts["en"][1]) for lang in texts}
    values: dict[str, object] = {
        name: 2 for t in texts.values() for text in t for name in fields(text)}
    values |= {"to": "902121110000", "sender": "", "error": "OSError: [Errno 28]",
               "outcome": alert_texts.said("outcome-accepted", fax="F-1"),
               "detail": "FaxMAX refused the fax: bad page", "reason": "", "state": "failed",
               "noun": "job", "queue": "report"}
    written = alert_texts.Said(key, {**values, "provider": NAME})
    english = written.summary() + written.details()
    for lang in TRANSLATED:
        text = written.summary(lang) + "\n" + written.details(lang)
        assert text.replace("\n", "") != english.replace("\n", "")
        assert english_left(text, "OSError: [Errno 28]", "fax-bridge") == [], (lang, text)


def test_every_alert_the_code_raises_is_in_the_catalogue_and_every_entry_is_raised() -> None:
    source = "\n".join(p.read_text() for p in Path("bridge").rglob("*.py"))
    raised = set(re.findall(r'said\(\s*"([^"]+)"', source))
    raised |= {f"byosoku-{code}" for code in re.findall(
        r'PERMANENT_ALERTS = \(([^)]*)\)', source)[0].replace('"', "").split(", ")}
    assert raised == set(alert_texts.TEXTS)


def test_an_alert_counts_in_english_and_writes_numbers_as_the_admin_does() -> None:
    one = alert_texts.said("office-missing", waiting=1, missing="not installed")
    three = alert_texts.said("office-missing", waiting=3, missing="not installed")
    assert one.summary() == "1 mail waits for LibreOffice"
    assert three.summary() == "3 mails wait for LibreOffice"
    assert three.summary("tr") == "3 e-posta LibreOffice'i bekliyor"
    assert three.summary("ja") == "3通のメールがLibreOfficeを待っています"
    pdf = alert_texts.said("byosoku-pdf-failed", to="81368680000", sender="", pdf_id="7",
                           pages=2, attempts=5, error="HTTP 500")
    assert pdf.details("ja", "81").startswith("非通知から03-6868-0000宛てのFAX（pdfId 7、2枚）")
    assert "gizli numara numarasından" in pdf.details("tr", "81")
    unreachable = alert_texts.said("faxmax-unreachable", job=7, attempts=8,
                                   error="FaxMAX is temporarily unavailable (HTTP 503)")
    assert unreachable.details("tr").endswith(
        "son hata: FaxMAX geçici olarak hizmet veremiyor (HTTP 503)")


ANSWERS = [  # (HTTP status, body) as FaxMAX may answer a send, and what the bridge then says
    (503, b"<html>down</html>"),
    (500, b"oops"),
    (401, b""),
    (400, b"missing field"),
    (200, b"{not json"),
    (200, b"[]"),
    (200, json.dumps({"error": {"code": "-32000", "message": "ERR_SERVER_BUSY"}}).encode()),
    (200, json.dumps({"error": {"code": "-32603", "message": "boom"}}).encode()),
    (200, json.dumps({"error": {"code": "-32602", "message": "bad page"}}).encode()),
    (200, json.dumps({"result": {}}).encode()),
    (200, json.dumps({"result": {"message": {"data": {"rejected": [
        {"phone": "902122222525", "message": "blocked"}]}}}}).encode()),
    (200, json.dumps({"result": {"message": {"data": {"phones": []}}}}).encode()),
]


@pytest.mark.parametrize(("status", "body"), ANSWERS)
def test_what_the_bridge_says_of_each_faxmax_answer_is_translated(status: int,
                                                                  body: bytes) -> None:
    with pytest.raises(ProviderError) as raised:
        interpret_response(status, body, number="902122222525", job_id=1)
    said = str(raised.value)
    for lang in TRANSLATED:
        written = details.translate(said, lang)
        assert written != said
        assert english_left(written, "missing field", "ERR_SERVER_BUSY", "boom", "bad page",
                            "blocked") == [], (lang, written)


def test_a_failure_after_retries_translates_its_last_error_too() -> None:
    said = ("FaxMAX could not be reached after 8 attempt(s); last error: cannot connect to "
            "FaxMAX: Cannot connect to host 127.0.0.1:9")
    assert details.translate(said, "ja") == (
        "8回試みましたがFaxMAXに接続できませんでした。最後のエラー：FaxMAXに接続できません："
        "Cannot connect to host 127.0.0.1:9")


def refusal_samples(entry: Reply) -> dict[str, object]:
    samples = {**SAMPLES, "name": "Teklif_Şubat.docx", "kind": "PDF document",
               "sender": who("user:alice"), "scope": f"for {who('@example.com')}",
               **try_again(7_500.0, 0.0, "Europe/Istanbul")}
    return {name: samples[name] for name in fields(entry.words)}


@pytest.mark.parametrize("entry", list(refusal_texts.TEXTS), ids=lambda e: e.reason)
def test_a_refusal_found_after_250_is_written_in_the_senders_language(entry: Reply) -> None:
    values = refusal_samples(entry)
    said = entry.say(**values)
    for lang in TRANSLATED:
        written = details.translate(said, lang)
        assert written != said
        assert english_left(written, "Teklif_Şubat.docx", "cannot pickle") == [], written
        assert fields(refusal_texts.TEXTS[entry][lang]) == set(values)
        if "name" in values:
            assert "Teklif_Şubat.docx" in written


def test_the_words_a_limit_puts_in_a_refusal_are_the_readers() -> None:
    said = next(e for e in refusal_texts.TEXTS
                if e.reason == "rate_limited" and "sender" in e.words).say(
        pages=4, numbers=2, sender=who("user:alice"), limit=100, used=98,
        **try_again(7_500.0, 0.0, "Europe/Istanbul"))
    assert "alice kullanıcısı 24 saat içinde" in details.translate(said, "tr")
    assert "(2 saat 5 dakika sonra)" in details.translate(said, "tr")
    assert "ユーザー「alice」の24時間" in details.translate(said, "ja")
    assert "（2時間5分後）" in details.translate(said, "ja")


def test_words_the_bridge_does_not_know_stay_as_they_came() -> None:
    assert details.translate("Remote machine refused the call", "tr") == (
        "Remote machine refused the call")
    assert details.status_word("WEIRD_NEW_STATUS", "ja") == "WEIRD_NEW_STATUS"
    assert details.left_out("notes.bin (something new)", "tr") == "notes.bin (something new)"


@pytest.mark.parametrize(("status", "en", "tr", "ja"), [
    ("SUCCESS", "delivered (SUCCESS)", "iletildi (SUCCESS)", "送信完了 (SUCCESS)"),
    ("BUSY", "line busy (BUSY)", "hat meşgul (BUSY)", "話し中 (BUSY)"),
    ("NO_ANSWER", "no answer (NO_ANSWER)", "yanıt yok (NO_ANSWER)", "応答なし (NO_ANSWER)"),
    ("NO_CARRIER", "no fax tone (NO_CARRIER)", "faks sinyali yok (NO_CARRIER)",
     "FAX信号なし (NO_CARRIER)"),
    ("FAILED", "failed (FAILED)", "başarısız (FAILED)", "失敗 (FAILED)"),
])
def test_faxmax_status_words_are_the_readers_with_faxmaxs_own_beside_them(
        status: str, en: str, tr: str, ja: str) -> None:
    assert [details.status_word(status, lang) for lang in ("en", "tr", "ja")] == [en, tr, ja]


@pytest.mark.parametrize(("item", "tr", "ja"), [
    ("signature.asc (a digital signature)", "signature.asc (dijital imza)",
     "signature.asc（電子署名）"),
    ("logo.png (an image in the signature or the quoted reply)",
     "logo.png (imzadaki ya da alıntılanan yanıttaki bir resim)",
     "logo.png（署名または引用部分の画像）"),
    ("the end of the mail's text (2,230 characters): the cover page holds at most 3 pages",
     "e-posta metninin sonu (2230 karakter): kapak sayfası en çok 3 sayfa olabilir",
     "メール本文の末尾（2230文字）：送付状は3枚までです"),
])
def test_what_was_not_faxed_is_listed_in_the_readers_words(item: str, tr: str,
                                                            ja: str) -> None:
    assert (details.left_out(item, "tr"), details.left_out(item, "ja")) == (tr, ja)
