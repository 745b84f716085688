"""Soak (``make soak``, marked slow): 500 devices issue commands while 10% of them
disconnect abruptly (RST, some mid-frame), in rounds. After each round no exception
escaped, the server's connections, tasks and active list equal the live devices,
then zero after they log out; traced memory is flat from round to round."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from dataclasses import replace
from typing import Any

import pytest
import structlog

from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.wire.frames import encode_header
from tests.wireclient import WireDevice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

DEVICES = 500
ROUNDS = 4
ROUND_SECONDS = 6.0
BAD_EVENTS = {"connection_crashed", "command_failed", "heartbeat_failed",
              "device_log_write_failed"}


async def device_loop(dev: WireDevice, name: str, rng: random.Random, until: float,
                      doomed: bool) -> bool:
    """Run commands until ``until``; a doomed device drops dead at a random moment.
    Returns True if the device is still connected at the end."""
    loop = asyncio.get_running_loop()
    die_at = loop.time() + rng.random() * ROUND_SECONDS * 0.9 if doomed else float("inf")
    file_id = 0
    while True:
        if loop.time() >= die_at or (doomed and loop.time() >= until):
            if rng.random() < 0.5:  # mid-frame: half an upload, then RST
                dev.writer.write(encode_header({"type": "upload", "id": 1, "file_id": 9},
                                               1000) + b"1\n2\n")
            dev.writer.transport.abort()
            return False
        file_id += 1
        r = await dev.call({"type": "upload", "file_id": file_id % 5},
                           b"".join(b"%d\n" % rng.randint(0, 9999) for _ in range(20)))
        assert r["type"] == "ok", r
        r = await dev.call({"type": "compute", "file_id": file_id % 5,
                            "op": rng.choice(["SUM", "AVERAGE", "MAX", "MIN"])})
        assert r["type"] == "ok", r
        if rng.random() < 0.1:
            assert (await dev.call({"type": "list_devices"}))["type"] == "ok"
        if rng.random() < 0.3:
            assert (await dev.call({"type": "delete", "file_id": file_id % 5}))["type"] == "ok"
        await asyncio.sleep(rng.random() * 0.2)
        if not doomed and loop.time() >= until:
            return True


async def settle(server: EdgeServer, live: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        devices = await server.state.presence.count()
        if len(server.connections) == live and devices == live and len(server._tasks) == live:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled: connections={len(server.connections)} "
                         f"devices={devices} tasks={len(server._tasks)} live={live}")


async def test_soak_500_devices_with_abrupt_disconnects(server_config: ServerConfig) -> None:
    bad: list[dict[str, Any]] = []
    loop_errors: list[dict[str, Any]] = []

    def watch(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") in BAD_EVENTS or method in ("error", "exception", "critical"):
            bad.append(event)
        raise structlog.DropEvent

    structlog.configure(processors=[watch])
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    names = [f"dev{i:03d}" for i in range(DEVICES)]
    creds = Credentials.parse("".join(f"{n} {n}pw\n" for n in names))
    server = EdgeServer(replace(server_config, login_rate=0, heartbeat=2.0,
                                max_connections=DEVICES + 50), creds)
    await server.start()
    tracemalloc.start()
    traced: list[int] = []
    try:
        for round_no in range(ROUNDS):
            rng = random.Random(round_no)
            devices: list[WireDevice] = []
            for i in range(0, DEVICES, 100):
                batch = await asyncio.gather(*(WireDevice.connect(server.port)
                                               for _ in range(100)))
                replies = await asyncio.gather(*(d.login(n, f"{n}pw") for d, n in
                                                 zip(batch, names[i: i + 100])))
                assert all(r["type"] == "ok" for r in replies)
                devices += batch
            doomed = set(rng.sample(range(DEVICES), DEVICES // 10))
            until = loop.time() + ROUND_SECONDS
            alive = await asyncio.gather(*(device_loop(d, names[i], random.Random(i * 7 + round_no),
                                                       until, i in doomed)
                                           for i, d in enumerate(devices)))
            live = sum(alive)
            assert live == DEVICES - len(doomed)
            await settle(server, live)
            assert sorted(d.name for d in await server.state.presence.devices()) == \
                sorted(names[i] for i, ok in enumerate(alive) if ok)
            await asyncio.gather(*(d.call({"type": "logout"}) for d, ok in zip(devices, alive)
                                   if ok))
            await asyncio.gather(*(d.close() for d in devices))
            await settle(server, 0)
            assert (server.config.data_dir / "edge-device-log.txt").read_text() == ""
            gc.collect()
            await asyncio.sleep(0.2)
            traced.append(tracemalloc.get_traced_memory()[0])
        assert not bad, bad[:5]
        assert not loop_errors, loop_errors[:5]
        assert list(server.config.data_dir.glob(".upload-*")) == []
        # Flat: after the first round (caches, the lockout table, interned names warm up)
        # the traced memory does not keep growing.
        growth = max(traced[1:]) - traced[1]
        assert growth < 8 * 2**20, traced
    finally:
        tracemalloc.stop()
        structlog.reset_defaults()
        await server.close()
