"""The behaviour every ``Lockouts`` implementation must have (see tests/backends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from edgenet.server.interfaces import Attempt, Lockouts
from tests.backends import LOCKOUTS, BackendEnv, Opener

OpenLockouts = Callable[..., AbstractAsyncContextManager[Lockouts]]


@pytest.fixture(params=LOCKOUTS)
def open_lockouts(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLockouts:
    """``async with open_lockouts(max_attempts=3, block_seconds=10) as t``."""
    opener: Opener = request.param

    def make(max_attempts: int = 3, block_seconds: float = 10.0
             ) -> AbstractAsyncContextManager[Lockouts]:
        return opener(BackendEnv(tmp_path, request.node.name, max_attempts, block_seconds))
    return make


def allowed(a: Attempt) -> bool:
    return a.seconds_left == 0


async def test_block_after_max_attempts_then_expiry(open_lockouts: OpenLockouts) -> None:
    async with open_lockouts(max_attempts=3, block_seconds=10) as t:
        assert await t.attempt("a", 100.0) == Attempt(attempts_left=2)
        assert await t.attempt("a", 101.0) == Attempt(attempts_left=1)
        assert await t.attempt("a", 102.0) == Attempt(block_seconds=10)  # this one blocks
        assert await t.attempt("a", 105.0) == Attempt(seconds_left=7.0)  # not counted
        assert await t.attempt("a", 106.0) == Attempt(seconds_left=6.0)
        assert [(e.name, e.failures, e.blocked_until) for e in await t.entries(111.0)] == [
            ("a", 3, 112.0)]
        assert await t.entries(112.0) == []
        # After the block the count starts again from zero.
        assert await t.attempt("a", 112.0) == Attempt(attempts_left=2)


async def test_success_takes_back_the_count(open_lockouts: OpenLockouts) -> None:
    async with open_lockouts(max_attempts=2, block_seconds=10) as t:
        assert allowed(await t.attempt("a", 0.0))
        await t.succeeded("a")
        assert await t.entries(0.5) == []
        assert await t.attempt("a", 1.0) == Attempt(attempts_left=1)
        # A right password on the attempt that would block: no block.
        assert await t.attempt("a", 2.0) == Attempt(block_seconds=10)
        await t.succeeded("a")
        assert await t.attempt("a", 3.0) == Attempt(attempts_left=1)


async def test_names_are_counted_apart(open_lockouts: OpenLockouts) -> None:
    async with open_lockouts(max_attempts=1, block_seconds=5) as t:
        assert await t.attempt("a", 0.0) == Attempt(block_seconds=5)
        assert await t.attempt("b", 1.0) == Attempt(block_seconds=5)
        assert await t.attempt("a", 1.0) == Attempt(seconds_left=4.0)
        entries = await t.entries(1.0)
        assert [e.name for e in entries] == ["a", "b"]  # oldest failure first
        assert all(e.blocked_until is not None for e in entries)


async def test_lift_forgets_and_says_what_it_forgot(open_lockouts: OpenLockouts) -> None:
    async with open_lockouts(max_attempts=2, block_seconds=10) as t:
        await t.attempt("a", 0.0)
        await t.attempt("a", 1.0)
        await t.attempt("m", 1.5)
        lifted = await t.lift("a", 2.0)
        assert lifted is not None and (lifted.failures, lifted.blocked_until) == (2, 11.0)
        assert allowed(await t.attempt("a", 3.0))
        assert await t.lift("nobody", 3.0) is None
        one = await t.lift("m", 3.0)
        assert one is not None and (one.failures, one.blocked_until) == (1, None)
        await t.attempt("z", 4.0)
        await t.attempt("z", 4.0)
        assert await t.lift("z", 14.0) is None  # the block ran out on its own


async def test_concurrent_attempts_get_at_most_max_checks(open_lockouts: OpenLockouts) -> None:
    async with open_lockouts(max_attempts=3, block_seconds=10) as t:
        results = await asyncio.gather(*(t.attempt("a", 50.0) for _ in range(50)))
        assert sum(1 for r in results if allowed(r)) == 3
        assert sum(1 for r in results if r.block_seconds) == 1
        assert all(r.seconds_left == 10.0 for r in results if not allowed(r))
