"""The credentials file: parsing, and constant-time password checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path


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
    """Device name -> password, as read from the file."""

    entries: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CredentialsError(f"credentials file not found: {path}") from None
        except UnicodeDecodeError:
            raise CredentialsError(f"credentials file {path} is not valid UTF-8") from None
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "credentials") -> Credentials:
        entries: dict[str, str] = {}
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
            entries[name] = password
        return cls(entries)

    def check(self, name: str, password: str) -> bool:
        """True when the name exists and the password matches, in constant time
        for a given password length whether or not the name exists."""
        expected = self.entries.get(name)
        candidate = password.encode("utf-8")
        if expected is None:
            hmac.compare_digest(candidate, candidate)
            return False
        return hmac.compare_digest(expected.encode("utf-8"), candidate)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)
