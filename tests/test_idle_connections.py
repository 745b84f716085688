"""An idle device connection holds no task: the server's connections are protocols
that start a task only while a request is served (connection.py)."""

from __future__ import annotations

import asyncio
import time

from edgenet.config import ServerConfig
from tests.conftest import start_server
from tests.wireclient import WireDevice


def new_tasks(before: set[asyncio.Task[object]]) -> list[str]:
    """The tasks of this loop started since ``before`` and still running, by their
    coroutine's name."""
    return sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks()
                  if t not in before and not t.done())


async def test_idle_connections_hold_no_task(server_config: ServerConfig) -> None:
    server = await start_server(server_config)
    devices: list[WireDevice] = []
    before = set(asyncio.all_tasks())
    try:
        for _ in range(40):  # hello answered, waiting for a login
            devices.append(await WireDevice.connect(server.port))
        for name in ("alpha", "beta", "gamma"):
            dev = await WireDevice.connect(server.port)
            devices.append(dev)
            assert (await dev.login(name, f"{name}pass"))["type"] == "ok"
        assert (await devices[-1].call({"type": "ping"}))["type"] == "ok"
        # The last task (the last login's) ends once its reply is written.
        deadline = time.monotonic() + 10
        seen = new_tasks(before)
        while len(seen) > 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            seen = new_tasks(before)
        # At most a few of the server's own (the device log's writer), never one a device.
        assert len(seen) <= 3, f"tasks running for 43 idle connections after 10 s: {seen}"
        assert len(server.connections) == 43
        # Idle, and still served: a command on the first logged-in device.
        assert (await devices[40].call({"type": "ping"}))["type"] == "ok"
    finally:
        await asyncio.gather(*(d.close() for d in devices))
        await server.close()
