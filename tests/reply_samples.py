"""A value for every slot a `bridge.replies` entry may name, for the tests that fill them."""

from __future__ import annotations

# A new slot needs a sample here.
SAMPLES: dict[str, object] = {
    "address": "alice@example.com", "addresses": "alice@example.com, a@example.com",
    "article": "a", "char": "'%'", "country": "Turkey", "country_code": "90", "cover": 1,
    "depth": 10, "domain": "fax.local", "error": "cannot pickle", "example": "like 02122222525",
    "found": "ceo@example.com", "time": "14:05 +03",
    "ids": "1, 2", "ip": "192.0.2.7", "kb": 64, "kind": "premium-rate", "limit": 3,
    "local": "'12ab'", "max_digits": 15, "max_pages": 200, "mb": 256, "name": "scan.pdf",
    "national": "0900", "number": "'+909001234567'", "numbers": 2, "pages": 4, "parts": 100,
    "pixels": 50_000_000, "problem": "the received file is neither a TIFF nor a PDF",
    "seconds": 0.5, "sender": "alice@example.com", "size": "25 MB", "used": 2,
    "user": "alice", "what": "the mail", "tag": "'urgent'", "first": "'fine'",
    "second": "'superfine'", "header": "X-Fax-Cover", "value": "'yes'",
    "allowed": "auto, always, never", "days": 7, "wait": "23 minutes", "cost": 400,
    "scope": "for <alice@example.com>", "width": 13000, "height": 13000, "page": 2,
}
