"""The replies to the requests of one read leave the server in one write
(connection.py's cork): a hello and the login sent with it are answered in one TCP
segment, as MQTT's CONNECT is by one CONNACK. Counted by the device's kernel
(TCP_INFO's data segments received), on a real loopback connection."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

import pytest

from edgenet.config import ServerConfig
from edgenet.server import connection
from edgenet.wire.frames import encode_frame
from tests.conftest import start_server

#: struct tcp_info (linux/tcp.h): ``tcpi_data_segs_in`` is the __u32 at byte 152.
DATA_SEGS_IN = 152

HELLO = {"type": "hello", "version": 1}
LOGIN = {"type": "login", "id": 1, "name": "alpha", "password": "alphapass", "udp_port": 9999}


def data_segments_in(sock: Any) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, DATA_SEGS_IN + 8)
    return int(struct.unpack_from("I", info, DATA_SEGS_IN)[0])


async def exchange(port: int, requests: list[dict[str, Any]], answers: int
                   ) -> tuple[list[dict[str, Any]], int]:
    """Send ``requests`` in one write; the first ``answers`` frames back, and how many
    data segments carried everything the server sent within 0.3 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(encode_frame(r) for r in requests))
        frames = []
        for _ in range(answers):
            (n,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))
            frames.append(json.loads(await reader.readexactly(n)))
        await asyncio.sleep(0.3)  # nothing more is on its way
        return frames, data_segments_in(writer.get_extra_info("socket"))
    finally:
        writer.close()


@pytest.mark.parametrize("cork_max,segments", [(connection.CORK_MAX, 1), (0, 2)],
                         ids=["corked", "control-without-the-cork"])
async def test_a_hello_and_its_login_are_answered_in_one_segment(
        server_config: ServerConfig, monkeypatch: pytest.MonkeyPatch, cork_max: int,
        segments: int) -> None:
    """Corked: one data segment. The control, every reply written at once: two."""
    monkeypatch.setattr(connection, "CORK_MAX", cork_max)
    server = await start_server(server_config)
    try:
        frames, seen = await exchange(server.port, [HELLO, LOGIN], 2)
    finally:
        await server.close()
    assert [f["type"] for f in frames] == ["hello", "ok"]
    assert frames[1]["id"] == 1
    assert seen == segments


async def test_replies_keep_their_order_around_the_cork(server_config: ServerConfig) -> None:
    """hello, login and a ping in one write: answered in that order (the ping's ack
    after the login's ok, which a task wrote)."""
    server = await start_server(server_config)
    try:
        frames, _ = await exchange(server.port, [HELLO, LOGIN, {"type": "ping", "id": 2}], 3)
    finally:
        await server.close()
    assert [(f["type"], f.get("id")) for f in frames] == [("hello", None), ("ok", 1), ("ok", 2)]
