"""Lockouts and the active-device list, with a fake clock."""

from __future__ import annotations

from edgenet.server.state import ActiveDevices, LockoutTracker


class Session:
    def __init__(self) -> None:
        self.told: list[str] = []

    def disconnect(self, kind: str, message: str) -> None:
        self.told.append(kind)


def test_block_after_max_attempts_then_expiry() -> None:
    t = LockoutTracker(max_attempts=3, block_seconds=10)
    assert t.record_failure("a", 100.0) == 0
    assert t.record_failure("a", 101.0) == 0
    assert t.failures_left("a") == 1
    assert t.record_failure("a", 102.0) == 10
    assert t.seconds_left("a", 105.0) == 7.0
    assert t.record_failure("a", 106.0) == 0  # during a block nothing more is counted
    assert t.seconds_left("a", 112.0) == 0.0
    assert t.failures_left("a") == 3  # the count starts again after a block


def test_success_resets_and_lift_forgets() -> None:
    t = LockoutTracker(max_attempts=2, block_seconds=10)
    t.record_failure("a", 0.0)
    t.record_success("a")
    assert t.record_failure("a", 1.0) == 0
    assert t.record_failure("a", 2.0) == 10
    assert t.lift("a") is True
    assert t.seconds_left("a", 3.0) == 0.0
    assert t.lift("a") is False


def test_snapshot_and_bounded_entries() -> None:
    t = LockoutTracker(max_attempts=1, block_seconds=5, max_entries=3)
    for i, name in enumerate("abcd"):
        t.record_failure(name, float(i))
    snap = t.snapshot(3.5)
    assert len(snap) <= 3
    assert {e.name for e in snap} <= set("abcd")
    assert all(e.blocked_until is not None for e in snap)


def test_takeover_keeps_one_entry_and_old_session_cannot_remove_new() -> None:
    devs = ActiveDevices()
    s1, s2, s3 = Session(), Session(), Session()
    devs.add("a", "192.0.2.1", 1, 0.0, s1)
    devs.add("b", "192.0.2.2", 2, 1.0, s2)
    new, old = devs.add("a", "192.0.2.3", 3, 2.0, s3)
    assert old is not None and old.session is s1
    assert [d.name for d in devs] == ["b", "a"]
    assert devs.remove("a", session=s1) is None
    assert devs.get("a") is new and new.ip == "192.0.2.3"
    assert [d.name for d in devs.others("b")] == ["a"]
    assert devs.remove("a", session=s3) is new
    assert len(devs) == 1
