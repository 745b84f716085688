"""The shell's login dialogue: the device name, then the password, until the server agrees.

A name that breaks the protocol's rules is refused before anything is sent. A wrong
password (or an unknown name: the server's answer is the same) gives ``Invalid
password. Please try again`` and a new password prompt; a blocked name ends the
session (``LoginBlocked``); a refusal for now rather than for good
(``service_unavailable``: a fleet's shared state is unreachable or busy) is said as
such and the same login is tried again after a backoff with jitter, until it is
taken or refused (Ctrl-C stops it); any other refusal (``rate_limited``, ...) is
printed and the dialogue starts again from the name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from edgenet.client.backoff import RETRYABLE_CODES, Backoff
from edgenet.client.commands import device_name_error
from edgenet.client.connection import ServerLink
from edgenet.client.errors import refusal_text
from edgenet.wire import messages as m

#: Asks the user for one line (``secret``: not echoed); None at end of input.
AskFn = Callable[[str, bool], Awaitable["str | None"]]
#: Prints one line to the user.
SayFn = Callable[[str], None]

INVALID_PASSWORD = "Invalid password. Please try again"
#: The longest wait between two tries of a login the server could not take for now.
RETRY_CAP = 10.0


class LoginBlocked(Exception):
    """The server blocked the name; its refusal has been printed."""


async def login_dialogue(ask: AskFn, say: SayFn, link: ServerLink, udp_port: int,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                         backoff: Backoff | None = None) -> str | None:
    """The name the device is logged in as, or None when input ended first."""
    backoff = backoff or Backoff(base=1.0, cap=RETRY_CAP)
    while True:
        name = await ask("Device name: ", False)
        if name is None:
            return None
        name = name.strip()
        if not name:
            continue
        problem = device_name_error(name)
        if problem:
            say(problem)
            continue
        while True:
            password = await ask("Password: ", True)
            if password is None:
                return None
            if len(password) > m.MAX_PASSWORD:
                say(f"the password must be at most {m.MAX_PASSWORD} characters")
                continue
            reply = await link.login(name, password, udp_port)
            while isinstance(reply, m.ErrorReply) and reply.code in RETRYABLE_CODES:
                delay = backoff.next_delay()
                say(f"the server cannot log you in right now: {refusal_text(reply)} "
                    f"(trying again in {delay:.0f} s; Ctrl-C to stop)")
                await sleep(delay)
                reply = await link.login(name, password, udp_port)
            backoff.reset()
            if isinstance(reply, m.LoginOk):
                return name
            if reply.code == "auth_failed":
                say(INVALID_PASSWORD)
                continue
            say(refusal_text(reply))
            if reply.code == "blocked":
                raise LoginBlocked(reply.code)
            break  # any other refusal: start again from the name
