"""The client's command parser: every typed command and every user-visible error."""

from __future__ import annotations

import pytest

from edgenet.client.commands import (
    MAX_DATA_AMOUNT,
    MENU,
    CommandError,
    ComputeStat,
    DeleteData,
    GenerateData,
    ListDevices,
    Logout,
    SendFile,
    UploadData,
    device_name_error,
    parse_command,
    parse_non_negative,
)

MAX_ID = 2**63 - 1


def err(line: str) -> str:
    result = parse_command(line)
    assert isinstance(result, CommandError), result
    return result.message


def test_menu_line() -> None:
    assert MENU == "EDG, UED, SCS, DTE, AED, UVF, OUT"


@pytest.mark.parametrize("line", ["", " ", "\t", "   \n"])
def test_blank_line_is_none(line: str) -> None:
    assert parse_command(line) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("EDG 3 100", GenerateData(3, 100)),
        ("EDG 0 0", GenerateData(0, 0)),
        ("EDG 007 10", GenerateData(7, 10)),
        (f"EDG {MAX_ID} 1", GenerateData(MAX_ID, 1)),
        (f"EDG 1 {MAX_DATA_AMOUNT}", GenerateData(1, MAX_DATA_AMOUNT)),
        ("UED 3", UploadData(3)),
        ("SCS 3 SUM", ComputeStat(3, "SUM")),
        ("SCS 3 AVERAGE", ComputeStat(3, "AVERAGE")),
        ("SCS 3 MAX", ComputeStat(3, "MAX")),
        ("SCS 3 MIN", ComputeStat(3, "MIN")),
        ("DTE 3", DeleteData(3)),
        ("AED", ListDevices()),
        ("OUT", Logout()),
        ("UVF camera1 camera1-3.txt", SendFile("camera1", "camera1-3.txt")),
        ("  EDG 3 100  \n", GenerateData(3, 100)),
    ],
)
def test_valid_commands(line: str, expected: object) -> None:
    assert parse_command(line) == expected


# --- EDG ---------------------------------------------------------------------

@pytest.mark.parametrize("line", ["EDG", "EDG 3"])
def test_edg_missing_arguments(line: str) -> None:
    assert err(line) == "EDG command requires fileID and dataAmount as arguments."


@pytest.mark.parametrize("line", ["EDG x 3", "EDG 3 y", "EDG -1 3", "EDG 3 -5", "EDG 1.5 3",
                                  "EDG 3 1e3", "EDG +3 3", "EDG 1_000 3", "EDG \u0663 3",
                                  "EDG \u00b2 3", "EDG 3 \uff11", "EDG 1\u0663 3"])
def test_edg_not_non_negative_integers(line: str) -> None:
    assert err(line) == "fileID and dataAmount must be non-negative integers"


def test_edg_limits() -> None:
    assert err(f"EDG {MAX_ID + 1} 3") == f"fileID must be between 0 and {MAX_ID}"
    assert err("EDG 1" + "0" * 5000 + " 3") == f"fileID must be between 0 and {MAX_ID}"
    assert err(f"EDG 3 {MAX_DATA_AMOUNT + 1}") == f"dataAmount must be at most {MAX_DATA_AMOUNT}"


def test_edg_too_many_arguments() -> None:
    assert err("EDG 1 2 3") == "too many arguments; usage: EDG fileID dataAmount"


# --- UED ---------------------------------------------------------------------

def test_ued_errors() -> None:
    assert err("UED") == "fileID is needed to upload the data"
    assert err("UED abc") == "fileID must be a non-negative integer"
    assert err("UED -2") == "fileID must be a non-negative integer"
    assert err(f"UED {MAX_ID + 1}") == f"fileID must be between 0 and {MAX_ID}"
    assert err("UED 1 2") == "too many arguments; usage: UED fileID"


# --- SCS ---------------------------------------------------------------------

@pytest.mark.parametrize("line", ["SCS", "SCS abc SUM", "SCS -1 SUM", "SCS 2.5 MAX"])
def test_scs_bad_file_id(line: str) -> None:
    assert err(line) == "fileID is missing or fileID should be an integer"


@pytest.mark.parametrize("line", ["SCS 3", "SCS 3 MEDIAN", "SCS 3 sum", "SCS 3 Average"])
def test_scs_bad_operation(line: str) -> None:
    assert err(line) == "operation must be one of SUM, AVERAGE, MAX, MIN"


def test_scs_other_errors() -> None:
    assert err(f"SCS {MAX_ID + 1} SUM") == f"fileID must be between 0 and {MAX_ID}"
    assert err("SCS 3 SUM MAX") == "too many arguments; usage: SCS fileID operation"


# --- DTE, AED, OUT -------------------------------------------------------------

def test_dte_errors() -> None:
    assert err("DTE") == "fileID is needed to delete the file"
    assert err("DTE x") == "fileID must be a non-negative integer"
    assert err(f"DTE {MAX_ID + 1}") == f"fileID must be between 0 and {MAX_ID}"
    assert err("DTE 1 2") == "too many arguments; usage: DTE fileID"


def test_commands_without_arguments() -> None:
    assert err("AED now") == "too many arguments; usage: AED"
    assert err("OUT please") == "too many arguments; usage: OUT"


# --- UVF ---------------------------------------------------------------------

@pytest.mark.parametrize("line", ["UVF", "UVF camera1"])
def test_uvf_missing_arguments(line: str) -> None:
    assert err(line) == "UVF command requires deviceName and filename as arguments."


def test_uvf_too_many_arguments() -> None:
    assert err("UVF a b c") == "too many arguments; usage: UVF deviceName filename"


# --- unknown -----------------------------------------------------------------

def test_unknown_command() -> None:
    assert err("FOO") == "unknown command 'FOO'"
    assert err("FOO 1 2") == "unknown command 'FOO'"
    assert err("edg 1 2") == "unknown command 'edg' (commands are upper-case: EDG)"
    assert err("X" * 100) == "unknown command '" + "X" * 40 + "...'"


# --- helpers -----------------------------------------------------------------

def test_parse_non_negative() -> None:
    assert parse_non_negative("0") == 0
    assert parse_non_negative("000") == 0
    assert parse_non_negative("42") == 42
    for bad in ("", "-1", "+1", " 1", "1 ", "1_0", "0x10", "\u0663", "\u00b2", "\uff11",
                "1\u00b2"):
        assert parse_non_negative(bad) is None
    assert parse_non_negative("9" * 5000) == 10**30


def test_device_name_error() -> None:
    assert device_name_error("camera1") is None
    assert device_name_error("x" * 64) is None
    assert device_name_error("") == "the device name must not be empty"
    assert device_name_error("x" * 65) == "the device name must be at most 64 characters"
    bad = "the device name must not contain '/', '\\', spaces or control characters"
    for name in ("a/b", "a\\b", "a b", "a\x00b", "a\x7f"):
        assert device_name_error(name) == bad
    assert device_name_error("..") == "the device name must not be '.' or '..'"
