"""The behaviour every ``Presence`` implementation must have (see tests/backends.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgenet.server.interfaces import ActiveDevice, EvictReason, Presence
from tests.backends import PRESENCE, BackendEnv, Opener


@pytest.fixture(params=PRESENCE)
async def presence(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Presence]:
    opener: Opener = request.param
    async with opener(BackendEnv(tmp_path, request.node.name)) as impl:
        yield impl


class Told:
    """An eviction handler that records what it is told."""

    def __init__(self) -> None:
        self.evicted: list[tuple[ActiveDevice, EvictReason]] = []

    def __call__(self, device: ActiveDevice, reason: EvictReason) -> None:
        self.evicted.append((device, reason))


async def test_join_lists_in_login_order(presence: Presence) -> None:
    assert await presence.count() == 0 and await presence.devices() == []
    a = (await presence.join("a", "192.0.2.1", 1, 10.0)).device
    b = (await presence.join("b", "192.0.2.2", 2, 11.0)).device
    assert (a.name, a.ip, a.udp_port, a.since) == ("a", "192.0.2.1", 1, 10.0)
    assert re.fullmatch(r"[0-9a-f]{16}", a.session_id) and a.session_id != b.session_id
    assert [d.name for d in await presence.devices()] == ["a", "b"]
    assert await presence.count() == 2
    assert await presence.get("a") == a and await presence.get("nobody") is None


async def test_takeover_replaces_and_announces_the_older_entry(presence: Presence) -> None:
    told = Told()
    presence.on_evict(told)
    first = (await presence.join("a", "192.0.2.1", 1, 0.0)).device
    await presence.join("b", "192.0.2.2", 2, 1.0)
    joined = await presence.join("a", "192.0.2.3", 3, 2.0)
    assert joined.replaced == first
    assert told.evicted == [(first, "replaced")]
    assert [d.name for d in await presence.devices()] == ["b", "a"]  # a logged in last
    assert await presence.get("a") == joined.device and joined.device.ip == "192.0.2.3"
    assert joined.device.session_id != first.session_id


async def test_a_replaced_session_cannot_remove_its_successor(presence: Presence) -> None:
    old = (await presence.join("a", "192.0.2.1", 1, 0.0)).device
    new = (await presence.join("a", "192.0.2.3", 3, 2.0)).device
    assert await presence.leave("a", old.session_id) is None
    assert await presence.get("a") == new
    assert await presence.leave("a", new.session_id) == new
    assert await presence.get("a") is None and await presence.count() == 0
    assert await presence.leave("a", new.session_id) is None


async def test_evict_removes_whoever_holds_the_name(presence: Presence) -> None:
    told = Told()
    presence.on_evict(told)
    dev = (await presence.join("a", "192.0.2.1", 1, 0.0)).device
    assert await presence.evict("a", "disconnected") == dev
    assert told.evicted == [(dev, "disconnected")]
    assert await presence.get("a") is None
    assert await presence.evict("a", "revoked") is None
    assert len(told.evicted) == 1  # nothing more announced


async def test_version_changes_with_the_list_only(presence: Presence) -> None:
    v0 = await presence.version()
    dev = (await presence.join("a", "192.0.2.1", 1, 0.0)).device
    v1 = await presence.version()
    assert v1 != v0
    await presence.get("a")
    await presence.devices()
    await presence.leave("a", "not-its-session")
    assert await presence.version() == v1
    await presence.leave("a", dev.session_id)
    v2 = await presence.version()
    assert v2 not in (v0, v1)
    await presence.join("b", "192.0.2.2", 2, 1.0)
    await presence.evict("b", "disconnected")
    assert await presence.version() not in (v0, v1, v2)
