"""Limits: maximum connections, login timeout, a peer that stops reading; and faults:
connections dropped mid-frame, client processes killed at random points."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from structlog.testing import capture_logs

from edgenet.config import ServerConfig
from edgenet.server.connection import WRITE_BUFFER_HIGH
from edgenet.server.logs import FileRecord, parse_device_line
from edgenet.wire.frames import encode_frame, encode_header
from tests.clientproc import client_argv, wait_until
from tests.conftest import ServerProcess, start_server
from tests.wireclient import WireDevice


async def test_max_connections(server_config: ServerConfig) -> None:
    server = await start_server(server_config, max_connections=2)
    try:
        a = await WireDevice.connect(server.port)
        b = await WireDevice.connect(server.port)
        with capture_logs() as logs:
            c = await WireDevice.connect(server.port, hello=False)
            reply = await c.recv()
            assert reply is not None and (reply["type"], reply["code"], reply["id"]) == \
                ("error", "server_busy", None)
            assert "limit of 2 connections" in reply["message"]
            assert await c.recv() is None
        assert any(e["event"] == "connection_refused" for e in logs)
        await a.close()
        for _ in range(100):
            if len(server.connections) < 2:
                break
            await asyncio.sleep(0.02)
        d = await WireDevice.connect(server.port)  # room again
        assert (await d.login("alpha", "alphapass"))["type"] == "ok"
        await asyncio.gather(b.close(), c.close(), d.close())
    finally:
        await server.close()


async def test_login_timeout(server_config: ServerConfig) -> None:
    server = await start_server(server_config, login_timeout=0.5, heartbeat=1.0)
    try:
        idle = await WireDevice.connect(server.port)
        silent = await WireDevice.connect(server.port, hello=False)
        good = await WireDevice.connect(server.port)
        assert (await good.login("alpha", "alphapass"))["type"] == "ok"
        notice = await idle.recv(timeout=5)
        assert notice is not None and (notice["type"], notice["kind"]) == \
            ("notice", "login_timeout")
        assert "no login within 0.5 seconds" in notice["message"]
        assert await idle.recv() is None
        notice = await silent.recv(timeout=5)
        assert notice is not None and notice["kind"] == "login_timeout"
        await asyncio.sleep(0.3)
        assert (await good.call({"type": "ping"}))["type"] == "ok"  # logged in: not affected
        assert [d.name for d in await server.state.presence.devices()] == ["alpha"]
        await asyncio.gather(idle.close(), silent.close(), good.close())
    finally:
        await server.close()


async def test_a_peer_that_stops_reading_is_dropped(server_config: ServerConfig) -> None:
    server = await start_server(server_config, send_timeout=1.0)
    try:
        # 2,000 listed devices make each AED reply ~300 KB.
        for i in range(2000):
            await server.state.presence.join(f"{'x' * 60}{i:04d}", "192.0.2.1", 1000 + i, 0.0)
        slow = await WireDevice.connect(server.port)
        assert (await slow.login("alpha", "alphapass"))["type"] == "ok"
        other = await WireDevice.connect(server.port)
        assert (await other.login("beta", "betapass"))["type"] == "ok"
        with capture_logs() as logs:
            for _ in range(100):  # ~30 MB of replies asked for, never read
                slow.writer.write(encode_frame({"type": "list_devices", "id": 1}))
            # Meanwhile another device is served as usual.
            t0 = time.monotonic()
            for _ in range(20):
                assert (await other.call({"type": "ping"}))["type"] == "ok"
            r = await other.call({"type": "upload", "file_id": 1}, b"1\n2\n")
            assert r["type"] == "ok"
            served = time.monotonic() - t0
            for _ in range(200):
                if await server.state.presence.get("alpha") is None:
                    break
                await asyncio.sleep(0.05)
        assert await server.state.presence.get("alpha") is None
        assert await server.state.presence.get("beta") is not None
        dropped = [e for e in logs if e["event"] == "slow_reader_dropped"]
        assert len(dropped) == 1 and dropped[0]["device"] == "alpha"
        # What was held for it: at most the high-water mark plus one reply.
        assert dropped[0]["buffered"] < WRITE_BUFFER_HIGH + 512 * 1024
        disconnect = [e for e in logs if e["event"] == "disconnect" and e["device"] == "alpha"]
        assert disconnect and disconnect[0]["reason"] == "slow_reader"
        assert served < 10  # generous: the point is that it was not stuck behind the slow one
        slow.writer.transport.abort()
        await other.close()
    finally:
        await server.close()


async def test_connections_dropped_mid_frame_leave_nothing_behind(server_config: ServerConfig
                                                                  ) -> None:
    server = await start_server(server_config)
    data = server.config.data_dir
    try:
        keep = await WireDevice.connect(server.port)
        assert (await keep.login("gamma", "gammapass"))["type"] == "ok"
        rng = random.Random(7)
        for i in range(30):
            dev = await WireDevice.connect(server.port)
            name = rng.choice(["alpha", "beta"])
            assert (await dev.login(name, f"{name}pass"))["type"] == "ok"
            body = b"".join(b"%d\n" % rng.randint(0, 9999) for _ in range(5000))
            frame = encode_header({"type": "upload", "id": 9, "file_id": i}, len(body)) + body
            cut = rng.randint(1, len(frame) - 1)
            dev.writer.write(frame[:cut])
            await dev.writer.drain()
            await asyncio.sleep(rng.random() * 0.02)
            if rng.random() < 0.5:
                dev.writer.transport.abort()
            else:
                dev.writer.close()
        log_path = data / "edge-device-log.txt"
        for _ in range(250):  # the device log is rewritten (in a thread) just after presence
            names = [d.name for d in await server.state.presence.devices()]
            logged = [parse_device_line(x)[2] for x in log_path.read_text().splitlines()]
            if names == ["gamma"] and len(server.connections) == 1 and logged == ["gamma"]:
                break
            await asyncio.sleep(0.02)
        names = [d.name for d in await server.state.presence.devices()]
        assert names == ["gamma"] and len(server.connections) == 1
        assert list(data.glob(".upload-*")) == []
        assert not list(data.glob("alpha-*")) and not list(data.glob("beta-*"))
        await asyncio.wait_for(server.state.device_log.written(), 5)  # within a second
        lines = (data / "edge-device-log.txt").read_text().splitlines()
        assert [parse_device_line(x)[2] for x in lines] == ["gamma"]
        assert (await keep.call({"type": "list_devices"}))["devices"] == []
        await keep.close()
    finally:
        await server.close()


def test_clients_killed_at_random_points(server_process: ServerProcess, tmp_path: Path) -> None:
    rng = random.Random(11)
    procs = []
    for i in range(8):
        data = tmp_path / f"c{i}"
        data.mkdir()
        name = ("alpha", "beta", "gamma")[i % 3]
        script = [name, f"{name}pass"] + [f"EDG {k} 2000\nUED {k}\nSCS {k} SUM\nAED\nDTE {k}"
                                          for k in range(30)]
        p = subprocess.Popen(client_argv(server_process.port, data), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        assert p.stdin is not None
        p.stdin.write("\n".join(script) + "\n")
        p.stdin.flush()
        procs.append(p)
    try:
        time.sleep(0.3)
        for p in rng.sample(procs, len(procs)):
            time.sleep(rng.random() * 0.4)
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
    data = server_process.data_dir
    assert wait_until(lambda: (data / "edge-device-log.txt").read_text() == "", timeout=10)
    time.sleep(0.2)
    assert list(data.glob(".upload-*")) == []
    for name in ("upload-log.txt", "deletion-log.txt"):
        if (data / name).exists():
            for line in (data / name).read_text().splitlines():
                FileRecord.parse(line)
    assert server_process.proc.poll() is None
    text = server_process.stderr_path.read_text()
    assert "Traceback" not in text and "connection_crashed" not in text
