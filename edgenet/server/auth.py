"""The credentials file: parsing, and constant-time password checks.

An entry is ``name password`` (plain text) or ``name $pbkdf2-sha256$...`` (a
hash made by ``edgenet hash-password``; see ``passwords``). Checking a hashed
entry is slow by design: callers on the event loop ask ``is_slow`` and run
``check`` in a worker thread.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from edgenet.server.passwords import HashFormatError, PasswordHash, is_hashed, parse_hash
from edgenet.textfile import read_regular_file

#: Largest credentials file read (about 40,000 hashed entries): anything bigger is refused.
MAX_CREDENTIALS_BYTES = 8 * 2**20


class CredentialsError(Exception):
    """The credentials file is missing or malformed; the message names the line."""


def valid_device_name(name: str) -> str | None:
    """Why ``name`` cannot be a device name, or None when it can.

    Device names become part of file names (``<name>-<fileID>.txt``), so they
    hold no path separators, spaces or control characters.
    """
    if not name:
        return "empty device name"
    if len(name) > 64:
        return "device name longer than 64 characters"
    if name in (".", ".."):
        return "device name may not be '.' or '..'"
    bad = [c for c in name if c in "/\\ " or ord(c) < 32 or ord(c) == 127]
    if bad:
        return f"device name holds a forbidden character {bad[0]!r}"
    return None


@dataclass(frozen=True)
class Credentials:
    """Device name -> password entry (plain text or a ``$``-prefixed hash), as read."""

    entries: dict[str, str]
    hashes: dict[str, PasswordHash] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            text = read_regular_file(path, MAX_CREDENTIALS_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise CredentialsError(f"credentials file not found: {path}") from None
        except UnicodeDecodeError:
            raise CredentialsError(f"credentials file {path} is not valid UTF-8") from None
        except ValueError as exc:  # not a regular file, or too large: never read
            raise CredentialsError(f"credentials file {exc}") from None
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "credentials") -> Credentials:
        entries: dict[str, str] = {}
        hashes: dict[str, PasswordHash] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise CredentialsError(
                    f"{source}, line {lineno}: expected 'name password' separated by one space"
                )
            name, password = parts
            why = valid_device_name(name)
            if why:
                raise CredentialsError(f"{source}, line {lineno}: {why}")
            if name in entries:
                raise CredentialsError(f"{source}, line {lineno}: device {name!r} is listed twice")
            if is_hashed(password):
                try:
                    hashes[name] = parse_hash(password)
                except HashFormatError as exc:
                    raise CredentialsError(f"{source}, line {lineno}: {exc}") from None
            entries[name] = password
        return cls(entries, hashes)

    @property
    def plain_text(self) -> list[str]:
        """Names whose password is stored in plain text."""
        return [n for n in self.entries if n not in self.hashes]

    def is_slow(self, name: str) -> bool:
        """True when checking ``name`` costs a hash computation (also for an unknown
        name once the file holds hashes, so timing does not tell names apart)."""
        return name in self.hashes or (name not in self.entries and bool(self.hashes))

    def check(self, name: str, password: str) -> bool:
        """True when the name exists and the password matches, in constant time
        for a given password length whether or not the name exists. Blocking for a
        hashed entry (see ``is_slow``)."""
        hashed = self.hashes.get(name)
        if hashed is not None:
            return hashed.verify(password)
        expected = self.entries.get(name)
        candidate = password.encode("utf-8")
        if expected is None:
            if self.hashes:  # as slow as a real check: an unknown name is not faster
                decoy = next(iter(self.hashes.values()))
                PasswordHash(decoy.iterations, b"\0" * len(decoy.salt), decoy.digest).verify(
                    password)
            hmac.compare_digest(candidate, candidate)
            return False
        return hmac.compare_digest(expected.encode("utf-8"), candidate)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)
