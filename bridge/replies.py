"""Every reply the gateway itself words on the SMTP wire, in one catalogue.

A reply is a declaration: its code, its enhanced code (RFC 3463), the label `/metrics` counts it
under, and its words with `{named}` slots (`str.format`). Code that answers or refuses names an
entry and passes the slot values; `render` alone turns them into the line aiosmtpd sends, so the
words are written once, the README's table can be checked against them, and the metrics read
the label from the entry instead of parsing the line back.

Some refusals are found only after `250` (a document that will not convert, pages over a daily
cap once they are counted). They have the entry they would have been refused with during the
dialogue, and their words go into the job's failure and the sender's report, where a file's name
keeps its own characters; only `render` makes a line ASCII.

aiosmtpd's own replies (syntax errors, commands out of order, failed AUTH, and the few that
`FaxSMTP.smtp_DATA` and `bridge.ingress.data` repeat after it) are not ours and not here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One catalogue entry. `reason` is the `/metrics` label of a refusal (4xx, 5xx)."""

    code: int
    enhanced: str
    reason: str
    words: str

    @property
    def label(self) -> str:
        """The `code` label of `fax_bridge_smtp_refusals`: "550 5.7.1"."""
        return f"{self.code} {self.enhanced}"

    def say(self, **slots: object) -> str:
        """The words with their slots filled, as a person reads them in a bounce or a report."""
        return self.words.format(**slots)


class Line(str):
    """A rendered reply: the text aiosmtpd sends, still knowing its entry (for `/metrics`)."""

    entry: Reply

    def __new__(cls, text: str, entry: Reply) -> Line:
        line = super().__new__(cls, text)
        line.entry = entry
        return line


def render(entry: Reply, about: str = "", /, **slots: object) -> Line:
    """The reply line: code, enhanced code and words, in printable ASCII on one line; `about`
    is the address it answers, when named first (`550 5.1.1 <x@fax.local>: ...`, as RCPT
    answers)."""
    words = entry.say(**slots)
    if about:
        words = f"<{about}>: {words}"
    return Line(f"{entry.label} {_on_the_wire(words)}", entry)


# Latin letters that are not a base letter plus accents, as a person writes them in ASCII.
_LATIN = str.maketrans({"ı": "i", "ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O",
                        "œ": "oe", "Œ": "OE", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L",
                        "þ": "th", "Þ": "Th", "ð": "d", "Ð": "D"})


def _on_the_wire(text: str) -> str:
    """aiosmtpd encodes replies as ASCII (SMTPUTF8 is off): one non-ASCII character, say in an
    attachment's name, turned a clean refusal into an internal error, and a CR or LF would end
    the line early. A Latin letter with accents is written as its base letter, as a person
    would (`Teklif_Şubat.docx` is `Teklif_Subat.docx`); any other character outside printable
    ASCII (a Japanese name, a zero-width space or a full-width digit in a number) as its
    Python escape (`\\u898b`), which names it exactly. The report email keeps the name as it
    was, in UTF-8."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else _ascii_of(c) for c in text)


def _ascii_of(char: str) -> str:
    """One character outside printable ASCII: its base letter when it is an accented Latin
    letter (canonical decomposition only: a full-width `０` is not a `0`), else its escape."""
    base = unicodedata.normalize("NFD", char.translate(_LATIN))
    letters = "".join(c for c in base if not unicodedata.combining(c))
    if letters and letters.isascii() and letters.isalpha():
        return letters
    return char.encode("unicode_escape").decode()


# --- the connection --------------------------------------------------------------------------

SHUTTING_DOWN = Reply(421, "4.3.2", "shutting_down",
                      "The fax gateway is restarting; please try again in a minute")
BUSY = Reply(421, "4.7.0", "busy", "The fax gateway is busy; please try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "busy", "Too many connections from {ip} (at most "
                             "{limit}); please try again later")
RCPT_FLOOD = Reply(421, "4.7.0", "busy",
                   "More than {limit} RCPT commands for one mail; closing the connection")
# `{ip}` is the client's address, or its /64 for IPv6 (bridge.ingress.logins); every reply that
# says when to try again has `{time}` and `{wait}` (bridge.limits.try_again).
AUTH_LOCKED_OUT = Reply(421, "4.7.0", "busy", "Too many failed logins from {ip}; please try "
                        "again after {time} (in {wait})")

# --- MAIL FROM -------------------------------------------------------------------------------

SENDER_OK = Reply(250, "2.1.0", "accepted", "OK")
AUTH_REQUIRED = Reply(530, "5.7.0", "auth_required", "Authentication required: log in with "
                      "your fax-bridge user name and password before sending")
NULL_SENDER = Reply(550, "5.7.1", "not_allowed", "Mail from the null sender (bounces, "
                    "auto-replies) is not faxed, to avoid mail loops")
NOT_THE_USERS_ADDRESS = Reply(550, "5.7.1", "not_allowed",
                              "user {user} may only send as {addresses}")
SENDER_NOT_ALLOWED = Reply(550, "5.7.1", "not_allowed",
                           "<{address}> is not allowed to send faxes through this gateway")
TOO_BIG = Reply(552, "5.3.4", "too_big", "Message too big: this fax gateway accepts mail of at "
                "most {size}; send fewer or smaller attachments")

# --- RCPT TO ---------------------------------------------------------------------------------

RECIPIENT_OK = Reply(250, "2.1.5", "accepted", "will be faxed to +{number}")
SAME_NUMBER = Reply(250, "2.1.5", "accepted", "same number as an earlier recipient; faxed once")
MAIL_FIRST = Reply(503, "5.5.1", "protocol", "Send MAIL FROM first")
SOURCE_ROUTE = Reply(553, "5.1.3", "bad_address", "Source routes are not accepted; write the fax "
                     "number as NUMBER@{domain}")
QUOTED_ADDRESS = Reply(553, "5.1.3", "bad_address", "Quoted addresses are not accepted; write "
                       "the fax number without quotes, as NUMBER@{domain}")
RELAYING_DENIED = Reply(550, "5.7.1", "not_allowed",
                        "relaying denied: this gateway only sends faxes, to NUMBER@{domain}")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too_many_recipients", "Too many recipients: at most "
                            "{limit} fax numbers per mail; send the rest in another mail")
# `{sender}` is whom the limits count (`bridge.limits.who`): "<alice@example.com>", "user alice".
# `{time}` and `{wait}` say when the limit lets the next fax through (`bridge.limits.try_again`).
HOURLY_LIMIT = Reply(450, "4.7.1", "rate_limited", "{sender} has reached the limit of {limit} "
                     "faxes per hour; please try again after {time} (in {wait})")
GATEWAY_HOURLY_LIMIT = Reply(451, "4.7.1", "rate_limited", "The fax gateway has reached its "
                             "limit of {limit} faxes per hour; please try again after {time} "
                             "(in {wait})")
SENDER_PAGE_LIMIT = Reply(450, "4.7.1", "rate_limited", "{sender} has reached the limit of "
                          "{limit} pages per day; please try again after {time} (in {wait})")
GATEWAY_PAGE_LIMIT = Reply(451, "4.7.1", "rate_limited", "The fax gateway has reached its daily "
                           "page limit; please try again after {time} (in {wait})")

# Options after `+` in the local part (bridge.options): `{tag}`, `{first}`, `{second}` quoted.
UNKNOWN_OPTION = Reply(550, "5.1.3", "bad_address", "{tag} is not a fax option: after '+' write "
                       "normal, fine, superfine, cover, nocover, a4, letter or legal, as "
                       "NUMBER+fine@{domain}")
CONTRADICTING_OPTIONS = Reply(550, "5.1.3", "bad_address", "{first} and {second} contradict "
                              "each other: give one {kind} per number")

# The recipient's local part (bridge.numbers): `{local}` and `{number}` come quoted, `{example}`
# is how the gateway's country writes a number. RCPT names the address they are about.
EMPTY_NUMBER = Reply(550, "5.1.3", "bad_address",
                     "an empty address is not a fax number: use digits, {example}")
QUOTED_NUMBER = Reply(550, "5.1.3", "bad_address", "{local} is a quoted address: write the fax "
                      "number without quotes, {example}")
SPACE_IN_NUMBER = Reply(550, "5.1.3", "bad_address", "{local} contains spaces or control "
                        "characters: write only the fax number before the @")
ROUTING_IN_NUMBER = Reply(550, "5.1.3", "bad_address", "{local} contains '{char}', which could "
                          "route mail elsewhere: only a fax number may stand before the @")
SPECIAL_IN_NUMBER = Reply(550, "5.1.3", "bad_address", "{local} contains {char}, which is not "
                          "allowed in an address: write only the fax number before the @")
FOREIGN_DIGIT = Reply(550, "5.1.3", "bad_address",
                      "{local} contains {char}: type the number with the ASCII digits 0-9")
PLUS_INSIDE = Reply(550, "5.1.3", "bad_address", "{local} has a '+' after the start: '+' may "
                    "only begin the number, {example}")
UNBALANCED = Reply(550, "5.1.3", "bad_address",
                   "{local} has unbalanced parentheses: write the number {example}")
ZERO_AFTER_PLUS = Reply(550, "5.1.3", "bad_address", "{local} has a 0 right after the '+': the "
                        "country code comes next, {example}")
ZERO_AFTER_00 = Reply(550, "5.1.3", "bad_address", "{local} has a 0 right after the "
                      "international prefix 00: the country code comes next, {example}")
NOT_A_NUMBER = Reply(550, "5.1.1", "bad_number",
                     "{local} is not a fax number: use digits, {example}")
TOO_SHORT = Reply(550, "5.1.1", "bad_number", "{local} is too short for a fax number: write the "
                  "whole number with its area code, {example}")
TOO_LONG = Reply(550, "5.1.1", "bad_number", "{local} is too long for a fax number: at most "
                 "{max_digits} digits with the country code")
DENY_LISTED = Reply(550, "5.7.1", "not_allowed", "{number} is blocked by this gateway's deny list")
SPECIAL_NUMBER = Reply(550, "5.7.1", "not_allowed", "{number} is {article} {kind} number "
                       "({national}); this gateway does not fax {kind} numbers")
ABROAD = Reply(550, "5.7.1", "not_allowed", "{number} is outside {country} (+{country_code}); "
               "ask the administrator to allow it")

# --- DATA: the mail (bridge.mime) ------------------------------------------------------------

QUEUED = Reply(250, "2.0.0", "accepted", "queued as fax jobs {ids}")
FROM_HEADER_NOT_ALLOWED = Reply(550, "5.7.1", "not_allowed", "The From: header must name exactly "
                                "one sender who is allowed to send faxes through this gateway")
FROM_NOT_THE_USERS = Reply(550, "5.7.1", "not_allowed", "The From: header names {found}, but user "
                           "{user} may only send as {addresses} (the From: is printed on the "
                           "fax's cover page)")
AUTO_SUBMITTED = Reply(550, "5.7.1", "not_allowed", "automatically generated mail "
                       "(Auto-Submitted) is not faxed, to avoid mail loops")
# A mail with nothing attached is faxed as its own text (bridge.body), unless it has none:
NOTHING_TO_FAX = Reply(554, "5.6.0", "bad_content", "there is nothing to fax: the mail has no "
                       "attachment and no text of its own (a signature or a quoted reply is not "
                       "faxed); attach a document, or write the text to fax in the mail")
# ... or the gateway does not fax a mail's text (`documents.body = "refuse"`, no LibreOffice):
ATTACHMENTS_ONLY = Reply(554, "5.6.0", "bad_content", "there is nothing to fax: this fax "
                         "gateway faxes attachments only, not the text of a mail; attach the "
                         "document to fax (a PDF, for example)")
HEADER_BLOCK_TOO_LARGE = Reply(554, "5.6.0", "bad_content",
                               "a header block is larger than {kb} KB")
NESTED_TOO_DEEP = Reply(554, "5.6.0", "bad_content", "the message is nested more than {depth} "
                        "levels deep; send the documents as plain attachments")
TOO_MANY_PARTS = Reply(554, "5.6.0", "bad_content", "the message has more than {parts} parts")
FORWARDED_MAIL = Reply(554, "5.6.1", "unsupported_attachment", "the message contains a forwarded "
                       "e-mail; forward the documents themselves as attachments instead")

# The X-Fax-* headers (bridge.options); `{value}` comes quoted.
BAD_OPTION_HEADER = Reply(554, "5.6.0", "bad_content",
                          "the header {header}: {value} is not one of {allowed}")
BAD_SEND_AT = Reply(554, "5.6.0", "bad_content", "the header X-Fax-Send-At: {value} is not a "
                    "time with its offset from UTC (RFC 3339), like 2026-12-08T09:00:00+09:00")
SEND_AT_TOO_FAR = Reply(554, "5.6.0", "bad_content", "the header X-Fax-Send-At: {value} is more "
                        "than {days} day(s) ahead; this gateway schedules a fax at most {days} "
                        "day(s) ahead")

# --- DATA: the documents (bridge.documents); `{name}` is the attachment's file name ------------

EMPTY_FILE = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' is empty")
UNSUPPORTED_FILE = Reply(554, "5.6.1", "unsupported_attachment",
                         "'{name}' is {what}; fax-bridge faxes PDF, TIFF, PNG and JPEG files, "
                         "Office documents (Word, Excel, PowerPoint, OpenDocument, RTF), HTML "
                         "and text")
OFFICE_UNAVAILABLE = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' is {what}, which "
                           "this fax gateway cannot convert; save it as PDF (in Word or Excel: "
                           "File > Save As > PDF) and send the PDF")
PICTURE_TOO_LARGE = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' is too large to fax: "
                          "fax-bridge accepts pictures of at most {pixels:,} pixels per page")
# Read from the headers of the whole attachment before 250 (bridge.bombs):
PICTURE_PIXELS = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' is {width} x {height} "
                       "pixels, too large to fax: fax-bridge accepts pictures of at most "
                       "{pixels:,} pixels; make it smaller and send it again")
PAGE_PIXELS = Reply(554, "5.6.1", "unsupported_attachment", "page {page} of '{name}' is {width} x "
                    "{height} pixels, too large to fax: fax-bridge accepts pages of at most "
                    "{pixels:,} pixels; make it smaller and send it again")
PDF_UNPACKS_TOO_LARGE = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' would unpack to "
                              "more than {mb} MB when read, more than fax-bridge reads of one "
                              "PDF; it may be damaged or built to overload fax gateways")
# Found only when the documents are converted, after 250:
UNREADABLE_FILE = Reply(554, "5.6.1", "unsupported_attachment",
                        "'{name}' is not a readable {kind}; it may be damaged or incomplete")
TOO_MANY_PAGES = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' makes the fax longer "
                       "than {max_pages} pages, the most fax-bridge sends in one fax")
COVER_OVER_MAX_PAGES = Reply(554, "5.6.1", "unsupported_attachment", "with its cover page "
                             "({cover} page(s)) this fax would have {pages} pages, more than "
                             "{max_pages}, the most fax-bridge sends in one fax; send fewer "
                             "pages or write less in the mail")
ENCRYPTED_PDF = Reply(554, "5.6.1", "unsupported_attachment",
                      "'{name}' is password-protected; fax-bridge cannot fax encrypted PDFs")
NO_PAGES = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' has no pages")
PROTECTED_DOCUMENT = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' is "
                           "password-protected; remove the password (or save it as PDF) and "
                           "send it again")
NOT_CONVERTIBLE = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' could not be "
                        "converted to fax pages; it may be damaged: open it and save it as PDF, "
                        "and send the PDF")
CONVERTER_DIED = Reply(554, "5.6.1", "unsupported_attachment", "converting '{name}' stopped "
                       "LibreOffice; it may be damaged or built to overload fax gateways")
PDF_BOMB = Reply(554, "5.6.1", "unsupported_attachment", "'{name}' expands to an unreasonable "
                 "size when read; it may be damaged or built to overload fax gateways")
NO_ATTACHMENT = Reply(554, "5.6.0", "bad_content", "There is no attachment to fax")
# Words a caller composed itself (a received fax's problem, which only the admin reads).
DOCUMENT_PROBLEM = Reply(554, "5.6.1", "unsupported_attachment", "{problem}")

# --- DATA: the sandbox's limits (bridge.sandbox); `{what}` is "the mail" or "the document" ----

OUT_OF_MEMORY = Reply(554, "5.6.0", "bad_content", "the document needs more than {mb} MB of "
                      "memory to read; it may be damaged or built to overload fax gateways")
TOO_SLOW = Reply(554, "5.6.0", "bad_content", "reading {what} took longer than {seconds:g} "
                 "seconds; it may be damaged or built to overload fax gateways")
READER_DIED = Reply(554, "5.6.0", "bad_content", "{what} could not be read: the reader ran out "
                    "of memory or time; it may be damaged or built to overload fax gateways")
UNSENDABLE_RESULT = Reply(554, "5.6.0", "bad_content", "the document could not be read ({error})")

# --- the gateway's own trouble: the client keeps the mail and tries again ----------------------

INTERNAL_ERROR = Reply(451, "4.3.0", "internal_error",
                       "Internal error in the fax gateway; please try again later")
OUT_OF_STORAGE = Reply(452, "4.3.1", "out_of_storage",
                       "The fax gateway is out of storage; please try again later")

# --- after 250: the daily page caps, once the pages are counted (bridge.workers.converter) ----

OVER_SENDER_PAGES = Reply(450, "4.7.1", "rate_limited", "this fax has {pages} page(s) for "
                          "{numbers} number(s); with it {sender} would send more than {limit} "
                          "pages in 24 hours ({used} already); please send it again after "
                          "{time} (in {wait})")
OVER_GATEWAY_PAGES = Reply(451, "4.7.1", "rate_limited", "the fax gateway has reached its daily "
                           "page limit; please send it again after {time} (in {wait})")
# ... and a fax that no wait lets through: alone it has more pages than a daily cap.
PAGES_OVER_DAILY_CAP = Reply(554, "5.7.1", "not_allowed", "this fax has {pages} page(s) for "
                             "{numbers} number(s), {cost} pages in all: more than the limit of "
                             "{limit} pages per day {scope}, so it cannot be sent as it is; "
                             "send it to fewer numbers at a time, or in parts")

CATALOGUE: dict[str, Reply] = {
    name: entry for name, entry in globals().items() if isinstance(entry, Reply)}
