"""Hashed passwords in ``credentials.txt``: ``$pbkdf2-sha256$<iterations>$<b64salt>$<b64hash>``.

Standard library only (``hashlib.pbkdf2_hmac``), a random salt per entry, the
iteration count stored in the entry so it can be raised later without breaking
old entries (as in mosquitto_passwd's PBKDF2 entries). Verification is slow by
design; the server runs it off the event loop. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from edgenet.numbers import NumberError, parse_ascii_int

SCHEME = "pbkdf2-sha256"
#: Default work factor of new entries (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
DEFAULT_ITERATIONS = 600_000
#: Bounds accepted when reading an entry: below is too weak to be a mistake worth
#: keeping quiet about, above would stall a login for minutes.
MIN_ITERATIONS = 1_000
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 16
HASH_BYTES = 32


class HashFormatError(ValueError):
    """An entry starts with ``$`` but is not a hash this module reads."""


@dataclass(frozen=True)
class PasswordHash:
    iterations: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        return (f"${SCHEME}${self.iterations}${_b64(self.salt)}${_b64(self.digest)}")

    def verify(self, password: str) -> bool:
        """Constant-time check of ``password`` (blocking: ~0.1-1 s at the default cost)."""
        candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), self.salt,
                                        self.iterations, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)


def is_hashed(entry: str) -> bool:
    """True for a ``$``-prefixed entry (plain passwords may not start with ``$``)."""
    return entry.startswith("$")


def parse_hash(entry: str) -> PasswordHash:
    """Read a ``$pbkdf2-sha256$...`` entry; raises HashFormatError naming what is wrong."""
    parts = entry.split("$")
    if len(parts) != 5 or parts[0] != "":
        raise HashFormatError(f"expected ${SCHEME}$<iterations>$<salt>$<hash> "
                              "(plain passwords may not start with '$')")
    _, scheme, iterations, salt, digest = parts
    if scheme != SCHEME:
        raise HashFormatError(f"unknown password hash scheme {scheme[:20]!r}; "
                              f"only {SCHEME} is supported")
    try:
        rounds = parse_ascii_int(iterations, MIN_ITERATIONS, MAX_ITERATIONS, "iterations")
    except NumberError:
        raise HashFormatError(f"iterations must be an integer from {MIN_ITERATIONS} "
                              f"to {MAX_ITERATIONS}") from None
    try:
        raw_salt = _unb64(salt)
        raw_digest = _unb64(digest)
    except (binascii.Error, ValueError):
        raise HashFormatError("salt and hash must be base64") from None
    if len(raw_salt) < 8:
        raise HashFormatError("salt must be at least 8 bytes")
    if len(raw_digest) < 16:
        raise HashFormatError("hash must be at least 16 bytes")
    return PasswordHash(rounds, raw_salt, raw_digest)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """A new entry for ``password`` with a fresh random salt."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be from {MIN_ITERATIONS} to {MAX_ITERATIONS}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations,
                                 HASH_BYTES)
    return PasswordHash(iterations, salt, digest).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or any(c not in _B64_CHARS for c in text):
        raise ValueError("not base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
