"""Protocol version 2 next to version 1: an older server, or an older receiving device,
still gets UVF on a LAN, direct to the reported address (real processes on loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from edgenet.config import ServerConfig
from edgenet.rudp.endpoint import TransferEndpoint
from edgenet.server import session as server_session
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.wire import messages as m
from tests.conftest import CREDENTIALS
from tests.filedata import make_file, sha
from tests.wireclient import WireDevice


async def client(port: int, data_dir: Path, name: str, *opts: str
                 ) -> asyncio.subprocess.Process:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    env["EDGENET_PASSWORD"] = f"{name}pass"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgenet", "client", "127.0.0.1", str(port), "0", "--data-dir",
        str(data_dir), "--name", name, "--json", *opts, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)


async def send(port: int, data_dir: Path, filename: str) -> dict[str, Any]:
    proc = await client(port, data_dir, "alpha", "--run", f"UVF beta {filename}")
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    results = [json.loads(line) for line in out.decode().splitlines()]
    return next(r for r in results if r.get("command", "").startswith("UVF"))


async def until(predicate: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def start(tmp_path: Path) -> EdgeServer:
    server = EdgeServer(ServerConfig(port=0, max_attempts=3, host="127.0.0.1",
                                     data_dir=tmp_path / "srv"), Credentials.parse(CREDENTIALS))
    await server.start()
    return server


async def test_an_older_server_carries_uvf_direct(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A version-1 server: whatever a device offers, its hello settles on version 1.
    monkeypatch.setattr(server_session, "negotiate", lambda hello: 1)
    server = await start(tmp_path)
    beta = await client(server.port, tmp_path / "beta", "beta", "--stay")
    try:
        async def beta_in() -> bool:
            return await server.state.presence.get("beta") is not None
        await until(beta_in)
        src = make_file(tmp_path / "alpha" / "f.bin", 2_000_000)
        result = await send(server.port, tmp_path / "alpha", "f.bin")
        assert result["ok"] and result["result"]["path"] == "direct", result
        assert result["text"] == "f.bin has been uploaded to beta (2000000 bytes, direct)"
        assert sha(tmp_path / "beta" / "alpha_f.bin") == sha(src)
        rendezvous = server.state.rendezvous
        assert rendezvous is not None  # the server has one, but version 1 never asked for it
        assert rendezvous.counters.registrations == 0 and rendezvous.counters.allocations == 0
    finally:
        beta.terminate()
        await beta.wait()
        await server.close()


async def test_an_older_receiving_device_is_sent_to_directly(tmp_path: Path) -> None:
    server = await start(tmp_path)
    endpoint = await TransferEndpoint.bind("127.0.0.1", 0, tmp_path / "beta")
    old = await WireDevice.connect(server.port)  # hello {version: 1}, no "versions"
    try:
        reply = await old.login("beta", "betapass", endpoint.port)
        assert reply["type"] == "ok"
        src = make_file(tmp_path / "alpha" / "clip.bin", 1_000_000)
        result = await send(server.port, tmp_path / "alpha", "clip.bin")
        assert result["ok"] and result["result"]["path"] == "direct", result
        assert sha(tmp_path / "beta" / "alpha_clip.bin") == sha(src)
        assert server.state.rendezvous is not None
        assert server.state.rendezvous.allocation_count() == 0
        # The old device was sent nothing it would not know (only replies so far).
        ping = await old.call({"type": "ping"})
        assert ping["type"] == "ok"
        # An old device's own lookup still works as version 1 documented it.
        looked = await old.call({"type": "lookup", "name": "beta"})
        assert looked["code"] == "self_target"
        assert m.PROTOCOL_VERSION == 1
    finally:
        await old.close()
        await endpoint.close()
        await server.close()
