"""What only the embedded state classes promise (the rest: tests/test_contract_*.py)."""

from __future__ import annotations

from edgenet.server.lockouts import LockoutTracker


async def test_lockout_entries_are_bounded() -> None:
    t = LockoutTracker(max_attempts=1, block_seconds=5, max_entries=3)
    for i, name in enumerate("abcd"):
        await t.attempt(name, float(i))
    snap = await t.entries(3.5)
    assert len(snap) <= 3
    assert {e.name for e in snap} <= set("abcd")
    assert all(e.blocked_until is not None for e in snap)


async def test_unblocked_names_are_dropped_first() -> None:
    t = LockoutTracker(max_attempts=2, block_seconds=100, max_entries=2)
    await t.attempt("blocked", 0.0)
    await t.attempt("blocked", 0.0)
    await t.attempt("counting", 1.0)
    await t.attempt("new", 2.0)
    assert [e.name for e in await t.entries(3.0)] == ["blocked", "new"]
