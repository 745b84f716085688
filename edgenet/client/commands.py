"""Parse and validate one shell line into a typed command, or a one-line error.

Pure: no I/O, no clock. The shell turns a ``CommandError`` into one printed line
and never sends anything to the server for it. Every message here is
user-visible and pinned by tests/test_client_commands.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from edgenet.wire.messages import MAX_FILE_ID, MAX_NAME, OPERATIONS

MENU: Final = "EDG, UED, SCS, DTE, AED, UVF, OUT"
#: Largest EDG dataAmount: about 490 MB of text; more is a typo, not a data set.
MAX_DATA_AMOUNT: Final = 100_000_000

_DIGITS = re.compile(r"[0-9]+")
# Control characters (C0 and DEL) are refused in device names, as the server does.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CommandError:
    """A line the user got wrong; ``message`` is printed as is."""

    message: str


@dataclass(frozen=True)
class GenerateData:
    """EDG fileID dataAmount"""

    file_id: int
    amount: int


@dataclass(frozen=True)
class UploadData:
    """UED fileID"""

    file_id: int


@dataclass(frozen=True)
class ComputeStat:
    """SCS fileID operation"""

    file_id: int
    op: str


@dataclass(frozen=True)
class DeleteData:
    """DTE fileID"""

    file_id: int


@dataclass(frozen=True)
class ListDevices:
    """AED"""


@dataclass(frozen=True)
class SendFile:
    """UVF deviceName filename"""

    device: str
    filename: str


@dataclass(frozen=True)
class Logout:
    """OUT"""


Command = (GenerateData | UploadData | ComputeStat | DeleteData | ListDevices | SendFile
           | Logout)

_KNOWN: Final = ("EDG", "UED", "SCS", "DTE", "AED", "UVF", "OUT")
_USAGE: Final = {
    "EDG": "EDG fileID dataAmount",
    "UED": "UED fileID",
    "SCS": "SCS fileID operation",
    "DTE": "DTE fileID",
    "AED": "AED",
    "UVF": "UVF deviceName filename",
    "OUT": "OUT",
}

FILE_ID_RANGE_ERROR: Final = f"fileID must be between 0 and {MAX_FILE_ID}"


def parse_non_negative(text: str) -> int | None:
    """Plain decimal digits only: no sign, no ``_``, no spaces, no non-ASCII digits.

    More than 30 significant digits give 10**30, which is beyond every limit here
    (and keeps int() clear of its 4,300-digit guard)."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    return 10**30 if len(digits) > 30 else int(digits)


def _file_id(text: str) -> int | None | CommandError:
    """The fileID, None if it is not a non-negative integer, or an out-of-range error."""
    value = parse_non_negative(text)
    if value is None:
        return None
    if value > MAX_FILE_ID:
        return CommandError(FILE_ID_RANGE_ERROR)
    return value


def _too_many(cmd: str) -> CommandError:
    return CommandError(f"too many arguments; usage: {_USAGE[cmd]}")


def parse_command(line: str) -> Command | CommandError | None:
    """One typed command, a CommandError, or None for a blank line."""
    words = line.split()
    if not words:
        return None
    cmd, args = words[0], words[1:]
    if cmd == "EDG":
        return _parse_edg(args)
    if cmd == "UED":
        return _parse_file_command(cmd, args, "fileID is needed to upload the data", UploadData)
    if cmd == "SCS":
        return _parse_scs(args)
    if cmd == "DTE":
        return _parse_file_command(cmd, args, "fileID is needed to delete the file", DeleteData)
    if cmd == "AED":
        return _too_many(cmd) if args else ListDevices()
    if cmd == "OUT":
        return _too_many(cmd) if args else Logout()
    if cmd == "UVF":
        if len(args) < 2:
            return CommandError("UVF command requires deviceName and filename as arguments.")
        if len(args) > 2:
            return _too_many(cmd)
        return SendFile(args[0], args[1])
    shown = cmd if len(cmd) <= 40 else cmd[:40] + "..."
    if cmd.upper() in _KNOWN:
        return CommandError(f"unknown command '{shown}' (commands are upper-case: {cmd.upper()})")
    return CommandError(f"unknown command '{shown}'")


def _parse_edg(args: list[str]) -> GenerateData | CommandError:
    if len(args) < 2:
        return CommandError("EDG command requires fileID and dataAmount as arguments.")
    if len(args) > 2:
        return _too_many("EDG")
    file_id = parse_non_negative(args[0])
    amount = parse_non_negative(args[1])
    if file_id is None or amount is None:
        return CommandError("fileID and dataAmount must be non-negative integers")
    if file_id > MAX_FILE_ID:
        return CommandError(FILE_ID_RANGE_ERROR)
    if amount > MAX_DATA_AMOUNT:
        return CommandError(f"dataAmount must be at most {MAX_DATA_AMOUNT}")
    return GenerateData(file_id, amount)


def _parse_file_command(cmd: str, args: list[str], missing: str,
                        kind: type[UploadData | DeleteData]) -> Command | CommandError:
    if not args:
        return CommandError(missing)
    if len(args) > 1:
        return _too_many(cmd)
    file_id = _file_id(args[0])
    if file_id is None:
        return CommandError("fileID must be a non-negative integer")
    if isinstance(file_id, CommandError):
        return file_id
    return kind(file_id)


def _parse_scs(args: list[str]) -> ComputeStat | CommandError:
    file_id = _file_id(args[0]) if args else None
    if file_id is None:
        return CommandError("fileID is missing or fileID should be an integer")
    if isinstance(file_id, CommandError):
        return file_id
    if len(args) > 2:
        return _too_many("SCS")
    if len(args) < 2 or args[1] not in OPERATIONS:
        return CommandError(f"operation must be one of {', '.join(OPERATIONS)}")
    return ComputeStat(file_id, args[1])


def device_name_error(name: str) -> str | None:
    """Why ``name`` cannot be a device name, or None. The name becomes part of local
    file names, so the protocol's rules are checked before it is used or sent."""
    if not name:
        return "the device name must not be empty"
    if len(name) > MAX_NAME:
        return f"the device name must be at most {MAX_NAME} characters"
    if "/" in name or "\\" in name or " " in name or _CONTROL.search(name):
        return "the device name must not contain '/', '\\', spaces or control characters"
    if name in (".", ".."):
        return "the device name must not be '.' or '..'"
    return None
