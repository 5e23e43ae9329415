"""Who may send, as the SMTP side checks it: the allowlist (`smtp.allowed_senders`), a
user's own addresses, and the visible From:, which is printed on the fax's cover page.

Whom the limits then charge is `bridge.limits.account`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from bridge import replies
from bridge.config import SmtpUser
from bridge.replies import Line, render

# Failed logins are logged with a tag of the user field instead of the field itself (people
# type their password there): keyed per process, so the same name gets the same tag within one
# run's log, and a tag cannot be checked against guessed passwords.
_LOG_TAG_KEY = secrets.token_bytes(16)


def log_tag(text: str) -> str:
    return hmac.new(_LOG_TAG_KEY, text.encode("utf-8", "replace"),
                    hashlib.sha256).hexdigest()[:8]


def sender_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """`allowed` holds addresses and `@domain` entries; empty means everyone."""
    if not allowed:
        return True
    address = address.lower()
    domain = "@" + address.rpartition("@")[2]
    return any(entry.lower() in (address, domain) for entry in allowed)


def own_addresses(user: SmtpUser) -> str:
    """A user's own addresses, as a refusal names them."""
    return ", ".join(user.own_addresses) or "no address (none is configured for this user)"


def header_from_refusal(mailboxes: tuple[str, ...], user: SmtpUser | None,
                        allowed: tuple[str, ...]) -> Line | None:
    """The refusal of a mail whose From: (its `mailboxes`) the sender may not use, or None:
    a user who logged in names exactly one of their own addresses there (anyone else's
    would be printed on the cover page as the sender); with an allowlist, it names exactly
    one allowed mailbox."""
    if user is not None and (len(mailboxes) != 1 or mailboxes[0].lower() not in {
            a.lower() for a in user.own_addresses}):
        found = ", ".join(mailboxes) or "no single valid sender"
        return render(replies.FROM_NOT_THE_USERS, found=found[:200], user=user.name,
                      addresses=own_addresses(user))
    if allowed and (len(mailboxes) != 1 or not sender_allowed(mailboxes[0], allowed)):
        return render(replies.FROM_HEADER_NOT_ALLOWED)
    return None
