"""The outcome of one device command as a value, and how it is shown.

``CommandResult`` is what running a command gives, whoever runs it: the
interactive shell prints its ``text``; a headless device (``--run``) prints the
same text or, with ``--json``, one JSON object per result for scripts to parse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TextIO

#: ``code`` values for failures found on the device itself (the server's own error
#: codes, such as ``not_found`` or ``bad_data``, are passed through as they are).
USAGE = "usage"                 # the line is not a valid command
NO_LOCAL_FILE = "no_local_file"  # UED: the data file is not on the device
LOCAL_IO = "local_io"           # EDG/UED: the device could not write or read its file
UVF_FAILED = "uvf_failed"       # UVF: the transfer did not happen


@dataclass(frozen=True)
class CommandResult:
    """One command's outcome. ``text`` holds the lines the shell prints (joined by
    newlines); ``data`` the structured result (the server's reply fields, or what
    the device did); ``code`` is None when ``ok``."""

    command: str
    ok: bool
    text: str
    code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, command: str, text: str, **data: Any) -> CommandResult:
        return cls(command, True, text, None, data)

    @classmethod
    def failure(cls, command: str, code: str, message: str) -> CommandResult:
        return cls(command, False, message, code, {})

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else []

    def to_json(self) -> dict[str, Any]:
        if self.ok:
            return {"command": self.command, "ok": True, "result": self.data, "text": self.text}
        return {"command": self.command, "ok": False,
                "error": {"code": self.code, "message": self.text}}


class ResultPrinter:
    """Writes results and notices to ``out``: the human lines, or JSON lines."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json

    def _json(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()

    def _text(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def result(self, res: CommandResult) -> None:
        if self.as_json:
            self._json(res.to_json())
            return
        self._text(f"> {res.command}")
        for line in res.lines:
            self._text(line)

    def notice(self, message: str, event: str = "notice", **fields: Any) -> None:
        """Something that is not a command's result: a received file, a reconnection."""
        if self.as_json:
            self._json({"event": event, "message": message, **fields})
        else:
            self._text(message)
