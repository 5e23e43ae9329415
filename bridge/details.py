"""The bridge's own words in a report's "Reason:" / "Why:" line, in the reader's language.

A job's `detail` is stored in English when the job ends, long before anyone knows who reads
the report, and it is the operator's words too (`fax-bridge show`, the log). So the report
translates it when it is rendered: the sentences the bridge writes itself are known here, by
their exact text or their shape; anything else (a provider's `result_message`, an error's
words) is the provider's or the system's and is shown as it came.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bridge.store.jobs import CANCELLED, NO_REPORT, RECOVERED
from bridge.workers.converter import INTERNAL_ERROR
from bridge.workers.sender import INTERRUPTED

FIXED: dict[str, dict[str, str]] = {
    RECOVERED: {
        "tr": "Faksınız FaxMAX'a iletilirken fax-bridge durdu; bu nedenle FaxMAX'ın faksı "
              "alıp almadığı bilinmiyor. Faks yeniden gönderilmedi.",
        "ja": "FAXをFaxMAXへ引き渡している途中でfax-bridgeが停止したため、FaxMAXが受け付けた"
              "かどうか確認できません。再送はしていません。",
    },
    NO_REPORT: {
        "tr": "İletim raporu gelmedi: FaxMAX faksı kabul etti, ancak iletilip iletilmediğini "
              "bildirmedi.",
        "ja": "送信結果の通知がありません。FaxMAXはFAXを受け付けましたが、届いたかどうかを"
              "知らせてきませんでした。",
    },
    CANCELLED: {
        "tr": "Yönetici tarafından iptal edildi (fax-bridge cancel).",
        "ja": "管理者が取り消しました（fax-bridge cancel）。",
    },
    INTERNAL_ERROR: {
        "tr": "fax-bridge ekleri dönüştüremedi (iç hata; ayrıntılar yöneticinin kayıtlarında).",
        "ja": "fax-bridgeで添付ファイルを変換できませんでした（内部エラー。詳細は管理者の"
              "ログに記録されています）。",
    },
    INTERRUPTED: {
        "tr": "FaxMAX'a iletim bir iç hata nedeniyle yarıda kaldı; faksın gönderilip "
              "gönderilmediği bilinmiyor. Faks yeniden gönderilmedi.",
        "ja": "FaxMAXへの引き渡しが内部エラーで中断されたため、送信されたかどうか分かりません。"
              "再送はしていません。",
    },
}

Words = Callable[[re.Match[str]], str]
SHAPED: tuple[tuple[re.Pattern[str], dict[str, Words]], ...] = (
    (re.compile(r"FaxMAX could not be reached after (\d+) attempt\(s\); last error: (.*)",
                re.DOTALL), {
        "tr": lambda m: f"{m[1]} denemeye rağmen FaxMAX'a ulaşılamadı; son hata: {m[2]}",
        "ja": lambda m: f"{m[1]}回試みましたがFaxMAXに接続できませんでした。最後のエラー: {m[2]}",
    }),
    (re.compile(r"(\S+) with no page sent; dialled again after (\d+) seconds"), {
        "tr": lambda m: f"{m[1].upper()}: hiç sayfa gönderilmedi; {m[2]} saniye sonra yeniden "
                        "aranacak",
        "ja": lambda m: f"{m[1].upper()}: 1枚も送信されませんでした。{m[2]}秒後にかけ直します",
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
            return words[language](match)
    return detail
