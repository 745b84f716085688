"""The device's asyncio link (``ServerLink``) over real loopback sockets, against a
scripted server that does what the real one never should: the lines a user gets
when a server misbehaves, and pongs that wait for an upload's body."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edgenet.client.dial import open_link
from edgenet.client.errors import ConnectFailed, ReplyTimeout, ServerGone
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA, BodyChunk, BodyEnd, FrameDecoder, Header, encode_frame

HELLO = encode_frame(m.reply_to_fields(m.HelloReply(1, "scripted", 10.0)))


class ScriptedPeer:
    """The server's end of one connection: reads the device's frames, writes bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()

    async def frame(self) -> tuple[dict[str, Any], bytes]:
        """The next frame from the device: its header and its whole body."""
        header: dict[str, Any] | None = None
        body = bytearray()
        while True:
            ev = self.decoder.next_event()
            if ev is NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 10)
                assert data, "the device closed the connection"
                self.decoder.receive_data(data)
            elif isinstance(ev, Header):
                header = ev.fields
                if not ev.body:
                    return header, b""
            elif isinstance(ev, BodyChunk):
                body += ev.data
            elif isinstance(ev, BodyEnd):
                assert header is not None
                return header, bytes(body)

    def send(self, data: bytes) -> None:
        self.writer.write(data)


Script = Callable[[ScriptedPeer], Awaitable[None]]


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[int]:
    done: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        done.append(task)
        try:
            await script(ScriptedPeer(reader, writer))
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        for task in done:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def greet(peer: ScriptedPeer) -> None:
    fields, _ = await peer.frame()
    assert fields == {"type": "hello", "version": 1, "agent": fields["agent"], "versions": [1, 2, 3]}
    peer.send(HELLO)


async def test_every_request_is_typed_on_the_wire_and_in_the_reply(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def script(peer: ScriptedPeer) -> None:
        await greet(peer)
        replies: list[m.Reply] = [m.LoginOk(1, "s1", "alpha"), m.ComputeOk(2, 5, "SUM", "12"),
                   m.DeleteOk(3, 5, 3), m.ListDevicesOk(4, ()),
                   m.LookupOk(5, "beta", "127.0.0.1", 7), m.Ack(6),
                   m.UploadOk(7, 9, 3, 6), m.Ack(8)]
        for reply in replies:
            fields, body = await peer.frame()
            seen.append({**fields, "body": body})
            peer.send(encode_frame(m.reply_to_fields(reply)))

    data = tmp_path / "data.txt"
    data.write_bytes(b"1\n2\n3\n")
    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        assert (await link.hello()).server == "scripted" and link.heartbeat == 10.0
        assert await link.login("alpha", "pw", 6001) == m.LoginOk(1, "s1", "alpha")
        assert await link.compute(5, "SUM") == m.ComputeOk(2, 5, "SUM", "12")
        assert await link.delete(5) == m.DeleteOk(3, 5, 3)
        assert await link.list_devices() == m.ListDevicesOk(4, ())
        assert await link.lookup("beta") == m.LookupOk(5, "beta", "127.0.0.1", 7)
        assert await link.ping(5.0) == m.Ack(6)
        assert await link.upload(9, data) == m.UploadOk(7, 9, 3, 6)
        assert await link.logout() is True
        await link.close()
    assert [f["type"] for f in seen] == ["login", "compute", "delete", "list_devices", "lookup",
                                         "ping", "upload", "logout"]
    assert seen[0] == {"type": "login", "id": 1, "name": "alpha", "password": "pw",
                       "udp_port": 6001, "body": b""}
    assert seen[6] == {"type": "upload", "id": 7, "file_id": 9, "body": b"1\n2\n3\n"}


async def test_a_ping_during_an_upload_is_answered_after_the_body(tmp_path: Path) -> None:
    size = 8 * 2**20
    order: list[str] = []

    async def script(peer: ScriptedPeer) -> None:
        await greet(peer)
        # The header only, then a ping while the body is still coming.
        while not isinstance(peer.decoder.next_event(), Header):
            peer.decoder.receive_data(await peer.reader.read(65536))
        peer.send(encode_frame({"type": "ping", "id": 41}))
        got = 0
        while True:
            ev = peer.decoder.next_event()
            if ev is NEED_DATA:
                peer.decoder.receive_data(await asyncio.wait_for(peer.reader.read(65536), 10))
            elif isinstance(ev, BodyChunk):
                got += len(ev.data)
            elif isinstance(ev, BodyEnd):
                order.append(f"body {got}")
                break
            else:
                order.append(f"frame inside the body: {ev}")
        fields, _ = await peer.frame()
        order.append(f"{fields['type']} {fields['id']}")
        peer.send(encode_frame(m.reply_to_fields(m.UploadOk(1, 3, 0, size))))

    big = tmp_path / "big.txt"
    big.write_bytes(b"7\n" * (size // 2))
    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        await link.hello()
        assert await link.upload(3, big) == m.UploadOk(1, 3, 0, size)
        await link.close()
    assert order == [f"body {size}", "pong 41"]


@pytest.mark.parametrize(("reply", "line"), [
    ({"type": "hello", "version": 4, "server": "future"},
     "the server speaks protocol version 4; this client speaks versions 1, 2, 3"),
    ({"type": "error", "id": None, "code": "server_busy", "message": "at its limit\nsorry"},
     "at its limit sorry"),
    ({"type": "notice", "kind": "shutdown", "message": ""},
     ("the server is shutting down before answering hello; "
     "if it uses TLS, start the client with --tls-ca FILE")),
])
async def test_hello_failures_are_one_line(reply: dict[str, Any], line: str) -> None:
    async def script(peer: ScriptedPeer) -> None:
        await peer.frame()
        peer.send(encode_frame(reply))

    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        with pytest.raises(ConnectFailed) as info:
            await link.hello()
        await link.close()
    assert info.value.message == line


@pytest.mark.parametrize(("reply", "line"), [
    ({"type": "ok", "id": 1, "file_id": 5, "op": "SUM"},
     ("the server broke the protocol (malformed ok frame: 'result' must be a string); "
     "the connection was closed")),
    ({"type": "ok", "id": 77},
     ("the server broke the protocol (a reply to request 77, which is not waiting for one); "
     "the connection was closed")),
    ({"type": "notice", "kind": "replaced", "message": ""},
     "you logged in from another place; this session was replaced"),
    ({"type": "error", "id": None, "code": "bad_frame", "message": ""},
     "the server refused the request (bad_frame)"),
])
async def test_a_misbehaving_server_ends_the_link_with_one_line(reply: dict[str, Any],
                                                               line: str) -> None:
    async def script(peer: ScriptedPeer) -> None:
        await greet(peer)
        await peer.frame()
        peer.send(encode_frame(reply))

    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        await link.hello()
        with pytest.raises(ServerGone) as info:
            await link.compute(5, "SUM")
        assert await asyncio.wait_for(link.closed, 5) == line
        assert link.notice_kind == ("replaced" if reply["type"] == "notice" else None)
        with pytest.raises(ServerGone):
            await link.delete(5)  # nothing more is sent on a closed link
        assert await link.logout() is False
        await link.close()
    assert info.value.message == line


async def test_a_silent_server_times_the_request_out_and_a_late_reply_is_skipped() -> None:
    async def script(peer: ScriptedPeer) -> None:
        await greet(peer)
        await peer.frame()  # the ping: answered only after the next request
        fields, _ = await peer.frame()
        peer.send(encode_frame(m.reply_to_fields(m.Ack(1))))
        peer.send(encode_frame(m.reply_to_fields(m.ComputeOk(fields["id"], 5, "MAX", "9"))))
        await asyncio.wait_for(peer.reader.read(), 10)  # until the device closes

    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        await link.hello()
        with pytest.raises(ReplyTimeout):
            await link.ping(0.2)  # nothing comes within the timeout
        assert await link.compute(5, "MAX") == m.ComputeOk(2, 5, "MAX", "9")
        assert not link.closed.done()
        await link.close()


async def test_a_login_sent_with_the_hello_goes_in_one_round_trip() -> None:
    """``hello(login=...)`` writes hello and login at once: the server's first read holds
    both, before it has answered anything; ``login`` with the same arguments returns
    the answer to that login (no second one is sent)."""
    first_read: list[bytes] = []
    later: list[dict[str, Any]] = []

    async def script(peer: ScriptedPeer) -> None:
        data = await asyncio.wait_for(peer.reader.read(65536), 10)
        first_read.append(data)
        peer.decoder.receive_data(data)
        peer.send(HELLO + encode_frame(m.reply_to_fields(m.LoginOk(1, "s1", "alpha"))))
        # Anything more the device sends (a second login would be a bug) until it closes.
        while (data := await asyncio.wait_for(peer.reader.read(65536), 10)):
            peer.decoder.receive_data(data)
            while isinstance(ev := peer.decoder.next_event(), Header):
                later.append(ev.fields)

    async with scripted_server(script) as port:
        link = await open_link("127.0.0.1", port)
        assert (await link.hello(login=("alpha", "pw", 6001))).server == "scripted"
        assert await link.login("alpha", "pw", 6001) == m.LoginOk(1, "s1", "alpha")
        await link.close()
    decoder = FrameDecoder()
    decoder.receive_data(first_read[0])
    heads = []
    while isinstance(ev := decoder.next_event(), Header):
        heads.append(ev.fields)
    assert [h["type"] for h in heads] == ["hello", "login"]
    assert heads[1] == {"type": "login", "id": 1, "name": "alpha", "password": "pw",
                        "udp_port": 6001}
    assert later == []
