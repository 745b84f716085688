"""A minimal device speaking the framed protocol, for tests (no client shell involved)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from edgenet.wire.frames import (
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    Header,
    encode_frame,
)


class WireDevice:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()
        self.next_id = 0
        self.pings = 0

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", hello: bool = True) -> WireDevice:
        reader, writer = await asyncio.open_connection(host, port)
        dev = cls(reader, writer)
        if hello:
            reply = await dev.call({"type": "hello", "version": 1})
            assert reply["type"] == "hello", reply
        return dev

    async def recv(self, timeout: float = 10.0, answer_pings: bool = True) -> dict[str, Any] | None:
        """The next frame's header, or None when the server closed the connection."""
        async with asyncio.timeout(timeout) if hasattr(asyncio, "timeout") else _Null():
            while True:
                ev = self.decoder.next_event()
                if ev is NEED_DATA:
                    data = await self.reader.read(65536)
                    self.decoder.receive_data(data)
                    continue
                if isinstance(ev, Closed):
                    return None
                if isinstance(ev, (BodyChunk, BodyEnd)):
                    continue
                assert isinstance(ev, Header)
                if ev.fields.get("type") == "ping" and answer_pings:
                    self.pings += 1
                    self.writer.write(encode_frame({"type": "pong", "id": ev.fields["id"]}))
                    continue
                return ev.fields

    async def call(self, fields: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        if fields.get("type") != "hello" and "id" not in fields:
            self.next_id += 1
            fields = {**fields, "id": self.next_id}
        self.writer.write(encode_frame(fields, body))
        await self.writer.drain()
        reply = await self.recv()
        assert reply is not None, f"connection closed instead of a reply to {fields.get('type')}"
        return reply

    async def login(self, name: str, password: str, udp_port: int = 9999) -> dict[str, Any]:
        return await self.call({"type": "login", "name": name, "password": password,
                                "udp_port": udp_port})

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):  # already reset: closed anyway
            await self.writer.wait_closed()


class _Null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None
