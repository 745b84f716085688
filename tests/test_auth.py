"""Parsing the credentials file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenet.server.auth import Credentials, CredentialsError


def test_parse_skips_comments_and_blank_lines() -> None:
    c = Credentials.parse("# devices\n\nalpha pw1\r\n  # indented comment\nBeta Pw2\n")
    assert c.entries == {"alpha": "pw1", "Beta": "Pw2"}
    assert c.check("alpha", "pw1") and not c.check("alpha", "PW1") and not c.check("ALPHA", "pw1")
    assert not c.check("nobody", "pw1")


@pytest.mark.parametrize("text,line", [
    ("a b\nc\n", 2), ("a  b\n", 1), ("a b c\n", 1), ("\n\na/x b\n", 3), ("a b\na c\n", 2),
    (" a b\n", 1),
])
def test_malformed_lines_are_named(text: str, line: int) -> None:
    with pytest.raises(CredentialsError) as err:
        Credentials.parse(text, "creds.txt")
    assert f"line {line}:" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as err:
        Credentials.load(tmp_path / "nope.txt")
    assert "not found" in str(err.value)


def test_bundled_credentials_parse() -> None:
    c = Credentials.load(Path(__file__).resolve().parent.parent / "credentials.txt")
    assert "supersmartwatch" in c and len(c) >= 4
