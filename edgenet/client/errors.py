"""How the device's connection fails, as exceptions that each carry one line for the user.

``ConnectFailed`` (the server cannot be reached, or will not talk), ``ServerGone`` (the
connection is over: why, in a line) and ``ReplyTimeout``; and the wording of everything
the server or the operating system can say that ends up in such a line: OS errors,
refusals without a message, notices, protocol violations.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

from edgenet.wire import messages as m

SERVER_CLOSED: Final = "the server closed the connection"
#: A notice's line when the server sent no message of its own.
NOTICE_FALLBACK: Final = {
    "replaced": "you logged in from another place; this session was replaced",
    "disconnected": "an operator disconnected this device",
    "shutdown": "the server is shutting down",
    "timeout": "the server timed out this connection",
}


class ConnectFailed(Exception):
    """The server cannot be reached or does not speak our protocol; one line in ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerGone(Exception):
    """The connection is over (EOF, reset, notice, broken stream); ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        self.message = f"the server did not reply within {seconds:g} seconds"
        super().__init__(self.message)


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


def refusal_text(reply: m.ErrorReply) -> str:
    """The line for a refused request: the server's message, or its code."""
    if reply.message:
        return one_line(reply.message)
    return f"the server refused the request ({reply.code or 'no reason given'})"


def notice_text(notice: m.Notice) -> str:
    return one_line(notice.message or NOTICE_FALLBACK.get(notice.kind, SERVER_CLOSED))


def violation_text(message: str) -> str:
    return f"the server broke the protocol ({message}); the connection was closed"


def lost_text(exc: BaseException) -> str:
    return f"the connection to the server was lost: {describe_os_error(exc)}"


def describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name ({exc.strerror or exc})".lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
