"""The bridge's own words in a report's "Reason:" / "Why:" line, and FaxMAX's status words, in
the reader's language.

A job's `detail` is stored in English when the job ends, long before anyone knows who reads
the report, and it is the operator's words too (`fax-bridge show`, the log). So the report
translates it when it is rendered: the sentences the bridge writes itself are known here, by
their exact text or their shape (refusals by their catalogue entry, `bridge.refusal_texts`);
anything else (a provider's `result_message`, an error's words) is the provider's or the
system's and is shown as it came, inside the translated sentence around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bridge import refusal_texts
from bridge.store.jobs import CANCELLED, NO_REPORT, RECOVERED

INTERNAL_ERROR = ("fax-bridge could not convert the attachments (an internal error; the "
                  "administrator has the details in the log)")
INTERRUPTED = ("an internal error interrupted the hand-over to FaxMAX, so it is unknown whether "
               "the fax was sent; it was not sent again")

FIXED: dict[str, dict[str, str]] = {
    RECOVERED: {
        "tr": "Faksınız FaxMAX'a iletilirken fax-bridge durdu; bu nedenle FaxMAX'ın faksı "
              "alıp almadığı bilinmiyor. Faks yeniden gönderilmedi.",
        "ja": "FAXをFaxMAXへ引き渡している途中でfax-bridgeが停止したため、FaxMAXが受け付けた"
              "かどうか確認できません。自動再送は行っておりません。",
    },
    NO_REPORT: {
        "tr": "İletim raporu gelmedi: FaxMAX faksı kabul etti, ancak iletilip iletilmediğini "
              "bildirmedi.",
        "ja": "送達結果の通知はありませんでした。FaxMAXはFAXを受け付けましたが、相手先に"
              "届いたかどうかの連絡がありません。",
    },
    CANCELLED: {
        "tr": "Yönetici tarafından iptal edildi (fax-bridge cancel).",
        "ja": "管理者が取り消しました（fax-bridge cancel）。",
    },
    INTERNAL_ERROR: {
        "tr": "fax-bridge ekleri dönüştüremedi (iç hata; ayrıntılar sistem günlüğündedir, "
              "yöneticinize başvurun).",
        "ja": "fax-bridgeで添付ファイルを変換できませんでした（内部エラー。詳細はシステムの"
              "ログに記録されていますので、管理者にお問い合わせください）。",
    },
    INTERRUPTED: {
        "tr": "FaxMAX'a iletim bir iç hata nedeniyle yarıda kaldı; faksın gönderilip "
              "gönderilmediği bilinmiyor. Faks yeniden gönderilmedi.",
        "ja": "FaxMAXへの引き渡しが内部エラーで中断されたため、送信されたかどうか確認できません。"
              "自動再送は行っておりません。",
    },
    "FaxMAX's answer was not readable JSON, so it is unknown whether the fax was accepted": {
        "tr": "FaxMAX'ın yanıtı okunamadı (geçerli JSON değil); faksın kabul edilip "
              "edilmediği bilinmiyor.",
        "ja": "FaxMAXの応答を読み取れなかった（JSONとして不正）ため、FAXが受け付けられたか"
              "どうか確認できません。",
    },
    "FaxMAX's answer had an unexpected shape": {
        "tr": "FaxMAX'ın yanıtı beklenmeyen bir biçimdeydi; faksın kabul edilip edilmediği "
              "bilinmiyor.",
        "ja": "FaxMAXの応答が想定外の形式だったため、FAXが受け付けられたかどうか確認できません。",
    },
    "FaxMAX's answer did not contain a result": {
        "tr": "FaxMAX'ın yanıtında sonuç yoktu; faksın kabul edilip edilmediği bilinmiyor.",
        "ja": "FaxMAXの応答に結果が含まれていなかったため、FAXが受け付けられたかどうか確認"
              "できません。",
    },
    "FaxMAX's answer mentioned neither a fax id nor a rejection for this number": {
        "tr": "FaxMAX'ın yanıtında bu numara için ne bir faks ID'si ne de bir ret vardı; "
              "faksın kabul edilip edilmediği bilinmiyor.",
        "ja": "FaxMAXの応答には、この番号のFAX IDも拒否の通知もなかったため、FAXが受け付け"
              "られたかどうか確認できません。",
    },
}

Words = Callable[[re.Match[str], str], str]
"""A translation of one shape: from its match and the reader's language (for the parts that
are themselves the bridge's words, translated in turn)."""

SHAPED: tuple[tuple[re.Pattern[str], dict[str, Words]], ...] = (
    (re.compile(r"FaxMAX could not be reached after (\d+) attempt\(s\); last error: (.*)",
                re.DOTALL), {
        "tr": lambda m, lang: f"{m[1]} denemeye rağmen FaxMAX'a ulaşılamadı; son hata: "
                              f"{translate(m[2], lang)}",
        "ja": lambda m, lang: f"{m[1]}回試みましたがFaxMAXに接続できませんでした。最後の"
                              f"エラー：{translate(m[2], lang)}",
    }),
    (re.compile(r"(\S+) with no page sent; dialled again after (\d+) seconds"), {
        "tr": lambda m, lang: f"{status_word(m[1].upper(), lang)}: hiç sayfa gönderilmedi; "
                              f"{m[2]} saniye sonra yeniden aranacak",
        "ja": lambda m, lang: f"{status_word(m[1].upper(), lang)}：1枚も送信されません"
                              f"でした。{m[2]}秒後にかけ直します",
    }),
    (re.compile(r"FaxMAX is temporarily unavailable \(HTTP (\d+)\)"), {
        "tr": lambda m, lang: f"FaxMAX geçici olarak hizmet veremiyor (HTTP {m[1]})",
        "ja": lambda m, lang: f"FaxMAXが一時的に利用できません（HTTP {m[1]}）",
    }),
    (re.compile(r"FaxMAX answered HTTP (\d+) after receiving the fax, so it may or may not "
                r"have been sent"), {
        "tr": lambda m, lang: f"FaxMAX faksı aldıktan sonra HTTP {m[1]} yanıtı verdi; faksın "
                              "gönderilip gönderilmediği bilinmiyor",
        "ja": lambda m, lang: f"FaxMAXがFAXを受け取った後にHTTP {m[1]}を返したため、送信"
                              "されたかどうか確認できません",
    }),
    (re.compile(r"FaxMAX refused our credentials \(HTTP (\d+)\); the administrator must check "
                r"faxmax\.token"), {
        "tr": lambda m, lang: f"FaxMAX kimlik bilgilerimizi kabul etmedi (HTTP {m[1]}); "
                              "yöneticinin faxmax.token ayarını denetlemesi gerekiyor",
        "ja": lambda m, lang: f"FaxMAXに認証情報を拒否されました（HTTP {m[1]}）。管理者が"
                              "faxmax.tokenの設定を確認する必要があります",
    }),
    (re.compile(r"FaxMAX refused the request \(HTTP (\d+): (.*)\)", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX isteği reddetti (HTTP {m[1]}). FaxMAX'ın mesajı: "
                              f"{m[2]}",
        "ja": lambda m, lang: f"FaxMAXに要求を拒否されました（HTTP {m[1]}）。FaxMAXからの"
                              f"メッセージ：{m[2]}",
    }),
    (re.compile(r"FaxMAX is busy: (.*)", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX şu anda yoğun. FaxMAX'ın mesajı: {m[1]}",
        "ja": lambda m, lang: f"FaxMAXが混み合っています。FaxMAXからのメッセージ：{m[1]}",
    }),
    (re.compile(r"FaxMAX reported an internal error: (.*)", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX bir iç hata bildirdi; faksın kabul edilip edilmediği "
                              f"bilinmiyor. FaxMAX'ın mesajı: {m[1]}",
        "ja": lambda m, lang: "FaxMAXが内部エラーを返したため、FAXが受け付けられたかどうか"
                              f"確認できません。FaxMAXからのメッセージ：{m[1]}",
    }),
    (re.compile(r"FaxMAX refused the fax: (.*)", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX faksı reddetti. FaxMAX'ın mesajı: {m[1]}",
        "ja": lambda m, lang: f"FaxMAXにFAXを拒否されました。FaxMAXからのメッセージ：{m[1]}",
    }),
    (re.compile(r"FaxMAX rejected the number (\S+?)(?:: (.*))?", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX {m[1]} numarasını reddetti"
                              + (f". FaxMAX'ın mesajı: {m[2]}" if m[2] else ""),
        "ja": lambda m, lang: f"FaxMAXに番号{m[1]}を拒否されました"
                              + (f"。FaxMAXからのメッセージ：{m[2]}" if m[2] else ""),
    }),
    (re.compile(r"the fax document or its cover page could not be read, so it was not sent "
                r"\((.*)\)", re.DOTALL), {
        "tr": lambda m, lang: "faks belgesi ya da kapak sayfası okunamadığı için faks "
                              f"gönderilmedi ({m[1]})",
        "ja": lambda m, lang: f"FAXの文書または送付状を読み込めなかったため、送信していません"
                              f"（{m[1]}）",
    }),
    (re.compile(r"cannot connect to FaxMAX: (.*)", re.DOTALL), {
        "tr": lambda m, lang: f"FaxMAX'a bağlanılamıyor: {m[1]}",
        "ja": lambda m, lang: f"FaxMAXに接続できません：{m[1]}",
    }),
    (re.compile(r"FaxMAX did not answer within ([\d.]+) seconds? after receiving the fax"), {
        "tr": lambda m, lang: f"FaxMAX faksı aldıktan sonra {m[1]} saniye içinde yanıt "
                              "vermedi; faksın gönderilip gönderilmediği bilinmiyor",
        "ja": lambda m, lang: f"FaxMAXがFAXを受け取った後、{m[1]}秒以内に応答しなかったため、"
                              "送信されたかどうか確認できません",
    }),
    (re.compile(r"the connection to FaxMAX broke after the fax was sent \((\w+)\)"), {
        "tr": lambda m, lang: f"faks gönderildikten sonra FaxMAX bağlantısı koptu ({m[1]}); "
                              "faksın iletilip iletilmediği bilinmiyor",
        "ja": lambda m, lang: f"FAXを送った後にFaxMAXとの接続が切れたため（{m[1]}）、送信"
                              "されたかどうか確認できません",
    }),
)


def translate(detail: str, language: str) -> str:
    """`detail` in `language` where it is the bridge's own sentence; else as it is."""
    if language == "en" or not detail:
        return detail
    fixed = FIXED.get(detail, {}).get(language)
    if fixed is not None:
        return fixed
    for pattern, words in SHAPED:
        match = pattern.fullmatch(detail)
        if match and language in words:
            return words[language](match, language)
    return refusal_texts.translate(detail, language)


# FaxMAX's status words (its docs list none; these are the ones `faxmax.*_statuses` know).
STATUS_WORDS: dict[str, dict[str, str]] = {
    "en": {"delivered": "delivered", "busy": "line busy", "no_answer": "no answer",
           "no_carrier": "no fax tone", "failed": "failed", "rejected": "rejected",
           "cancelled": "cancelled", "queued": "queued", "sending": "sending"},
    "tr": {"delivered": "iletildi", "busy": "hat meşgul", "no_answer": "yanıt yok",
           "no_carrier": "faks sinyali yok", "failed": "başarısız", "rejected": "reddedildi",
           "cancelled": "iptal edildi", "queued": "sırada", "sending": "gönderiliyor"},
    "ja": {"delivered": "送信完了", "busy": "話し中", "no_answer": "応答なし",
           "no_carrier": "FAX信号なし", "failed": "失敗", "rejected": "拒否",
           "cancelled": "取消", "queued": "送信待ち", "sending": "送信中"},
}
STATUS_MEANINGS = {
    "SUCCESS": "delivered", "SENT": "delivered", "DELIVERED": "delivered", "OK": "delivered",
    "COMPLETED": "delivered", "BUSY": "busy", "LINE_BUSY": "busy", "NO_ANSWER": "no_answer",
    "NOANSWER": "no_answer", "NO_CARRIER": "no_carrier", "NOCARRIER": "no_carrier",
    "FAILED": "failed", "ERROR": "failed", "REJECTED": "rejected", "CANCELLED": "cancelled",
    "CANCELED": "cancelled", "QUEUED": "queued", "SENDING": "sending",
}


def status_word(status: str, language: str) -> str:
    """FaxMAX's status in the reader's words, with FaxMAX's own word after it for whoever
    asks FaxMAX about it: `hat meşgul (BUSY)`; a word not known here as it came."""
    meaning = STATUS_MEANINGS.get(status.upper())
    if not status or meaning is None:
        return status
    words = STATUS_WORDS.get(language, STATUS_WORDS["en"])
    return f"{words[meaning]} ({status})"


# What a report lists as not faxed: "name (why)", as `bridge.mime` and `bridge.body` keep it.
LEFT_OUT: dict[str, dict[str, str]] = {
    "a digital signature": {"tr": "dijital imza", "ja": "電子署名"},
    "a PGP key": {"tr": "PGP anahtarı", "ja": "PGP鍵"},
    "a contact card": {"tr": "kartvizit", "ja": "連絡先カード"},
    "an image in the signature or the quoted reply": {
        "tr": "imzadaki ya da alıntılanan yanıttaki bir resim",
        "ja": "署名または引用部分の画像"},
    "an image a page cannot show": {"tr": "sayfada gösterilemeyen bir resim",
                                    "ja": "ページに表示できない画像"},
}
CUT = re.compile(r"the end of the mail's text \(([\d,]+) characters\): the cover page holds at "
                 r"most (\d+) pages")


def left_out(item: str, language: str) -> str:
    """One line of "not faxed", in the reader's language; a file's name as it came."""
    if language == "en":
        return item
    cut = CUT.fullmatch(item)
    if cut:
        left, pages = cut[1].replace(",", ""), cut[2]
        return (f"e-posta metninin sonu ({left} karakter): kapak sayfası en çok {pages} "
                "sayfa olabilir" if language == "tr" else
                f"メール本文の末尾（{left}文字）：送付状は{pages}枚までです")
    name, _, why = item.rpartition(" (")
    words = LEFT_OUT.get(why.removesuffix(")"), {}).get(language)
    if not name or words is None:
        return item
    return f"{name} ({words})" if language == "tr" else f"{name}（{words}）"
