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
so for them the lock is free. The address rate limit is taken the same way:
``LoginRateLimiter.reserve`` takes a token before the first ``await`` (so 30
concurrent guesses from one address with a rate of 5 see 5 judged, 25
refused), and the token is given back when the attempt does not fail.
"""

from __future__ import annotations

import asyncio

import structlog

from edgenet.server.interfaces import Attempt
from edgenet.server.state import ServerState
from edgenet.wire import messages as m

log = structlog.get_logger("edgenet.server")


def _whole_seconds(seconds: float) -> int:
    return max(1, int(seconds + 0.999))


def blocked_reply(request_id: int, seconds_left: float) -> m.ErrorReply:
    """A name already blocked tries again."""
    secs = _whole_seconds(seconds_left)
    return m.ErrorReply(request_id, "blocked",
                        "Your account is blocked due to multiple login failures. "
                        f"Please try again in {secs} seconds", seconds_left=secs)


def rate_limited_reply(request_id: int, seconds_left: float) -> m.ErrorReply:
    secs = _whole_seconds(seconds_left)
    return m.ErrorReply(request_id, "rate_limited", "too many failed logins from your address; "
                        f"try again in {secs} seconds", seconds_left=secs)


def failure_reply(request_id: int, attempt: Attempt) -> m.ErrorReply:
    """A wrong password (or an unknown name: the answer is the same)."""
    if attempt.block_seconds:
        secs = round(attempt.block_seconds)
        return m.ErrorReply(request_id, "blocked", "Invalid password. Your account has been "
                            f"blocked. Please try again in {secs} seconds", seconds_left=secs)
    return m.ErrorReply(request_id, "auth_failed", "Invalid password. Please try again",
                        attempts_left=attempt.attempts_left)


async def judge_login(state: ServerState, req: m.Login, ip: str) -> m.ErrorReply | None:
    """None when the login succeeds (failures reset), else the refusal."""
    name = req.name
    # Reserve the address's token now, before any await: checked and counted in one step.
    wait = state.rate_limiter.reserve(ip, state.clock())
    if wait:
        refusal = rate_limited_reply(req.id, wait)
        log.warning("login_rate_limited", device=name, ip=ip, seconds_left=refusal.seconds_left)
        return refusal
    failed = False
    try:
        await state.login_locks.acquire(name)
        try:
            attempt = await state.lockouts.attempt(name, state.clock())
            if attempt.seconds_left:
                log.info("login_refused_blocked", device=name,
                         seconds_left=round(attempt.seconds_left, 1))
                return blocked_reply(req.id, attempt.seconds_left)
            credentials = state.credentials
            if credentials.is_slow(name):
                good = await asyncio.to_thread(credentials.check, name, req.password)
            else:
                good = credentials.check(name, req.password)
            if good and name not in state.credentials:  # revoked by a reload meanwhile
                good = False
            if good:
                await state.lockouts.succeeded(name)
                return None
            failed = True
            refusal = failure_reply(req.id, attempt)
            if attempt.block_seconds:
                log.warning("device_blocked", device=name, block_seconds=refusal.seconds_left)
            else:
                log.info("login_failed", device=name, attempts_left=refusal.attempts_left)
            return refusal
        finally:
            state.login_locks.release(name)
    finally:
        if not failed:  # a success, a name already blocked, or a fault: not a failed guess
            state.rate_limiter.refund(ip, state.clock())
