"""One root for every error fax-bridge raises on purpose.

Callers decide between "try again later" and "tell a person now" by class, never by parsing
text: the split between transient and permanent failures is data, carried in the type and in
attributes, so the retry policy stays a pure function of the error.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Anything fax-bridge raises deliberately; `str()` is words a person can read."""


class NotFound(BridgeError):
    """The fax job an operator named does not exist (exit code 3)."""


class ConfigError(BridgeError):
    """A setting is missing or wrong; the message names the key and the file."""


class DocumentError(BridgeError):
    """A document cannot be faxed; the message says why in words for the sender."""


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

    For a fax this must never lead to an automatic resend (DESIGN rules 3 and 4).
    """


class ProviderTimeout(ProviderOutcomeUnknown, TimeoutError):
    """The provider did not answer in time after the request was sent."""


class StoreError(BridgeError):
    """The database holds something this version cannot use (a newer schema, an unknown
    state word), or storing was cut off; the message says which."""
