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
from tests.wireclient import WireDevice

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


#: A device speaking the framed protocol over a real TCP connection.
Device = WireDevice


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
        server = EdgeServer(config, Credentials.load(creds), events=events)
        admin = install_admin(server)
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
