"""The admin's alerts in the admin's language (`mail.language`): every alert the bridge raises,
as a key and the values of its slots, with its words in English, Turkish and Japanese here.

Code that alerts names an entry (`said("faxmax-unreachable", job=7, ...)`), never words, so an
alert reads as one text in each language, and the log line (always English) and the email
come from the same entry. The values are inserted as they are, except where a slot's format
spec asks for words in the reader's language:

- `{n:one|other}`: the English singular or plural form by the count (`{n:attempt|attempts}`);
  Turkish and Japanese texts need none;
- `{error:said}`: a sentence of the bridge's own, translated as reports translate it
  (`bridge.details`); anything else (a provider's or the system's words) as it came;
- `{number:number}`: a fax number as the reader writes it (`bridge.language`);
- `{noun:word}`: one of the bridge's words for what a queue holds ("job", "fax", ...);
- a value that is itself `Said` (a phrase of this catalogue) is written in the same language.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge import details, language
from bridge.providers.byosoku import NAME as BYOSOKU

# Texts: key -> language -> (summary, details). An entry without a language falls back to English.
TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "faxmax-credentials": {
        "en": ("FaxMAX refuses our credentials: no fax can be sent", "{error:said}"),
        "tr": ("FaxMAX kimlik bilgilerimizi kabul etmiyor: hiçbir faks gönderilemiyor",
               "{error:said}"),
        "ja": ("FaxMAXに認証情報を拒否されています。FAXを1通も送信できません", "{error:said}"),
    },
    "faxmax-unreachable": {
        "en": ("faxes fail because FaxMAX could not be reached",
               "Job {job} was given up after {attempts} {attempts:attempt|attempts}; last "
               "error: {error:said}"),
        "tr": ("FaxMAX'a ulaşılamadığı için fakslar gönderilemiyor",
               "{job} numaralı iş {attempts} denemeden sonra bırakıldı; son hata: {error:said}"),
        "ja": ("FaxMAXに接続できないため、FAXの送信に失敗しています",
               "ジョブ{job}は{attempts}回試みたのち断念しました。最後のエラー: {error:said}"),
    },
    "store-refused-send-outcome": {
        "en": ("FaxMAX's answer was recorded late: the store refused writes",
               "Job {job}: {outcome}. Recording it failed {refused} times (last: {error}) "
               "before it succeeded; no fax was sent twice. Check the free space of the data "
               "directory, and whatever held the database locked."),
        "tr": ("FaxMAX'ın yanıtı geç kaydedildi: veritabanı yazmayı reddetti",
               "{job} numaralı iş: {outcome}. Kayıt {refused} kez başarısız olduktan sonra "
               "yapılabildi (son hata: {error}); hiçbir faks iki kez gönderilmedi. Veri "
               "dizinindeki boş alanı ve veritabanını kilitli tutan işlemi denetleyin."),
        "ja": ("FaxMAXの応答の記録が遅れました（データベースが書き込みを拒否しました）",
               "ジョブ{job}: {outcome}。記録に{refused}回失敗したのち成功しました（最後の"
               "エラー: {error}）。FAXが二重に送信されたことはありません。データディレクトリの"
               "空き容量と、データベースをロックしていた処理を確認してください。"),
    },
    "outcome-accepted": {
        "en": ("accepted by FaxMAX as fax {fax}", ""),
        "tr": ("FaxMAX faksı {fax} ID'siyle kabul etti", ""),
        "ja": ("FaxMAXがFAX {fax}として受け付けました", ""),
    },
    "outcome-finished": {
        "en": ("{state} ({detail:said})", ""),
        "tr": ("{state:word} ({detail:said})", ""),
        "ja": ("{state:word}（{detail:said}）", ""),
    },
    "outcome-retry": {
        "en": ("a temporary failure ({reason:said})", ""),
        "tr": ("geçici bir hata ({reason:said})", ""),
        "ja": ("一時的なエラー（{reason:said}）", ""),
    },
    "shunt": {
        "en": ("{noun} {item} was given up after {count} unexpected errors in the {queue} "
               "queue",
               "Last error: {error}\n\nThe log has the details (search for '{noun} {item}:'). "
               "Everything behind it in the queue went on."),
        "tr": ("{noun:word} {item}, {queue:word} kuyruğunda {count} beklenmeyen hatadan sonra "
               "bırakıldı",
               "Son hata: {error}\n\nAyrıntılar sistem günlüğündedir ('{noun} {item}:' diye "
               "arayın). Kuyrukta arkasındakiler işlenmeye devam etti."),
        "ja": ("{queue:word}キューの{noun:word} {item}は、予期しないエラーが{count}回続いたため"
               "処理を断念しました",
               "最後のエラー: {error}\n\n詳細はシステムのログにあります（「{noun} {item}:」で"
               "検索してください）。キューの後続の処理は続行しています。"),
    },
    "inbound-conversion": {
        "en": ("received fax {fax} could not be converted to PDF",
               "{problem}\nIt was delivered to {to} as the original file {filename}."),
        "tr": ("gelen {fax} numaralı faks PDF'ye dönüştürülemedi",
               "{problem}\nFaks {to} adresine özgün dosya olarak ({filename}) iletildi."),
        "ja": ("受信したFAX {fax}をPDFに変換できませんでした",
               "{problem}\n{to}には元のファイル（{filename}）のまま届けました。"),
    },
    "ocr-failing": {
        "en": ("OCR failed on the last {failures} received faxes",
               "The last one (fax {fax}): {problem}\nThe faxes were mailed without a text "
               "layer. Check the OCRmyPDF and Tesseract installation (fax-bridge "
               "check-config)."),
        "tr": ("son {failures} gelen faksta metin tanıma (OCR) başarısız oldu",
               "Sonuncusu ({fax} numaralı faks): {problem}\nFakslar metin katmanı olmadan "
               "e-postayla gönderildi. OCRmyPDF ve Tesseract kurulumunu denetleyin "
               "(fax-bridge check-config)."),
        "ja": ("直近{failures}件の受信FAXで文字認識（OCR）に失敗しました",
               "最後の1件（FAX {fax}）: {problem}\nFAXはテキスト層なしでメール送信しました。"
               "OCRmyPDFとTesseractのインストールを確認してください（fax-bridge "
               "check-config）。"),
    },
    "office-down": {
        "en": ("LibreOffice does not start: mails with Office documents, or with their own "
               "text to fax, wait", "{error}"),
        "tr": ("LibreOffice başlamıyor: Office belgesi içeren ya da metni fakslanacak "
               "e-postalar bekliyor", "{error}"),
        "ja": ("LibreOfficeが起動しません。Office文書を含むメールと、本文をFAXで送るメールは"
               "待機しています", "{error}"),
    },
    "office-missing": {
        "en": ("{waiting} {waiting:mail waits|mails wait} for LibreOffice",
               "{waiting:It needs|They need} Office conversion, which is {missing}. "
               "{waiting:It is|They are} converted once it is available again."),
        "tr": ("{waiting} e-posta LibreOffice'i bekliyor",
               "Bu e-postaların Office dönüştürmesi gerekiyor, ancak LibreOffice şu an "
               "kullanılamıyor ({missing}). Yeniden kullanılabilir olduğunda dönüştürülecekler."),
        "ja": ("{waiting}通のメールがLibreOfficeを待っています",
               "これらのメールにはOffice文書の変換が必要ですが、LibreOfficeが現在利用できません"
               "（{missing}）。利用できるようになり次第、変換します。"),
    },
    "mail-delivery-unknown": {
        "en": ("delivery unknown for an email to {to}",
               "Message-ID: {message_id}\nLast error: {error}\n\nIt was sent "
               "{copies:once|twice} without an answer from the relay, which may have "
               "delivered it (the recipient may even have it twice, with the same "
               "Message-ID). It is not sent again on its own; it is kept in the outbox as mail "
               "{mail}. If the recipient does not have it, `fax-bridge retry --mail {mail}` "
               "sends it again; `fax-bridge list --mail unknown` shows every such email."),
        "tr": ("{to} adresine giden bir e-postanın teslim edilip edilmediği bilinmiyor",
               "Message-ID: {message_id}\nSon hata: {error}\n\nE-posta {copies} kez gönderildi "
               "ve aktarıcı sunucu yanıt vermedi; e-posta teslim edilmiş olabilir (alıcıya aynı "
               "Message-ID ile iki kez bile ulaşmış olabilir). Kendiliğinden yeniden "
               "gönderilmeyecek; giden kutusunda {mail} numaralı e-posta olarak duruyor. Alıcıya "
               "ulaşmadıysa `fax-bridge retry --mail {mail}` yeniden gönderir; bu durumdaki "
               "tüm e-postaları `fax-bridge list --mail unknown` gösterir."),
        "ja": ("{to}宛てのメールが配送されたかどうか分かりません",
               "Message-ID: {message_id}\n最後のエラー: {error}\n\nこのメールは{copies}回"
               "送信しましたが、中継サーバーから応答がありませんでした。配送済みの可能性が"
               "あります（同じMessage-IDで2通届いている場合もあります）。自動では再送しません。"
               "送信キューにメール{mail}として保管しています。届いていない場合は "
               "`fax-bridge retry --mail {mail}` で再送できます。該当するメールの一覧は "
               "`fax-bridge list --mail unknown` で確認できます。"),
    },
    "mail-undeliverable": {
        "en": ("an email to {to} could not be delivered",
               "Message-ID: {message_id}\nAttempts: {attempts}\nLast error: {error}\n\nIt is "
               "kept in the outbox as mail {mail}. After fixing the cause, `fax-bridge retry "
               "--mail {mail}` sends it again; `fax-bridge list --mail failed` shows every "
               "email that was given up."),
        "tr": ("{to} adresine giden bir e-posta teslim edilemedi",
               "Message-ID: {message_id}\nDeneme sayısı: {attempts}\nSon hata: {error}\n\n"
               "Giden kutusunda {mail} numaralı e-posta olarak duruyor. Sorunu giderdikten "
               "sonra `fax-bridge retry --mail {mail}` yeniden gönderir; gönderiminden "
               "vazgeçilen tüm e-postaları `fax-bridge list --mail failed` gösterir."),
        "ja": ("{to}宛てのメールを配送できませんでした",
               "Message-ID: {message_id}\n試行回数: {attempts}\n最後のエラー: {error}\n\n"
               "送信キューにメール{mail}として保管しています。原因を解消したのち "
               "`fax-bridge retry --mail {mail}` で再送できます。配送を断念したメールの一覧は "
               "`fax-bridge list --mail failed` で確認できます。"),
    },
    "push-quarantine": {
        "en": ("{count} FaxMAX push {count:event|events} could not be understood",
               "{count:It is|They are} kept in the quarantine table, nothing was lost:\n"
               "{reasons}\n\nAfter a fix, `fax-bridge replay-quarantine` processes "
               "{count:it|them} again."),
        "tr": ("FaxMAX'tan gelen {count} bildirim anlaşılamadı",
               "Bildirimler karantina tablosunda saklanıyor, hiçbir şey kaybolmadı:\n"
               "{reasons}\n\nSorun giderildikten sonra `fax-bridge replay-quarantine` bunları "
               "yeniden işler."),
        "ja": ("FaxMAXからの通知{count}件を解釈できませんでした",
               "通知は隔離テーブルに保管しており、失われたものはありません:\n{reasons}\n\n"
               "原因を解消したのち `fax-bridge replay-quarantine` で再処理できます。"),
    },
    "byosoku-log-overflow": {
        "en": ("faxes may have been missed: the {provider} log scrolled past the last poll",
               "The receive log shows only the latest {rows} faxes. This poll's {seen} rows "
               "share none with the previous poll's, so more than {rows} faxes arrived in one "
               "poll interval and the oldest of them were never seen. Check the provider's "
               "admin panel for them."),
        "tr": ("bazı fakslar kaçırılmış olabilir: {provider} kaydı son sorgudan bu yana "
               "kaydı",
               "Alım kaydı yalnızca son {rows} faksı gösteriyor. Bu sorgunun {seen} satırının "
               "hiçbiri bir önceki sorguda yoktu; yani bir sorgu aralığında {rows} fakstan "
               "fazlası geldi ve en eskileri hiç görülmedi. Bunları hizmet sağlayıcının "
               "yönetim panelinden denetleyin."),
        "ja": ("受信漏れの可能性があります（{provider}の受信ログが前回の取得以降に流れました）",
               "受信ログには最新の{rows}件しか表示されません。今回取得した{seen}件は前回の"
               "取得分と1件も重ならないため、1回の取得間隔に{rows}件を超えるFAXが届き、"
               "古いものは取得できていません。プロバイダーの管理画面で確認してください。"),
    },
    "byosoku-403": {
        "en": ("this server's IP address is not registered with {provider}", "{error}"),
        "tr": ("bu sunucunun IP adresi {provider} hizmetinde kayıtlı değil", "{error}"),
        "ja": ("このサーバーのIPアドレスが{provider}に登録されていません", "{error}"),
    },
    "byosoku-404": {
        "en": ("the {provider} URLs in the configuration are wrong (HTTP 404)", "{error}"),
        "tr": ("yapılandırmadaki {provider} adresleri yanlış (HTTP 404)", "{error}"),
        "ja": ("設定の{provider}のURLが誤っています（HTTP 404）", "{error}"),
    },
    "byosoku-ERR_NO_DATA": {
        "en": ("{provider} cannot find the account (ERR_NO_DATA): check the configuration",
               "{error}"),
        "tr": ("{provider} hesabı bulamıyor (ERR_NO_DATA): yapılandırmayı denetleyin",
               "{error}"),
        "ja": ("{provider}でアカウントが見つかりません（ERR_NO_DATA）。設定を確認してください",
               "{error}"),
    },
    "byosoku-log-failing": {
        "en": ("{provider} polling has failed {failures} times in a row", "{error}"),
        "tr": ("{provider} sorgusu üst üste {failures} kez başarısız oldu", "{error}"),
        "ja": ("{provider}の受信確認が{failures}回続けて失敗しました", "{error}"),
    },
    "byosoku-disk-full": {
        "en": ("received faxes cannot be stored: out of storage ({provider})",
               "The PDF of fax {fax} (pdfId {pdf_id}) was downloaded but could not be written: "
               "{error}. Downloads pause, up to {pause} s at a time, and resume by themselves "
               "once there is space; nothing is lost."),
        "tr": ("gelen fakslar kaydedilemiyor: disk dolu ({provider})",
               "{fax} numaralı faksın PDF'si (pdfId {pdf_id}) indirildi, ancak diske "
               "yazılamadı: {error}. İndirmeler bir seferde en çok {pause} saniye duraklatılır "
               "ve yer açıldığında kendiliğinden sürer; hiçbir şey kaybolmaz."),
        "ja": ("ディスク容量が不足しているため、受信FAXを保存できません（{provider}）",
               "FAX {fax}（pdfId {pdf_id}）のPDFはダウンロードしましたが、書き込めませんでした: "
               "{error}。ダウンロードは1回につき最大{pause}秒休止し、空き容量ができれば自動的に"
               "再開します。失われたものはありません。"),
    },
    "byosoku-pdf-failed": {
        "en": ("a received fax could not be downloaded from {provider}",
               "Fax to {to:number} from {sender:number} (pdfId {pdf_id}, {pages} "
               "{pages:page|pages}) could not be fetched after {attempts} "
               "{attempts:attempt|attempts}: {error}. Download it from the provider's admin "
               "panel."),
        "tr": ("gelen bir faks {provider} hizmetinden indirilemedi",
               "{sender:number} numarasından {to:number} numarasına gelen faks (pdfId "
               "{pdf_id}, {pages} sayfa) {attempts} denemede indirilemedi: {error}. Faksı "
               "hizmet sağlayıcının yönetim panelinden indirin."),
        "ja": ("{provider}から受信FAXをダウンロードできませんでした",
               "{sender:number}から{to:number}宛てのFAX（pdfId {pdf_id}、{pages}枚）を"
               "{attempts}回試みましたが取得できませんでした: {error}。プロバイダーの管理画面から"
               "ダウンロードしてください。"),
    },
}

# The `{x:word}` values: the bridge's words for what its queues hold, and job states.
WORDS: dict[str, dict[str, str]] = {
    "tr": {"job": "İş", "message": "E-posta", "fax": "Faks", "mail": "E-posta",
           "convert": "dönüştürme", "report": "rapor", "inbound": "gelen faks",
           "email": "e-posta", "failed": "başarısız", "unknown": "durumu bilinmiyor",
           "delivered": "iletildi", "cancelled": "iptal edildi"},
    "ja": {"job": "ジョブ", "message": "メール", "fax": "FAX", "mail": "メール",
           "convert": "変換", "report": "送信結果通知", "inbound": "受信FAX",
           "email": "メール送信", "failed": "失敗", "unknown": "送信結果不明",
           "delivered": "送信完了", "cancelled": "取消"},
}


@dataclass(frozen=True)
class Said:
    """An entry of `TEXTS` with its slots' values, to be written in a reader's language."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def summary(self, lang: str = language.ENGLISH, home_country: str = "90") -> str:
        return _Writer(lang, home_country).vformat(self._texts(lang)[0], (), self.values)

    def details(self, lang: str = language.ENGLISH, home_country: str = "90") -> str:
        return _Writer(lang, home_country).vformat(self._texts(lang)[1], (), self.values)

    def _texts(self, lang: str) -> tuple[str, str]:
        texts = TEXTS[self.key]
        return texts.get(lang, texts[language.ENGLISH])


def said(key: str, **values: Any) -> Said:
    """The alert (or phrase) `key` of `TEXTS`, with its slots; a key not there is a bug."""
    if key not in TEXTS:
        raise KeyError(f"no alert text {key!r}")
    return Said(key, {"provider": BYOSOKU, **values})


class _Writer(string.Formatter):
    def __init__(self, lang: str, home_country: str) -> None:
        self.lang = lang
        self.home_country = home_country

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Said):
            return value.summary(self.lang, self.home_country)
        if format_spec == "said":
            return details.translate(str(value), self.lang)
        if format_spec == "number":
            return language.written_number(str(value), self.home_country, self.lang)
        if format_spec == "word":
            return WORDS.get(self.lang, {}).get(str(value), str(value))
        if "|" in format_spec:
            one, other = format_spec.split("|", 1)
            return one if value == 1 else other
        return str(super().format_field(value, format_spec))
