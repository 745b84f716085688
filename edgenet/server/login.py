"""Judging one login attempt: address rate, name lockout, password, counting.

A hashed password is checked in a worker thread (it takes a good fraction of a
second by design), so a check is an ``await``. The lockout rule "at most
MAX_ATTEMPTS consecutive failures, then blocked" must hold even for 50
concurrent attempts on one name, so the attempts on one name are judged one at
a time: each takes the name's lock, reads the block state, checks the password
and records the outcome before the next one looks. Attempts on different names
run in parallel. Plain-text entries never await, so for them the lock is free.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from edgenet.server import commands

if TYPE_CHECKING:
    from edgenet.server.app import EdgeServer

log = structlog.get_logger("edgenet.server")


@dataclass(frozen=True)
class LoginRefused:
    """Fields of the error reply (``code``, ``message``, and extras)."""

    reply: dict[str, Any]


class LoginJudge:
    """The server's one place that decides whether a login attempt succeeds."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def _one_at_a_time(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[name] -= 1
            if not self._users[name]:  # nobody waits: forget it (bounded by live attempts)
                del self._users[name]
                del self._locks[name]

    async def judge(self, name: str, password: str, ip: str) -> LoginRefused | None:
        """None when the login succeeds (failures reset), else the refusal."""
        server = self.server
        now = server.clock()
        wait = server.rate_limiter.seconds_left(ip, now)
        if wait:
            secs = max(1, int(wait + 0.999))
            log.warning("login_rate_limited", device=name, ip=ip, seconds_left=secs)
            return LoginRefused({"code": "rate_limited", "seconds_left": secs,
                                 "message": "too many failed logins from your address; "
                                            f"try again in {secs} seconds"})
        async with self._one_at_a_time(name):
            now = server.clock()
            left = server.lockouts.seconds_left(name, now)
            if left:
                log.info("login_refused_blocked", device=name, seconds_left=round(left, 1))
                return LoginRefused(commands.blocked_reply(name, left))
            credentials = server.credentials
            if credentials.is_slow(name):
                good = await asyncio.to_thread(credentials.check, name, password)
            else:
                good = credentials.check(name, password)
            now = server.clock()
            if good and name not in server.credentials:  # revoked by a reload meanwhile
                good = False
            if good:
                server.lockouts.record_success(name)
                return None
            server.rate_limiter.record_failure(ip, now)
            reply = commands.login_failure(server, name, now)
            if reply["code"] == "blocked":
                log.warning("device_blocked", device=name, block_seconds=reply["seconds_left"])
            else:
                log.info("login_failed", device=name, attempts_left=reply["attempts_left"])
            return LoginRefused(reply)
