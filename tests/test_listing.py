"""AED replies assembled from the cached, joined device entries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgenet.server.listing import DeviceListing
from edgenet.server.presence import ActiveDevices
from edgenet.wire.frames import FrameDecoder, Header


def decode(pieces: list[bytes | memoryview]) -> dict[str, Any]:
    dec = FrameDecoder(max_header=16 * 2**20)
    dec.receive_data(b"".join(bytes(p) for p in pieces))
    ev = dec.next_event()
    assert isinstance(ev, Header)
    return ev.fields


@pytest.mark.parametrize("n", [1, 2, 3, 7])
async def test_every_position_of_the_asker_is_cut_out(n: int) -> None:
    devices = ActiveDevices()
    names = [f"d{i}" for i in range(n)]
    for i, name in enumerate(names):
        await devices.join(name, "127.0.0.1", 1000 + i, 1_700_000_000.0 + i)
    listing = DeviceListing(devices)
    for asker in names + ["stranger"]:
        reply = decode(await listing.reply(42, asker))
        assert reply["type"] == "ok" and reply["id"] == 42
        listed = [d["name"] for d in reply["devices"]]
        assert listed == [x for x in names if x != asker]


async def test_cache_follows_logins_and_logouts() -> None:
    devices = ActiveDevices()
    listing = DeviceListing(devices)
    await devices.join("a", "192.0.2.1", 1, 0.0)
    assert decode(await listing.reply(1, "x"))["devices"] == [
        {"name": "a", "ip": "192.0.2.1", "udp_port": 1, "since": 0.0,
         "since_text": decode(await listing.reply(1, "x"))["devices"][0]["since_text"]}]
    await devices.join("a", "192.0.2.2", 2, 1.0)  # takeover: new address
    await devices.join("b", "192.0.2.3", 3, 2.0)
    reply = decode(await listing.reply(2, "b"))
    assert [(d["name"], d["ip"]) for d in reply["devices"]] == [("a", "192.0.2.2")]
    await devices.evict("a", "disconnected")
    assert decode(await listing.reply(3, "b"))["devices"] == []
    json.dumps(reply)
