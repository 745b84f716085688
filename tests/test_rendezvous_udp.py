"""The rendezvous and relay over real loopback sockets, without namespaces (so this runs as
any user): a server in this process with its UDP side, and two devices' full client stack
(ServerLink, PeerLink, the UVF endpoint and its PathAgent). Behind NATs the same runs in
test_nat_netns.py; here the direct path is made to fail by dropping probes on purpose."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgenet.client.connection import ServerLink
from edgenet.client.execute import lookup_peer
from edgenet.client.peer import PeerLink
from edgenet.client.rendezvous import join_rendezvous
from edgenet.config import ServerConfig
from edgenet.rudp import TransferOptions
from edgenet.rudp import natpacket as npk
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from tests.conftest import CREDENTIALS
from tests.filedata import make_file, sha


@dataclass
class Dev:
    name: str
    link: ServerLink
    peers: PeerLink
    lines: list[str]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EdgeServer]:
    config = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "srv",
                          relay_device_rate=0)
    srv = EdgeServer(config, Credentials.parse(CREDENTIALS))
    await srv.start()
    yield srv
    await srv.close()


async def device(srv: EdgeServer, name: str, data_dir: Path) -> Dev:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    link = ServerLink(reader, writer)
    await link.hello()
    peers = PeerLink.bind(socket.AF_INET, 0, data_dir,
                          options=TransferOptions(probe_timeout=0.3, idle_timeout=3.0))
    assert (await link.login(name, f"{name}pass", peers.port)).__class__.__name__ == "LoginOk"
    lines: list[str] = []
    await peers.start(name, lambda target: lookup_peer(link, target), lines.append)
    assert await join_rendezvous(link, peers)
    return Dev(name, link, peers, lines)


async def close(*devs: Dev) -> None:
    for dev in devs:
        await dev.peers.aclose()
        await dev.link.close()


async def registered(dev: Dev) -> None:
    endpoint = dev.peers._endpoint
    assert endpoint is not None
    for _ in range(200):
        if endpoint.paths.reflexive is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{dev.name} never registered")


def drop_probes(dev: Dev) -> None:
    """This device's NAT eats every probe (both ways look dead): only the relay is left."""
    endpoint = dev.peers._endpoint
    assert endpoint is not None
    core = endpoint.paths.core
    original = core.receive_datagram

    def receive(data: bytes, addr: object, key: tuple[str, int], now: float) -> None:
        if data[3] not in (npk.PathType.PROBE, npk.PathType.PROBE_ACK):
            original(data, addr, key, now)  # type: ignore[arg-type]

    core.receive_datagram = receive  # type: ignore[method-assign]


async def test_registration_teaches_the_server_the_reflexive_address(
        server: EdgeServer, tmp_path: Path) -> None:
    alpha = await device(server, "alpha", tmp_path / "a")
    try:
        await registered(alpha)
        endpoint = alpha.peers._endpoint
        assert endpoint is not None
        assert endpoint.paths.reflexive == ("127.0.0.1", alpha.peers.bound_port)
        rendezvous = server.state.rendezvous
        assert rendezvous is not None and rendezvous.port == server.port  # the same number
        assert rendezvous.addresses("alpha")[1] == ("127.0.0.1", alpha.peers.bound_port)
    finally:
        await close(alpha)


async def test_on_one_host_the_direct_path_is_used(server: EdgeServer, tmp_path: Path) -> None:
    alpha, beta = await device(server, "alpha", tmp_path / "a"), await device(
        server, "beta", tmp_path / "b")
    try:
        await registered(alpha)
        await registered(beta)
        src = make_file(tmp_path / "a" / "f.bin", 3_000_000)
        started = await alpha.peers.start_send("beta", "f.bin")
        assert started.ok and started.outcome is not None
        end = await asyncio.wait_for(started.outcome, 20)
        assert end.ok and end.path == "direct", end.text
        assert end.text == "f.bin has been uploaded to beta (3000000 bytes, direct)"
        assert sha(tmp_path / "b" / "alpha_f.bin") == sha(src)
        assert server.state.rendezvous is not None
        assert server.state.rendezvous.counters.relayed_bytes == 0
    finally:
        await close(alpha, beta)


async def test_when_probes_die_the_relay_carries_the_file_and_nobody_else_gets_in(
        server: EdgeServer, tmp_path: Path) -> None:
    alpha, beta = await device(server, "alpha", tmp_path / "a"), await device(
        server, "beta", tmp_path / "b")
    third = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    third.bind(("127.0.0.1", 0))
    third.setblocking(False)
    try:
        await registered(alpha)
        await registered(beta)
        drop_probes(alpha)
        drop_probes(beta)
        src = make_file(tmp_path / "a" / "f.bin", 4_000_000)
        started = await alpha.peers.start_send("beta", "f.bin")
        assert started.ok and started.outcome is not None
        await asyncio.sleep(0.5)  # past the probe timeout: relayed by now
        endpoint = alpha.peers._endpoint
        assert endpoint is not None
        tokens = list(endpoint.paths.core._relayed)
        assert len(tokens) == 1
        udp = ("127.0.0.1", server.port)
        forged = [npk.relay_prefix(tokens[0]) + b"UV\x01\x07" + bytes(8),  # right token
                  npk.relay_prefix(tokens[0] ^ 1) + b"UV\x01\x07" + bytes(8),
                  npk.encode_register(npk.Register(1, b"\x01" * 16)), b"\x00" * 1400]
        for datagram in forged * 50:
            third.sendto(datagram, udp)
        end = await asyncio.wait_for(started.outcome, 30)
        assert end.ok and end.path == "relayed", end.text
        assert end.text.endswith("(4000000 bytes, relayed)")
        assert sha(tmp_path / "b" / "alpha_f.bin") == sha(src)
        rendezvous = server.state.rendezvous
        assert rendezvous is not None
        counters = rendezvous.counters
        assert counters.relayed_bytes > 4_000_000
        assert counters.dropped["wrong_source"] >= 50 and counters.dropped["unknown_token"] >= 100
        assert counters.dropped["malformed"] >= 50
        with pytest.raises(BlockingIOError):
            third.recv(65536)  # not one byte came back to the third party
    finally:
        third.close()
        await close(alpha, beta)


async def test_a_session_that_ends_leaves_no_relay_behind(server: EdgeServer,
                                                        tmp_path: Path) -> None:
    alpha, beta = await device(server, "alpha", tmp_path / "a"), await device(
        server, "beta", tmp_path / "b")
    rendezvous = server.state.rendezvous
    assert rendezvous is not None
    try:
        await registered(beta)
        reply = await alpha.link.connect("beta")
        assert reply.__class__.__name__ == "ConnectOk"
        assert rendezvous.allocation_count() == 1
        await alpha.link.logout()
        for _ in range(100):
            if not rendezvous.registered("alpha"):
                break
            await asyncio.sleep(0.01)
        assert not rendezvous.registered("alpha") and rendezvous.allocation_count() == 0
    finally:
        await close(alpha, beta)
