"""One root for every error fax-bridge raises on purpose.

Callers decide between "try again later" and "tell a person now" by class, never by parsing
text: the split between transient and permanent failures is carried in the type, one way for
provider calls and for email delivery alike, so the retry policy stays a pure function of the
error. What the gateway refuses a sender is a `Refusal`, whose words and SMTP reply come from
the catalogue, `bridge.replies`.
"""

from __future__ import annotations

from bridge.replies import DOCUMENT_PROBLEM, Line, Reply, render


class BridgeError(Exception):
    """Anything fax-bridge raises deliberately; `str()` is words a person can read."""


class Refusal(BridgeError):
    """Something the gateway will not do, as a catalogue entry (`bridge.replies`) and the values
    of its slots: `str()` is the words (for a bounce or a job's failure), `reply` the SMTP line.

    Raised where the decision is made, in the sandbox too: it crosses the process boundary,
    which pickles exceptions, as its entry and slots."""

    def __init__(self, entry: Reply, /, **slots: object) -> None:
        self.entry = entry
        self.slots = slots
        super().__init__(entry.say(**slots))

    def __reduce__(self) -> tuple[object, ...]:
        return _refusal, (type(self), self.entry, self.slots)

    @property
    def code(self) -> int:
        return self.entry.code

    @property
    def enhanced(self) -> str:
        return self.entry.enhanced

    @property
    def words(self) -> str:
        return str(self)

    @property
    def reply(self) -> Line:
        return render(self.entry, **self.slots)


def _refusal(cls: type[Refusal], entry: Reply, slots: dict[str, object]) -> Refusal:
    return cls(entry, **slots)


class NumberError(Refusal, ValueError):
    """A recipient the gateway will not fax (`bridge.numbers`), refused at RCPT. A `ValueError`
    too, because it is what parsing a local part raises for input that is not a number."""


class DocumentError(Refusal):
    """A document cannot be faxed (or a received fax cannot be converted), in words for the
    sender. Plain words, without an entry, are a problem only the admin reads."""

    def __init__(self, entry: Reply | str, /, **slots: object) -> None:
        if isinstance(entry, str):
            entry, slots = DOCUMENT_PROBLEM, {"problem": entry}
        super().__init__(entry, **slots)


class NotFound(BridgeError):
    """The fax job an operator named does not exist (exit code 3)."""


class ConfigError(BridgeError):
    """A setting is missing or wrong; the message names the key and the file."""


class ProviderError(BridgeError):
    """A provider call failed. `code` is the provider's error code or the HTTP status."""

    def __init__(self, message: str, *, provider: str, code: str = "") -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code


class ProviderTransientError(ProviderError):
    """The request surely did not take effect (not sent, or an explicit "not now"): retry."""


class ProviderPermanentError(ProviderError):
    """The provider refused the request for good (bad number, bad token): do not retry."""


class ProviderOutcomeUnknown(ProviderError):
    """The request was sent but no trustworthy answer came back: it may have taken effect.

    For a fax this must never lead to an automatic resend (docs/RULES.md, rules 3 and 4).
    """


class ProviderTimeout(ProviderOutcomeUnknown, TimeoutError):
    """The provider did not answer in time after the request was sent."""


class DeliveryError(BridgeError):
    """An email could not be handed to the relay or written to the Maildir."""


class DeliveryTransientError(DeliveryError):
    """Retrying later can help (a 4xx, no connection, a disk that is full or failing)."""


class DeliveryPermanentError(DeliveryError):
    """The relay refused the email for good (5xx): do not retry."""


class DeliveryOutcomeUnknown(DeliveryError):
    """The whole email was sent, but the relay's answer to its final `.` never came: the relay
    may have queued it. Not a plain "try again": resent at most once (same Message-ID)."""


class StoreError(BridgeError):
    """The database holds something this version cannot use (a newer schema, an unknown
    state word), or storing was cut off; the message says which."""
