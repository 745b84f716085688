"""POST /api/v1/credentials/reload against a real server: devices added and revoked
without a restart, a revoked device disconnected, a bad file refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from admin_api import create_app
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from tests.wireclient import WireDevice

TOKEN = "reload-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_reload_adds_revokes_and_refuses_bad_files(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.txt"
    creds.write_text("alpha alphapass\nbeta betapass\n")
    cfg = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "data",
                       credentials=creds)
    server = EdgeServer(cfg, Credentials.load(creds))
    await server.start()
    client = TestClient(TestServer(create_app(server, token=TOKEN)))
    await client.start_server()
    try:
        beta = await WireDevice.connect(server.port)
        assert (await beta.login("beta", "betapass"))["type"] == "ok"
        creds.write_text("alpha alphapass\ngamma gammapass\n")

        resp = await client.post("/api/v1/credentials/reload")
        assert resp.status == 401  # a mutation needs the token
        resp = await client.post("/api/v1/credentials/reload", headers=AUTH)
        assert resp.status == 200
        data: dict[str, Any] = (await resp.json())["data"]
        assert data["reloaded"] is True and data["added"] == ["gamma"]
        assert data["removed"] == ["beta"] and data["disconnected"] == ["beta"]

        notice = await beta.recv()
        assert notice is not None and notice["type"] == "notice" and notice["kind"] == "revoked"
        assert await beta.recv() is None
        gamma = await WireDevice.connect(server.port)
        assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
        again = await WireDevice.connect(server.port)
        assert (await again.login("beta", "betapass"))["code"] == "auth_failed"

        creds.write_text("alpha\n")  # malformed: the old credentials stay
        resp = await client.post("/api/v1/credentials/reload", headers=AUTH)
        assert resp.status == 409
        body = await resp.json()
        assert body["error"]["code"] == "bad_credentials" and "line 1" in body["error"]["message"]
        other = await WireDevice.connect(server.port)
        assert (await other.login("alpha", "alphapass"))["type"] == "ok"
        for dev in (gamma, again, other):
            await dev.close()
        await asyncio.sleep(0)
    finally:
        await client.close()
        await server.close()


async def test_reload_is_refused_without_a_token(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.txt"
    creds.write_text("alpha alphapass\n")
    cfg = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "data",
                       credentials=creds)
    server = EdgeServer(cfg, Credentials.load(creds))
    await server.open()
    client = TestClient(TestServer(create_app(server, token=None)))
    await client.start_server()
    try:
        resp = await client.post("/api/v1/credentials/reload")
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "read_only"
    finally:
        await client.close()
