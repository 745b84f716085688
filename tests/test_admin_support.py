"""Helpers for the admin API tests: a tiny framed-protocol device, a real server
with its admin API in-process, and structlog feeding an EventBuffer quietly.

(Named ``test_admin_*`` to sit with the admin tests; it holds no test itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from admin_api import AdminService, EventBuffer, install_admin
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.wire.frames import (
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    Header,
    encode_frame,
)

TOKEN = "s3cret-admin-token"
CREDENTIALS = "alpha alphapass\nbeta betapass\ngamma gammapass\n"
PASSWORDS = ("alphapass", "betapass", "gammapass")


@contextlib.contextmanager
def structlog_into(buffer: EventBuffer) -> Iterator[None]:
    """Route structlog through ``buffer`` (and nowhere else) for a test; restore after."""
    saved = structlog.get_config()

    def drop(logger: Any, name: str, event: Any) -> Any:
        raise structlog.DropEvent

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        buffer,
        drop,
    ], cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**saved)


class Device:
    """A device speaking the framed protocol over a real TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder()
        self.next_id = 0

    @classmethod
    async def connect(cls, port: int) -> Device:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        dev = cls(reader, writer)
        dev.writer.write(encode_frame({"type": "hello", "version": 1}))
        reply = await dev.recv()
        assert reply is not None and reply["type"] == "hello", reply
        return dev

    async def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next header (pings answered), or None once the server closed."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            ev = self.decoder.next_event()
            if ev is NEED_DATA:
                left = deadline - time.monotonic()
                data = await asyncio.wait_for(self.reader.read(65536), max(0.01, left))
                self.decoder.receive_data(data)
                continue
            if isinstance(ev, Closed):
                return None
            if isinstance(ev, (BodyChunk, BodyEnd)):
                continue
            assert isinstance(ev, Header)
            if ev.fields.get("type") == "ping":
                self.writer.write(encode_frame({"type": "pong", "id": ev.fields["id"]}))
                continue
            return ev.fields
        raise AssertionError("too many frames")

    async def call(self, fields: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        self.next_id += 1
        self.writer.write(encode_frame({**fields, "id": self.next_id}, body))
        await self.writer.drain()
        reply = await self.recv()
        assert reply is not None, f"closed instead of a reply to {fields['type']}"
        return reply

    async def login(self, name: str, password: str, udp_port: int = 40000) -> dict[str, Any]:
        return await self.call({"type": "login", "name": name, "password": password,
                                "udp_port": udp_port})

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass
class LiveServer:
    server: EdgeServer
    admin: AdminService
    events: EventBuffer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.port}"


@contextlib.asynccontextmanager
async def live_server(tmp_path: Path, token: str | None = TOKEN, max_attempts: int = 3,
                      block_seconds: float = 60.0) -> AsyncIterator[LiveServer]:
    """A real EdgeServer on 127.0.0.1:0 with its admin API on 127.0.0.1:0."""
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    config = ServerConfig(port=0, max_attempts=max_attempts, host="127.0.0.1",
                          credentials=creds, data_dir=tmp_path / "data",
                          block_seconds=block_seconds, admin_host="127.0.0.1", admin_port=0,
                          admin_token=token)
    events = EventBuffer()
    with structlog_into(events):
        server = EdgeServer(config, Credentials.load(creds))
        admin = install_admin(server, events)
        await server.start()
        try:
            yield LiveServer(server, admin, events)
        finally:
            await server.close()


def http_json(url: str, token: str | None = None, method: str = "GET",
              timeout: float = 5.0) -> tuple[int, Any]:
    """A blocking HTTP request (for subprocess tests, or through asyncio.to_thread)."""
    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll an async or plain predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
