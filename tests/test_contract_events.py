"""The behaviour every ``EventLog`` implementation must have (see tests/backends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgenet.server.interfaces import EventLog
from tests.backends import EVENT_LOGS, BackendEnv, Opener


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=EVENT_LOGS)
async def events(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
                 ) -> AsyncIterator[EventLog]:
    opener: Opener = request.param
    async with opener(BackendEnv(tmp_path, request.node.name, clock=clock)) as impl:
        yield impl


def record(log: EventLog, event: str, **fields: Any) -> dict[str, Any]:
    return log.record({"event": event, "level": "info", **fields})


async def test_events_get_rising_seqs_and_read_back_newest_first(events: EventLog,
                                                                clock: Clock) -> None:
    first = record(events, "login", device="a")
    clock.now += 10
    record(events, "login", device="b")
    record(events, "command", device="a", command="UED", duration_ms=1.5)
    seqs = [e["seq"] for e in await events.query(limit=10)]
    assert len(seqs) == 3 and seqs == sorted(seqs, reverse=True) and seqs[-1] == first["seq"]
    assert await events.last_seq() == seqs[0]
    newest = (await events.query(limit=1))[0]
    assert (newest["event"], newest["device"], newest["command"]) == ("command", "a", "UED")
    assert newest["ts"] == 1010.0 and first["ts"] == 1000.0


async def test_query_filters(events: EventLog, clock: Clock) -> None:
    for i, (name, device) in enumerate([("login", "a"), ("login_failed", "b"),
                                        ("login", "b"), ("logout", "a")]):
        clock.now = 1000.0 + i
        record(events, name, device=device)
    assert [e["event"] for e in await events.query(limit=10, device="a")] == ["logout",
                                                                              "login"]
    names = frozenset({"login", "logout"})
    assert [e["device"] for e in await events.query(limit=10, names=names)] == ["a", "b", "a"]
    assert [e["event"] for e in await events.query(limit=10, since=1002.0)] == ["logout",
                                                                               "login"]
    two = await events.query(limit=2)
    older = await events.query(limit=10, before=two[-1]["seq"])
    assert [e["event"] for e in two + older] == ["logout", "login", "login_failed", "login"]
    assert [e["event"] for e in await events.after(older[0]["seq"])] == ["login", "logout"]


async def test_secrets_never_get_in(events: EventLog) -> None:
    record(events, "weird", password="hunter2", token="t0k", nested={"secret": "x", "ok": 1},
           obj=object())
    entry = (await events.query(limit=1))[0]
    assert "password" not in entry and "token" not in entry
    assert entry["nested"] == {"ok": 1} and isinstance(entry["obj"], str)
    assert "hunter2" not in repr(entry) and "t0k" not in repr(entry)
    # Again, now that the keys are known (they are judged once and remembered), with
    # another spelling and a value too long to keep whole.
    for _ in range(2):
        record(events, "weird", password="hunter2", Authorization="Bearer t0k", long="x" * 5000,
               n=3, f=0.5, flag=True, none=None)
        entry = (await events.query(limit=1))[0]
        assert "password" not in entry and "Authorization" not in entry
        assert len(entry["long"]) < 5000 and entry["long"].endswith("...")
        assert (entry["n"], entry["f"], entry["flag"], entry["none"]) == (3, 0.5, True, None)


async def test_listeners_see_each_event_recorded_here(events: EventLog) -> None:
    seen: list[str] = []

    def listener(entry: dict[str, Any]) -> None:
        seen.append(entry["event"])

    events.add_listener(listener)
    record(events, "login", device="a")
    events.remove_listener(listener)
    record(events, "logout", device="a")
    assert seen == ["login"]


async def test_live_subscribers_are_bounded_and_told_to_end(events: EventLog) -> None:
    subs = [events.subscribe() for _ in range(events.max_subscribers)]
    assert all(s is not None for s in subs)
    assert events.subscribe() is None
    record(events, "login", device="a")
    for sub in subs:
        assert sub is not None
        got = await sub.next(timeout=2.0)
        assert got is not None and got["event"] == "login"
    first = subs[0]
    assert first is not None
    events.unsubscribe(first)
    again = events.subscribe()
    assert again is not None
    events.close_subscribers()
    assert await again.next(timeout=2.0) is None and again.ended == "shutdown"
    with pytest.raises(asyncio.TimeoutError):
        await first.next(timeout=0.05)  # unsubscribed: told nothing more
