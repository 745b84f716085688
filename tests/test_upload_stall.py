"""An upload whose body stops coming: the session core's deadline (fake clock), and a
real device going silent mid-body against the built zipapp (the upload, its
temporary file and the device's active-list entry are gone; one event)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edgenet.server.session import DeviceSession, PingDue, UploadDone, UploadStalled
from edgenet.wire.frames import encode_frame, encode_header
from tests.clientproc import wait_until
from tests.conftest import PYZ, ServerProcess, server_argv
from tests.test_session import events, logged_in
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(60)


def test_the_session_core_owns_the_upload_idle_deadline() -> None:
    c = DeviceSession(10_000, heartbeat=10, now=0.0, upload_idle_timeout=30)
    logged_in(c)
    body = b"1\n" * 100
    events(c, encode_header({"type": "upload", "id": 1, "file_id": 1}, len(body))
           + body[:50], now=100.0)
    assert c.uploading and c.deadline() == 130.0
    assert c.heartbeat_action(112.0) is None  # no pings into a body being sent
    events(c, body[50:120], now=125.0)  # progress moves the deadline
    assert c.deadline() == 155.0 and c.heartbeat_action(154.9) is None
    assert c.heartbeat_action(155.0) == UploadStalled(30.0, 120, 200)
    done = events(c, body[120:], now=156.0)  # (had it come after all: a normal end)
    assert isinstance(done[-1], UploadDone) and not c.uploading
    assert isinstance(c.heartbeat_action(166.0), PingDue)  # back to heartbeats


def test_a_wait_the_server_imposed_is_not_the_devices_silence() -> None:
    c = DeviceSession(10_000, heartbeat=10, now=0.0, upload_idle_timeout=30)
    logged_in(c)
    events(c, encode_header({"type": "upload", "id": 1, "file_id": 1}, 200) + b"1\n",
           now=100.0)
    assert c.heartbeat_action(140.0) == UploadStalled(40.0, 2, 200)
    c.waited(140.0)  # e.g. for an upload slot, until 140
    assert c.deadline() == 170.0 and c.heartbeat_action(169.0) is None
    c.waited(120.0)  # never moves the deadline back
    assert c.deadline() == 170.0


def test_without_an_upload_idle_timeout_a_stalled_body_is_never_cut() -> None:
    c = DeviceSession(10_000, heartbeat=10, now=0.0)
    logged_in(c)
    events(c, encode_header({"type": "upload", "id": 1, "file_id": 1}, 10) + b"1\n",
           now=0.0)
    assert c.deadline() is None and c.heartbeat_action(10_000.0) is None


def test_a_device_silent_mid_upload_is_dropped_with_its_upload(
        tmp_path: Path, credentials_file: Path) -> None:
    assert PYZ.exists(), "build/edgenet.pyz is missing: run `make pyz` (make test does)"
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin",
        "--upload-idle-timeout", "1.5", "--heartbeat", "2"], data)
    try:
        asyncio.run(asyncio.wait_for(_stall_and_trickle(server.port, data), 30))
        stalled = [e for e in server.read_events() if e.get("event") == "upload_stalled"]
        assert len(stalled) == 1 and stalled[0]["device"] == "alpha", stalled
        assert stalled[0]["received"] == 1000 and stalled[0]["expected"] == 2000
        assert wait_until(lambda: any(
            e.get("event") == "disconnect" and e.get("device") == "alpha"
            for e in server.read_events()), 5)
    finally:
        server.stop()
    assert server.proc.returncode == 0


async def _stall_and_trickle(port: int, data: Path) -> None:
    # beta uploads slowly, a few bytes every half second: progress, never cut.
    beta = await WireDevice.connect(port)
    assert (await beta.login("beta", "betapass"))["type"] == "ok"
    alpha = await WireDevice.connect(port)
    assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
    body = b"7\n" * 1000
    alpha.writer.write(encode_header({"type": "upload", "id": 5, "file_id": 1}, len(body))
                       + body[:1000])  # half, then silence
    await alpha.writer.drain()
    slow = b"3\n" * 8
    beta.writer.write(encode_header({"type": "upload", "id": 6, "file_id": 2}, len(slow)))
    started = time.monotonic()
    for i in range(0, len(slow), 2):
        beta.writer.write(slow[i:i + 2])
        await beta.writer.drain()
        await asyncio.sleep(0.5)
    assert time.monotonic() - started > 1.5  # longer than the idle timeout in all
    reply = await beta.recv()
    assert reply is not None and reply["type"] == "ok" and reply["samples"] == 8, reply
    notice = await alpha.recv(timeout=10)
    assert notice is not None and notice["kind"] == "upload_timeout", notice
    assert await alpha.recv(timeout=5) is None  # and closed
    assert [p.name for p in data.glob(".upload-*")] == []
    assert "alpha" not in (data / "edge-device-log.txt").read_text()
    assert "beta" in (data / "edge-device-log.txt").read_text()
    assert (await beta.call({"type": "compute", "file_id": 2, "op": "SUM"}))["result"] == "24"
    beta.writer.write(encode_frame({"type": "logout", "id": 9}))
    await beta.close()
    await alpha.close()
