"""Refusals found after `250` (a document that will not convert, a daily page cap), in the
language of the sender's report.

The job keeps the refusal's English words (`bridge.replies`, the words the SMTP wire and the
operator read). A report in Turkish or Japanese finds which catalogue entry the words came
from, by the entry's own pattern (its words with each `{slot}` matched), and writes the entry
in the reader's language with the same slot values: a file's name as it came, the few values
that are English words (`kind`, `what`, `sender`, `scope`, `wait`) in the reader's.
"""

from __future__ import annotations

import re
import string
from functools import cache
from typing import Any

from bridge import replies
from bridge.replies import Reply

DAMAGED = {
    "tr": "dosya bozuk olabilir ya da faks ağ geçitlerini aşırı yüklemek için hazırlanmış "
          "olabilir",
    "ja": "ファイルが壊れているか、FAXゲートウェイに過大な負荷をかける目的で作られている"
          "可能性があります",
}

TEXTS: dict[Reply, dict[str, str]] = {
    replies.UNREADABLE_FILE: {
        "tr": "'{name}' okunabilir bir {kind} değil; dosya bozuk ya da eksik olabilir",
        "ja": "「{name}」を{kind}として読み込めません。ファイルが壊れているか、不完全な可能性が"
              "あります",
    },
    replies.TOO_MANY_PAGES: {
        "tr": "'{name}' ile faks {max_pages} sayfayı aşıyor; fax-bridge tek bir faksta en çok "
              "{max_pages} sayfa gönderir",
        "ja": "「{name}」を含めるとFAXが{max_pages}枚を超えます。fax-bridgeが1回のFAXで送れる"
              "のは{max_pages}枚までです",
    },
    replies.COVER_OVER_MAX_PAGES: {
        "tr": "kapak sayfasıyla ({cover} sayfa) bu faks {pages} sayfa olacaktı; fax-bridge tek "
              "bir faksta en çok {max_pages} sayfa gönderir. Daha az sayfa gönderin ya da "
              "e-postaya daha kısa bir metin yazın",
        "ja": "送付状（{cover}枚）を含めるとこのFAXは{pages}枚になり、1回のFAXで送れる"
              "{max_pages}枚を超えます。ページ数を減らすか、メール本文を短くしてください",
    },
    replies.ENCRYPTED_PDF: {
        "tr": "'{name}' parolayla korunuyor; fax-bridge şifreli PDF'leri fakslayamaz",
        "ja": "「{name}」はパスワードで保護されています。暗号化されたPDFはFAXで送信できません",
    },
    replies.NO_PAGES: {
        "tr": "'{name}' hiç sayfa içermiyor",
        "ja": "「{name}」にはページがありません",
    },
    replies.PROTECTED_DOCUMENT: {
        "tr": "'{name}' parolayla korunuyor; parolayı kaldırıp (ya da PDF olarak kaydedip) "
              "yeniden gönderin",
        "ja": "「{name}」はパスワードで保護されています。パスワードを解除して（またはPDFとして"
              "保存して）もう一度送信してください",
    },
    replies.NOT_CONVERTIBLE: {
        "tr": "'{name}' faks sayfalarına dönüştürülemedi; dosya bozuk olabilir. Dosyayı açıp "
              "PDF olarak kaydedin ve PDF'yi gönderin",
        "ja": "「{name}」をFAXのページに変換できませんでした。ファイルが壊れている可能性が"
              "あります。ファイルを開いてPDFとして保存し、そのPDFを送信してください",
    },
    replies.CONVERTER_DIED: {
        "tr": "'{name}' dönüştürülürken LibreOffice durdu; " + DAMAGED["tr"],
        "ja": "「{name}」の変換中にLibreOfficeが停止しました。" + DAMAGED["ja"],
    },
    replies.PDF_BOMB: {
        "tr": "'{name}' okunurken aşırı büyük bir boyuta açılıyor; " + DAMAGED["tr"],
        "ja": "「{name}」は読み込むと異常に大きなサイズに展開されます。" + DAMAGED["ja"],
    },
    replies.PICTURE_TOO_LARGE: {
        "tr": "'{name}' fakslanamayacak kadar büyük: fax-bridge sayfa başına en çok {pixels} "
              "piksellik resim kabul eder",
        "ja": "「{name}」は大きすぎるためFAXで送信できません。1ページあたりの画像は{pixels}"
              "ピクセルまでです",
    },
    replies.NO_ATTACHMENT: {
        "tr": "Fakslanacak bir ek yok",
        "ja": "FAXで送る添付ファイルがありません",
    },
    replies.OUT_OF_MEMORY: {
        "tr": "belgeyi okumak için {mb} MB'tan fazla bellek gerekiyor; " + DAMAGED["tr"],
        "ja": "文書の読み込みに{mb} MBを超えるメモリが必要です。" + DAMAGED["ja"],
    },
    replies.TOO_SLOW: {
        "tr": "{what:genitive} okunması {seconds} saniyeden uzun sürdü; " + DAMAGED["tr"],
        "ja": "{what}の読み込みに{seconds}秒以上かかりました。" + DAMAGED["ja"],
    },
    replies.READER_DIED: {
        "tr": "{what} okunamadı: okuma işleminin belleği ya da süresi yetmedi; " + DAMAGED["tr"],
        "ja": "{what}を読み込めませんでした（メモリまたは時間の上限に達しました）。"
              + DAMAGED["ja"],
    },
    replies.UNSENDABLE_RESULT: {
        "tr": "belge okunamadı ({error})",
        "ja": "文書を読み込めませんでした（{error}）",
    },
    replies.OVER_SENDER_PAGES: {
        "tr": "bu faks {numbers} numara için {pages} sayfa; bununla {sender} 24 saat içinde "
              "{limit} sayfadan fazla göndermiş olacaktı (şimdiye kadar {used} sayfa). Lütfen "
              "{time} sonrasında ({wait} sonra) yeniden gönderin",
        "ja": "このFAXは{pages}枚を{numbers}件の番号に送るもので、送信すると{sender}の24時間の"
              "送信枚数が上限の{limit}枚を超えます（送信済み{used}枚）。{time}以降（{wait}後）に"
              "改めて送信してください",
    },
    replies.OVER_GATEWAY_PAGES: {
        "tr": "faks ağ geçidi günlük sayfa sınırına ulaştı; lütfen {time} sonrasında ({wait} "
              "sonra) yeniden gönderin",
        "ja": "FAXゲートウェイが1日の送信枚数の上限に達しました。{time}以降（{wait}後）に"
              "改めて送信してください",
    },
    replies.PAGES_OVER_DAILY_CAP: {
        "tr": "bu faks {numbers} numara için {pages} sayfa, toplam {cost} sayfa: {scope} "
              "günlük {limit} sayfa sınırını aştığı için bu haliyle gönderilemez. Bir seferde "
              "daha az numaraya ya da parçalar halinde gönderin",
        "ja": "このFAXは{pages}枚を{numbers}件の番号に送るもので、合計{cost}枚になります。"
              "{scope}1日{limit}枚の上限を超えるため、このままでは送信できません。一度に送る"
              "番号を減らすか、分割して送信してください",
    },
}

KINDS = {
    "PDF document": {"tr": "PDF belgesi", "ja": "PDF文書"},
    "TIFF image": {"tr": "TIFF görüntüsü", "ja": "TIFF画像"},
    "PNG image": {"tr": "PNG görüntüsü", "ja": "PNG画像"},
    "JPEG image": {"tr": "JPEG görüntüsü", "ja": "JPEG画像"},
}
THINGS = {  # `{what}`: nominative and genitive in Turkish
    "the mail": {"tr": "e-posta", "tr-genitive": "e-postanın", "ja": "メール"},
    "the document": {"tr": "belge", "tr-genitive": "belgenin", "ja": "文書"},
}
UNITS = {"hour": {"tr": "saat", "ja": "時間"}, "minute": {"tr": "dakika", "ja": "分"}}


def translate(words: str, language: str) -> str:
    """`words` in `language` when they are one of these refusals; else as they are."""
    for entry, texts in TEXTS.items():
        text = texts.get(language)
        match = _pattern(entry).fullmatch(words) if text else None
        if text and match:
            return _Writer(language).format(text, **match.groupdict())
    return words


@cache
def _pattern(entry: Reply) -> re.Pattern[str]:
    """The entry's words with each slot a group: `'{name}' has no pages` matches
    `'Teklif.pdf' has no pages`."""
    parts: list[str] = []
    seen: set[str] = set()
    for literal, slot, _spec, _conv in string.Formatter().parse(entry.words):
        parts.append(re.escape(literal))
        if slot is None:
            continue
        parts.append(f"(?P={slot})" if slot in seen else f"(?P<{slot}>.+?)")
        seen.add(slot)
    return re.compile("".join(parts), re.DOTALL)


class _Writer(string.Formatter):
    def __init__(self, language: str) -> None:
        self.language = language

    def format_field(self, value: Any, format_spec: str) -> str:
        lang, text = self.language, str(value)
        return (KINDS.get(text, {}).get(lang) or _thing(text, lang, format_spec)
                or _who(text, lang) or _wait(text, lang) or text)


def _thing(value: str, lang: str, spec: str) -> str:
    """`{what}`: "the mail", "the document", or a file's name in quotes."""
    key = f"{lang}-{spec}" if spec else lang
    if value in THINGS:
        return THINGS[value].get(key, THINGS[value].get(lang, ""))
    quoted = re.fullmatch(r"'(.*)'", value, re.DOTALL)
    if quoted is None:
        return ""
    if lang == "ja":
        return f"「{quoted[1]}」"
    return f"'{quoted[1]}' dosyasının" if spec == "genitive" else f"'{quoted[1]}' dosyası"


def _who(value: str, lang: str) -> str:
    """`{sender}` and `{scope}`: whom a limit counts (`bridge.limits.who`)."""
    scope = value.startswith("for ")
    who = value.removeprefix("for ")
    if who == "the whole fax gateway":
        return "tüm faks ağ geçidi için" if lang == "tr" else "FAXゲートウェイ全体の"
    user = re.fullmatch(r"user (.+)", who)
    domain = re.fullmatch(r"mail from (@\S+) \(all its senders together\)", who)
    if user:
        named = f"{user[1]} kullanıcısı" if lang == "tr" else f"ユーザー「{user[1]}」"
    elif domain:
        named = (f"{domain[1]} adresinden gelen e-postalar (tüm göndericiler birlikte)"
                 if lang == "tr" else f"{domain[1]}からのメール（全送信者の合計）")
    elif re.fullmatch(r"<[^<>]+>", who):
        named = who
    else:
        return ""
    if not scope:
        return named
    return f"{named} için" if lang == "tr" else f"{named}の"


def _wait(value: str, lang: str) -> str:
    """`{wait}`: "2 hours 5 minutes" (`bridge.limits.try_again`)."""
    parts = re.findall(r"(\d+) (hour|minute)s?", value)
    if not parts or " ".join(f"{n} {u}" for n, u in parts) != re.sub(r"s\b", "", value):
        return ""
    return (" " if lang == "tr" else "").join(
        f"{n} {UNITS[u]['tr']}" if lang == "tr" else f"{n}{UNITS[u]['ja']}" for n, u in parts)
