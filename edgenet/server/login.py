"""Judging one login attempt: address rate, name lockout, password, and the replies.

A hashed password is checked in a worker thread (it takes a good fraction of a
second by design), so a check is an ``await``. The lockout rule "at most
MAX_ATTEMPTS consecutive failures, then blocked" must hold even for 50
concurrent attempts on one name. ``Lockouts.attempt`` counts an attempt before
its password is checked, in one atomic step, which is enough on its own (also
across the nodes of a fleet); on this node the attempts on one name are also
judged one at a time (``NameLocks``), so that an attempt waits for the verdict
of the one before it instead of finding a block that may yet be taken back.
Attempts on different names run in parallel. Plain-text entries never await,
so for them the lock is free.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from edgenet.server.interfaces import Attempt
from edgenet.server.state import ServerState

log = structlog.get_logger("edgenet.server")


@dataclass(frozen=True)
class LoginRefused:
    """Fields of the error reply (``code``, ``message``, and extras)."""

    reply: dict[str, Any]


def _whole_seconds(seconds: float) -> int:
    return max(1, int(seconds + 0.999))


def blocked_reply(seconds_left: float) -> dict[str, Any]:
    """A name already blocked tries again."""
    secs = _whole_seconds(seconds_left)
    return {"code": "blocked", "seconds_left": secs,
            "message": f"Your account is blocked due to multiple login failures. "
                       f"Please try again in {secs} seconds"}


def rate_limited_reply(seconds_left: float) -> dict[str, Any]:
    secs = _whole_seconds(seconds_left)
    return {"code": "rate_limited", "seconds_left": secs,
            "message": f"too many failed logins from your address; try again in {secs} seconds"}


def failure_reply(attempt: Attempt) -> dict[str, Any]:
    """A wrong password (or an unknown name: the answer is the same)."""
    if attempt.block_seconds:
        secs = round(attempt.block_seconds)
        return {"code": "blocked", "seconds_left": secs,
                "message": "Invalid password. Your account has been blocked. "
                           f"Please try again in {secs} seconds"}
    return {"code": "auth_failed", "attempts_left": attempt.attempts_left,
            "message": "Invalid password. Please try again"}


async def judge_login(state: ServerState, name: str, password: str, ip: str
                      ) -> LoginRefused | None:
    """None when the login succeeds (failures reset), else the refusal."""
    wait = state.rate_limiter.seconds_left(ip, state.clock())
    if wait:
        reply = rate_limited_reply(wait)
        log.warning("login_rate_limited", device=name, ip=ip, seconds_left=reply["seconds_left"])
        return LoginRefused(reply)
    await state.login_locks.acquire(name)
    try:
        attempt = await state.lockouts.attempt(name, state.clock())
        if attempt.seconds_left:
            log.info("login_refused_blocked", device=name,
                     seconds_left=round(attempt.seconds_left, 1))
            return LoginRefused(blocked_reply(attempt.seconds_left))
        credentials = state.credentials
        if credentials.is_slow(name):
            good = await asyncio.to_thread(credentials.check, name, password)
        else:
            good = credentials.check(name, password)
        if good and name not in state.credentials:  # revoked by a reload meanwhile
            good = False
        if good:
            await state.lockouts.succeeded(name)
            return None
        state.rate_limiter.record_failure(ip, state.clock())
        reply = failure_reply(attempt)
        if attempt.block_seconds:
            log.warning("device_blocked", device=name, block_seconds=reply["seconds_left"])
        else:
            log.info("login_failed", device=name, attempts_left=reply["attempts_left"])
        return LoginRefused(reply)
    finally:
        state.login_locks.release(name)
