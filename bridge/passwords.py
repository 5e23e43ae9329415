"""Password hashes for `[[smtp.users]]`: salted scrypt, in a self-describing string.

Format: `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`, so the cost can be raised later without
invalidating hashes already in configuration files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**15, 8, 1
MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM)
    return "$".join(("scrypt", str(N), str(R), str(P), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def verify_password(password: bytes, encoded: str) -> bool:
    """Constant-time check; a malformed hash never matches (and never raises)."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = hashlib.scrypt(password, salt=salt, n=int(n), r=int(r), p=int(p),
                                maxmem=MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)
