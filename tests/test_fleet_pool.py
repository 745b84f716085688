"""A fleet node under many devices at once: its Redis connections come from a bounded
pool that waits for a free connection, so hundreds of devices logging in together
all get in; a wait that runs out is one retryable ``service_unavailable`` for that
request (the node stays ready, nothing crashes). Real Redis, a real node process
(the fleet zipapp, without S3: the files stay in its data dir)."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess
from tests.engines import RedisEngine
from tests.fleetproc import FLEET_PYZ, wait_for
from tests.wireclient import WireDevice

DEVICES = 400


def start_node(tmp_path: Path, redis: RedisEngine, *extra: str) -> tuple[ServerProcess, int]:
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"dev{i} pw{i}\n" for i in range(DEVICES)))
    data = tmp_path / "node"
    data.mkdir()
    argv = [sys.executable, str(FLEET_PYZ), "server", "0", "5", "--host", "127.0.0.1",
            "--credentials", str(creds), "--data-dir", str(data), "--log-format", "json",
            "--admin-port", "0", "--login-rate", "0", "--max-connections", "2000",
            "--redis", redis.url, "--redis-prefix", tmp_path.name[-40:].replace(" ", "_"),
            "--node-id", "pool", *extra]
    node = ServerProcess(argv, data)
    ready = wait_for(lambda: [e for e in node.read_events() if e.get("event") == "admin_ready"])
    assert ready
    return node, int(ready[0]["port"])


def healthz(admin: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def login_all(port: int, n: int) -> tuple[list[WireDevice], list[dict[str, Any]]]:
    """``n`` devices connect, then all send their login at once."""
    devices = list(await asyncio.gather(*(WireDevice.connect(port) for _ in range(n))))
    replies = await asyncio.gather(*(dev.login(f"dev{i}", f"pw{i}")
                                     for i, dev in enumerate(devices)))
    return devices, list(replies)


def test_hundreds_of_devices_log_in_at_once(tmp_path: Path, redis_engine: RedisEngine) -> None:
    node, admin = start_node(tmp_path, redis_engine)
    try:
        async def run() -> list[dict[str, Any]]:
            devices, replies = await login_all(node.port, DEVICES)
            # And each runs a command that needs Redis, all at once.
            listed = await asyncio.gather(*(d.call({"type": "list_devices"}) for d in devices))
            for dev in devices:
                await dev.close()
            return replies + list(listed)
        replies = asyncio.run(run())
        refused = [r for r in replies if r["type"] != "ok"]
        assert refused == [], refused[:3]
        assert healthz(admin) == 200
        assert not [e for e in node.read_events() if e.get("event") == "redis_unavailable"]
        # And it stops promptly afterwards (its loops reading Redis end on the first try).
        node.proc.terminate()
        assert node.proc.wait(15) == 0
        assert [e for e in node.read_events() if e.get("event") == "fleet_left"]
    finally:
        node.stop()


def test_a_pool_wait_that_runs_out_is_retryable(tmp_path: Path,
                                                redis_engine: RedisEngine) -> None:
    # One connection and almost no patience: most of 400 logins at once must wait out.
    node, admin = start_node(tmp_path, redis_engine, "--redis-max-connections", "1",
                             "--redis-pool-timeout", "0.005")
    try:
        async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            devices, replies = await login_all(node.port, DEVICES)
            # Those refused try again one at a time (as a device backs off and retries),
            # on the same connection: they get in.
            again = []
            for i, (dev, reply) in enumerate(zip(devices, replies)):
                if reply["type"] != "ok":
                    for k in range(10):  # backing off, as a device does
                        retry = await dev.login(f"dev{i}", f"pw{i}")
                        if retry.get("code") != "service_unavailable":
                            break
                        await asyncio.sleep(min(0.5, 0.05 * 2 ** k))
                    again.append(retry)
            for dev in devices:
                await dev.close()
            return replies, again
        replies, again = asyncio.run(run())
        busy = [r for r in replies if r["type"] != "ok"]
        assert busy, "no login had to wait out the pool"
        assert {r["code"] for r in busy} == {"service_unavailable"}, busy[:3]
        assert all("busy" in r["message"] and "try again" in r["message"] for r in busy)
        assert [r["type"] for r in again] == ["ok"] * len(busy), again[:3]
        # A busy pool is not an outage: the node stays ready and says nothing of Redis down.
        assert healthz(admin) == 200
        events = node.read_events()
        assert not [e for e in events if e.get("event") == "redis_unavailable"]
        assert [e for e in events if e.get("event") == "redis_pool_busy"]
        assert not [e for e in events if "Traceback" in json.dumps(e)]
    finally:
        node.stop()
