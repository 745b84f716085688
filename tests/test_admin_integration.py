"""The admin API against a real server: real TCP devices log in, fail until blocked,
get lifted, get disconnected, all watched and done through HTTP; and the real
``python -m edgenet server`` process with its admin API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from edgenet.server.logs import DEVICE_LOG
from tests.test_admin_support import (
    CREDENTIALS,
    PASSWORDS,
    TOKEN,
    Device,
    LiveServer,
    http_json,
    live_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def api(session: aiohttp.ClientSession, live: LiveServer, method: str, path: str,
              status: int = 200) -> Any:
    async with session.request(method, live.base + path, headers=AUTH) as resp:
        body = await resp.json()
        assert resp.status == status, (method, path, resp.status, body)
        return body


async def names(session: aiohttp.ClientSession, live: LiveServer, path: str) -> list[str]:
    body = await api(session, live, "GET", path)
    return [row.get("name", row.get("device")) for row in body["data"]]


async def read_stream(session: aiohttp.ClientSession, live: LiveServer,
                      into: list[dict[str, Any]]) -> None:
    async with session.get(live.base + "/api/v1/events/stream", headers=AUTH) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode()
            if line.startswith("data: "):
                into.append(json.loads(line[6:]))


async def test_devices_lockouts_and_disconnects_through_the_api(tmp_path: Path) -> None:
    async with live_server(tmp_path, max_attempts=3) as live, aiohttp.ClientSession() as http:
        streamed: list[dict[str, Any]] = []
        stream = asyncio.create_task(read_stream(http, live, streamed))
        await wait_for(lambda: live.events.subscribers == 1, what="the SSE subscriber")
        port = live.server.port
        admin_port = live.admin.port

        # Two devices log in and appear, newest first, in the list and the log.
        alpha = await Device.connect(port)
        assert (await alpha.login("alpha", "alphapass", 41001))["type"] == "ok"
        gamma = await Device.connect(port)
        assert (await gamma.login("gamma", "gammapass", 41003))["type"] == "ok"
        assert await names(http, live, "/api/v1/devices") == ["gamma", "alpha"]
        one = (await api(http, live, "GET", "/api/v1/devices/alpha"))["data"]
        assert one["ip"] == "127.0.0.1" and one["udp_port"] == 41001
        log_rows = (await api(http, live, "GET", "/api/v1/logs/devices"))["data"]
        assert [(r["seq"], r["name"]) for r in log_rows] == [(1, "alpha"), (2, "gamma")]

        # An upload shows in files, the upload log, the device's counters and metrics.
        reply = await alpha.call({"type": "upload", "file_id": 4}, b"1\n2\n3\n")
        assert reply["type"] == "ok", reply
        files = (await api(http, live, "GET", "/api/v1/files?device=alpha"))["data"]
        assert [(f["file_id"], f["size"], f["samples"]) for f in files] == [(4, 6, 3)]
        uploads = (await api(http, live, "GET", "/api/v1/logs/uploads"))["data"]
        assert [(u["device"], u["file_id"], u["samples"]) for u in uploads] == [("alpha", 4, 3)]
        one = (await api(http, live, "GET", "/api/v1/devices/alpha"))["data"]
        assert one["commands"] == 1 and one["bytes_uploaded"] == 6

        # beta fails until blocked; the API shows the count, then the block.
        beta = await Device.connect(port)
        assert (await beta.login("beta", "wrong"))["code"] == "auth_failed"
        lock = (await api(http, live, "GET", "/api/v1/lockouts"))["data"]
        assert [(e["name"], e["failures"], e["blocked"]) for e in lock] == [("beta", 1, False)]
        assert (await beta.login("beta", "wrong"))["code"] == "auth_failed"
        assert (await beta.login("beta", "wrong"))["code"] == "blocked"
        assert (await beta.login("beta", "betapass"))["code"] == "blocked"
        lock = (await api(http, live, "GET", "/api/v1/lockouts"))["data"]
        assert lock[0]["name"] == "beta" and lock[0]["blocked"] and lock[0]["seconds_left"] > 50

        # Lifted through the API, beta logs in at once.
        lifted = (await api(http, live, "DELETE", "/api/v1/lockouts/beta"))["data"]
        assert lifted["lifted"] and lifted["failures"] == 3
        assert await names(http, live, "/api/v1/lockouts") == []
        assert (await beta.login("beta", "betapass", 41002))["type"] == "ok"
        assert await names(http, live, "/api/v1/devices") == ["beta", "gamma", "alpha"]

        # Disconnected through the API: alpha is told, and leaves the list and the file.
        gone = (await api(http, live, "DELETE", "/api/v1/devices/alpha"))["data"]
        assert gone["name"] == "alpha" and gone["disconnected"]
        notice = await alpha.recv()
        assert notice is not None and notice["type"] == "notice", notice
        assert notice["kind"] == "disconnected"
        assert await alpha.recv() is None  # then the server closes
        assert await names(http, live, "/api/v1/devices") == ["beta", "gamma"]
        log_text = (live.server.config.data_dir / DEVICE_LOG).read_text()
        assert "alpha" not in log_text and "; beta; 127.0.0.1; 41002" in log_text
        await api(http, live, "GET", "/api/v1/devices/alpha", 404)

        # A device leaving on its own disappears too.
        await gamma.close()
        async def gamma_gone() -> bool:
            return await live.server.state.presence.get("gamma") is None

        await wait_for(gamma_gone, what="gamma to leave")
        assert await names(http, live, "/api/v1/devices") == ["beta"]

        # The events, recorded and streamed, tell the same story.
        want = ["login", "login", "upload", "login_failed", "login_failed", "device_blocked",
                "login_refused_blocked", "block_lifted", "login", "disconnect", "disconnect"]
        recorded = (await api(http, live, "GET", "/api/v1/events?limit=1000&event="
                              + ",".join(sorted(set(want)))))["data"]
        assert [e["event"] for e in reversed(recorded)] == want
        disconnect = next(e for e in recorded if e["event"] == "disconnect"
                          and e["device"] == "alpha")
        assert disconnect["reason"] == "admin"
        beta_only = (await api(http, live, "GET", "/api/v1/events?device=beta"))["data"]
        assert {e["device"] for e in beta_only} == {"beta"} and len(beta_only) >= 5
        await wait_for(lambda: [e["event"] for e in streamed if e["event"] in want] == want,
                       what="the stream to carry every event")

        # Metrics count the same.
        async with http.get(live.base + "/metrics", headers=AUTH) as resp:
            metrics = await resp.text()
        for line in ('edgenet_logins_total{outcome="ok"} 3.0',
                     'edgenet_logins_total{outcome="failed"} 3.0',
                     'edgenet_logins_total{outcome="refused_blocked"} 1.0',
                     "edgenet_blocks_total 1.0", "edgenet_devices_connected 1.0",
                     "edgenet_uploaded_bytes_total 6.0",
                     'edgenet_commands_total{command="UED",outcome="ok"} 1.0',
                     'edgenet_command_duration_seconds_count{command="UED"} 1.0',
                     'edgenet_sessions_ended_total{reason="admin"} 1.0'):
            assert line in metrics, line
        everything = json.dumps(recorded) + metrics
        assert not any(p in everything for p in PASSWORDS)

        await beta.close()
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)
    # The admin port is closed with the server.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", admin_port)) != 0


async def test_streams_end_when_the_server_stops(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        got: list[bytes] = []
        async with live_server(tmp_path) as live:
            resp = await http.get(live.base + "/api/v1/events/stream", headers=AUTH)
            assert resp.status == 200
            await wait_for(lambda: live.events.subscribers == 1, what="the subscriber")
        # server.close() returned: the stream was told and ended, within the grace time.
        body = await asyncio.wait_for(resp.content.read(), 5)
        got.append(body)
        assert b"event: end" in body and b"shutdown" in body
        resp.close()


# -- the real process --------------------------------------------------------------


def _start(tmp_path: Path, *extra: str, env: dict[str, str] | None = None
           ) -> tuple[subprocess.Popen[bytes], Path]:
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    err = tmp_path / f"stderr-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgenet", "server", "0", "3", "--host", "127.0.0.1",
         "--credentials", str(creds), "--data-dir", str(tmp_path / "data"),
         "--log-format", "json", *extra],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err.open("wb"),
        env={**os.environ, **(env or {})})
    return proc, err


def _wait_event(proc: subprocess.Popen[bytes], err: Path, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in err.read_text(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == name:
                return ev  # type: ignore[no-any-return]
        assert proc.poll() is None, f"server exited: {err.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no {name} event in 20 s: {err.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


def test_server_process_serves_the_admin_api(tmp_path: Path) -> None:
    proc, err = _start(tmp_path, "--admin-port", "0", env={"EDGENET_ADMIN_TOKEN": TOKEN})
    try:
        ready = _wait_event(proc, err, "admin_ready")
        port = int(ready["port"])
        assert ready["host"] == "127.0.0.1" and ready["url"] == f"http://127.0.0.1:{port}/"
        assert TOKEN not in err.read_text()
        base = f"http://127.0.0.1:{port}"
        assert http_json(base + "/healthz") == (200, {"status": "ok"})
        status, body = http_json(base + "/api/v1/devices")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = http_json(base + "/api/v1/devices", token=TOKEN)
        assert status == 200 and body["data"] == []
        status, body = http_json(base + "/api/v1/events?event=server_ready", token=TOKEN)
        assert status == 200 and body["data"][0]["event"] == "server_ready"
    finally:
        assert _stop(proc) == 0


def test_admin_options_refuse_unsafe_or_busy_setups(tmp_path: Path) -> None:
    # A non-loopback admin host without a token: one line, non-zero exit, nothing served.
    env = {k: v for k, v in os.environ.items() if k != "EDGENET_ADMIN_TOKEN"}
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    base = [sys.executable, "-m", "edgenet", "server", "0", "3", "--host", "127.0.0.1",
            "--credentials", str(creds), "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(base + ["--admin-host", "0.0.0.0", "--admin-port", "0"], cwd=ROOT,
                          env=env, capture_output=True, check=False, timeout=30, stdin=subprocess.DEVNULL)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "without a token" in lines[0]
    # The admin port is taken: one line, non-zero exit.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = subprocess.run(base + ["--admin-port", str(taken), "--log-format", "json"],
                              cwd=ROOT, env=env, capture_output=True, check=False, timeout=30,
                              stdin=subprocess.DEVNULL)
    errors = [line for line in done.stderr.decode().splitlines() if not line.startswith("{")]
    assert done.returncode == 1 and errors == [
        f"edgenet: admin port {taken} on 127.0.0.1 is already in use"], done.stderr
    # With a token, a non-loopback host is allowed (port 0, so nothing is disturbed).
    proc, err = _start(tmp_path, "--admin-host", "0.0.0.0", "--admin-port", "0",
                       "--admin-token", TOKEN)
    try:
        ready = _wait_event(proc, err, "admin_ready")
        assert ready["host"] == "0.0.0.0" and ready["auth"] == "token"
    finally:
        assert _stop(proc) == 0
