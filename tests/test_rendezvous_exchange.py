"""Protocol version 2's exchanges through both sans-I/O cores joined in memory (as
test_memory_pair.py): the versioned hello and its fallback, ``udp_register``, ``connect``
and the ``peer`` frame the receiving device is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgenet.client import protocol as cp
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.server.relaycaps import RelayLimits
from edgenet.server.rendezvous import Rendezvous
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA
from tests.conftest import CREDENTIALS
from tests.test_memory_pair import AGENT, Device

RELAY_PORT = 47001


@pytest.fixture
async def edge_server(tmp_path: Path) -> AsyncIterator[EdgeServer]:
    config = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "srv")
    server = EdgeServer(config, Credentials.parse(CREDENTIALS), clock=lambda: 1_764_095_312.0)
    state = await server.open()
    state.rendezvous = Rendezvous(RelayLimits(0, 0, 0, 0))
    state.rendezvous.port = RELAY_PORT
    yield server


async def device(server: EdgeServer, name: str, versions: tuple[int, ...], ip: str,
                 udp_port: int) -> Device:
    dev = Device(server)
    dev.end.ip = ip
    hello = await dev.call(m.Hello(1, AGENT, versions))
    assert isinstance(hello, m.HelloReply)
    assert hello.version == max(versions or (1,))
    assert isinstance(await dev.call(m.Login(dev.core.next_id(), name, f"{name}pass", udp_port)),
                      m.LoginOk)
    return dev


def pending_frames(dev: Device) -> list[cp.ClientEvent]:
    """What the server sent this device unprompted (since it last asked)."""
    out = dev.end.take_output()
    if not out:
        return []  # (b"" would be the end of the stream)
    dev.core.receive_data(out)
    events = []
    while (ev := dev.core.next_event()) is not NEED_DATA:
        events.append(ev)
    return events


async def test_hello_settles_on_the_highest_common_version(edge_server: EdgeServer) -> None:
    for versions, expected in (((), 1), ((1,), 1), ((1, 2), 2), ((2, 7), 2), ((1, 2, 3), 3)):
        dev = Device(edge_server)
        reply = await dev.call(m.Hello(1, AGENT, versions))
        assert isinstance(reply, m.HelloReply) and reply.version == expected
        assert dev.end.core.version == expected
    dev = Device(edge_server)
    refused = await dev.call(m.Hello(1, AGENT, (4, 5)))
    assert isinstance(refused, m.ErrorReply) and refused.code == "unsupported_version"
    assert "speaks versions 1, 2, 3" in refused.message


async def test_connect_gives_both_devices_the_rendezvous(edge_server: EdgeServer) -> None:
    rendezvous = edge_server.state.rendezvous
    assert rendezvous is not None
    alpha = await device(edge_server, "alpha", (1, 2), "203.0.113.11", 6001)
    beta = await device(edge_server, "beta", (1, 2), "203.0.113.12", 6002)
    reg = await beta.call(m.UdpRegister(beta.core.next_id(),
                                        (m.Candidate("198.51.100.2", 6002, "local"),)))
    assert isinstance(reg, m.UdpRegisterOk) and reg.udp_port == RELAY_PORT
    assert len(bytes.fromhex(reg.token)) == 16
    # beta's REGISTER, as its NAT shows it (another port: a port-randomising NAT)
    from edgenet.rudp import natpacket as npk
    datagram = npk.encode_register(npk.Register(1, bytes.fromhex(reg.token)))
    assert rendezvous.receive_datagram(datagram, ("203.0.113.12", 41234),
                                       ("203.0.113.12", 41234), 0.0) is not None
    reg_a = await alpha.call(m.UdpRegister(alpha.core.next_id(), ()))
    assert isinstance(reg_a, m.UdpRegisterOk) and reg_a.token != reg.token

    ok = await alpha.call(m.Connect(alpha.core.next_id(), "beta"))
    assert isinstance(ok, m.ConnectOk)
    assert (ok.name, ok.ip, ok.udp_port, ok.probe, ok.relay_port) == (
        "beta", "203.0.113.12", 6002, True, RELAY_PORT)
    assert [(c.ip, c.port, c.kind) for c in ok.candidates] == [
        ("203.0.113.12", 6002, "reported"), ("198.51.100.2", 6002, "local"),
        ("203.0.113.12", 41234, "reflexive")]
    assert rendezvous.allocation_count() == 1
    events = pending_frames(beta)
    assert len(events) == 1 and isinstance(events[0], cp.PeerOffered)
    notice = events[0].notice
    assert (notice.name, notice.token, notice.relay_port) == ("alpha", ok.token, RELAY_PORT)
    # alpha has not registered a datagram yet: only its reported address is known
    assert [(c.ip, c.port, c.kind) for c in notice.candidates] == [
        ("203.0.113.11", 6001, "reported")]
    for bad in ("alpha", "nobody"):
        refused = await alpha.call(m.Connect(alpha.core.next_id(), bad))
        assert isinstance(refused, m.ErrorReply)
        assert refused.code == ("self_target" if bad == "alpha" else "not_active")


async def test_a_version_1_receiver_is_offered_to_at_once(edge_server: EdgeServer) -> None:
    alpha = await device(edge_server, "alpha", (1, 2), "203.0.113.11", 6001)
    beta = await device(edge_server, "beta", (), "203.0.113.12", 6002)  # an older client
    ok = await alpha.call(m.Connect(alpha.core.next_id(), "beta"))
    assert isinstance(ok, m.ConnectOk) and not ok.probe and ok.relay_port == 0
    assert pending_frames(beta) == []  # nothing it would not understand
    assert edge_server.state.rendezvous is not None
    assert edge_server.state.rendezvous.allocation_count() == 0
    # an older sender still asks with lookup, and gets today's answer
    lookup = m.Lookup(beta.core.next_id(), "alpha")
    assert await beta.call(lookup) == m.LookupOk(lookup.id, "alpha", "203.0.113.11", 6001)


async def test_with_the_rendezvous_off(edge_server: EdgeServer) -> None:
    edge_server.state.rendezvous = None
    alpha = await device(edge_server, "alpha", (1, 2), "203.0.113.11", 6001)
    beta = await device(edge_server, "beta", (1, 2), "203.0.113.12", 6002)
    refused = await alpha.call(m.UdpRegister(alpha.core.next_id(), ()))
    assert isinstance(refused, m.ErrorReply) and refused.code == "udp_off"
    ok = await alpha.call(m.Connect(alpha.core.next_id(), "beta"))
    assert isinstance(ok, m.ConnectOk) and ok.probe and ok.relay_port == 0
    assert [c.kind for c in ok.candidates] == ["reported"]
    assert isinstance(pending_frames(beta)[0], cp.PeerOffered)


@pytest.mark.parametrize("fields", [
    {"type": "udp_register", "id": 5, "local": [{"ip": "not-an-ip", "port": 1}]},
    {"type": "udp_register", "id": 5, "local": [{"ip": "192.0.2.1", "port": 0}]},
    {"type": "udp_register", "id": 5, "local": [{"ip": "192.0.2.1", "port": 1}] * 9},
    {"type": "udp_register", "id": 5, "local": [{"ip": "192.0.2.1", "port": 1,
                                                 "kind": "reflexive"}]},
    {"type": "connect", "id": 5},
    {"type": "hello", "version": 1, "versions": "2"},
    {"type": "hello", "version": 1, "versions": [True]},
])
def test_malformed_requests_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(m.MessageError):
        m.parse_request(fields)


@pytest.mark.parametrize("fields", [
    {"type": "peer", "name": "a", "token": "zz" * 8, "candidates": [], "relay_port": 1},
    {"type": "peer", "name": "a", "token": "00" * 8, "candidates": {}, "relay_port": 1},
    {"type": "peer", "name": "a", "token": "00" * 8, "candidates": [], "relay_port": -1},
    {"type": "peer", "name": "a", "token": "00" * 7, "candidates": [], "relay_port": 1},
])
def test_malformed_peer_frames_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(m.MessageError):
        m.parse_reply(fields)
