"""Issue 12, item 10 and issue 13's descriptor goal: the server at its open-file limit.

The built zipapp runs under ``prlimit --nofile=256:256`` and gets 400 idle device
connections and 100 idle admin connections. It logs its limit at start-up
(``fd_limit``), and by default allows only as many device connections as the
limit leaves room for, so the rest are told ``server_busy`` while a device
already logged in still uploads. With ``--max-connections`` set above what the
limit allows it runs out of descriptors: that is one ``too_many_open_files``
event per episode (not a traceback per waiting connection), the waiting
connections are told ``server_busy``, and it recovers once they close.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYZ, ServerProcess, server_argv
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(180)

LIMIT = 256
DEVICE_FLOOD = 400
ADMIN_FLOOD = 100
CREDENTIALS = "alpha alphapass\nbeta betapass\ngamma gammapass\n"


@pytest.fixture(autouse=True)
def _needs_prlimit_and_descriptors() -> None:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = DEVICE_FLOOD + ADMIN_FLOOD + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"the test process needs {want} descriptors; its hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if not PYZ.exists():
        pytest.fail("build/edgenet.pyz is missing: run `make pyz` (make test does)")


def _start(tmp_path: Path, *extra: str) -> tuple[ServerProcess, int]:
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(["prlimit", f"--nofile={LIMIT}:{LIMIT}"] + server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--admin-host", "127.0.0.1",
        "--admin-port", "0", "--login-rate", "0", "--udp-port", "0", *extra], data)
    admin = [e for e in server.read_events() if e.get("event") == "admin_ready"]
    deadline = time.monotonic() + 10
    while not admin and time.monotonic() < deadline:
        time.sleep(0.05)
        admin = [e for e in server.read_events() if e.get("event") == "admin_ready"]
    assert admin, server.events
    return server, int(admin[0]["port"])


async def _open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, asyncio.TimeoutError):
            continue  # a full backlog may refuse or stall a connect: that is the server's right
        writers.append(writer)
    return writers


async def _login(port: int, name: str) -> dict[str, Any] | None:
    """The reply to hello (a refusal ends there) or to the login; None: closed unanswered."""
    dev = await WireDevice.connect(port, hello=False)
    try:
        reply = await dev.call({"type": "hello", "version": 1})
        if reply.get("type") != "hello":
            return reply
        return await dev.login(name, name + "pass")
    except (AssertionError, ConnectionError, OSError):
        return None
    finally:
        await dev.close()


async def _flood_session(port: int, admin_port: int, exhausted: bool) -> dict[str, Any]:
    alpha = await WireDevice.connect(port)
    assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
    flood = await _open_idle(port, DEVICE_FLOOD)
    flood += await _open_idle(admin_port, ADMIN_FLOOD)
    await asyncio.sleep(1.0)  # the server works through its backlog
    upload = await alpha.call({"type": "upload", "file_id": 1}, b"1\n2\n3\n")
    still_in = await alpha.call({"type": "ping"})
    newcomer = await _login(port, "beta")
    for writer in flood:
        writer.close()
    for writer in flood:
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    later: dict[str, Any] | None = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        later = await _login(port, "gamma")
        if later is not None and later.get("type") == "ok":
            break
        await asyncio.sleep(0.5)
    again = await alpha.call({"type": "upload", "file_id": 2}, b"4\n")
    await alpha.close()
    return {"flood": len(flood), "upload": upload, "still_in": still_in,
            "newcomer": newcomer, "later": later, "again": again}


def _events_once_settled(server: ServerProcess) -> list[dict[str, Any]]:
    """The events, once alpha's disconnect (the last thing the session did) is written:
    lines are written at the end of the server loop's turn, after the replies."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        events = server.read_events()
        if any(e.get("event") == "disconnect" and e.get("device") == "alpha" for e in events):
            break
        time.sleep(0.05)
    return server.read_events()


def _check_stderr(server: ServerProcess) -> list[dict[str, Any]]:
    _events_once_settled(server)
    text = server.stderr_path.read_text(errors="replace")
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len([x for x in lines if "too_many_open_files" in x]) < 20
    assert len(lines) < 300, lines[-5:]
    return server.read_events()


def test_the_default_connection_cap_keeps_descriptors_for_devices_already_in(
        tmp_path: Path) -> None:
    server, admin_port = _start(tmp_path)
    try:
        limit = [e for e in server.read_events() if e.get("event") == "fd_limit"]
        assert limit and limit[0]["soft"] == LIMIT and limit[0]["hard"] == LIMIT
        # Under a limit this low: half of what the reserve leaves for sockets, half for
        # the temporary files of uploads.
        assert limit[0]["max_connections"] == (LIMIT - 64) // 2
        assert limit[0]["upload_slots"] == (LIMIT - 64) // 2
        got = asyncio.run(_flood_session(server.port, admin_port, exhausted=False))
        assert got["flood"] >= DEVICE_FLOOD // 2
        assert got["upload"]["type"] == "ok", got["upload"]  # the device already in uploads
        assert got["still_in"]["type"] == "ok"
        assert got["newcomer"] is not None and got["newcomer"].get("code") == "server_busy"
        assert got["later"] is not None and got["later"]["type"] == "ok", got["later"]
        assert got["again"]["type"] == "ok"
        assert server.proc.poll() is None
        events = _check_stderr(server)
        exhausted = [e for e in events if e.get("event") == "too_many_open_files"]
        assert not exhausted, exhausted
        refused = [e for e in events if e.get("event") == "connection_refused"]
        assert refused and len(refused) < 20  # at most one a second, with a count
    finally:
        server.stop()


def test_running_out_of_descriptors_is_one_event_per_episode_and_recovers(
        tmp_path: Path) -> None:
    server, admin_port = _start(tmp_path, "--max-connections", "1000",
                                "--admin-max-connections", "1000")
    try:
        got = asyncio.run(_flood_session(server.port, admin_port, exhausted=True))
        assert got["flood"] >= LIMIT
        # Stored, or one clear line (the temporary file needs a descriptor); never dropped.
        upload = got["upload"]
        assert upload["type"] == "ok" or (upload["code"] == "storage_error"
                                          and "Too many open files" in upload["message"]), upload
        assert got["still_in"]["type"] == "ok"
        newcomer = got["newcomer"]
        assert newcomer is None or newcomer.get("type") == "ok" \
            or newcomer.get("code") == "server_busy", newcomer
        assert got["later"] is not None and got["later"]["type"] == "ok", got["later"]
        assert got["again"]["type"] == "ok"
        assert server.proc.poll() is None
        events = _check_stderr(server)
        exhausted = [e for e in events if e.get("event") == "too_many_open_files"]
        assert exhausted, "the flood did not reach the limit"
        assert {e["where"] for e in exhausted} <= {"device_accept", "admin_accept", "command",
                                                   "device_log"}
        assert [e for e in events if e.get("event") == "accepting_resumed"]
        # alpha was never dropped: its one disconnect is the close at the end.
        gone = [e for e in events if e.get("event") == "disconnect" and e.get("device") == "alpha"]
        assert [e["reason"] for e in gone] == ["disconnected"], gone
    finally:
        server.stop()


def test_exhaustion_is_one_event_per_episode_with_a_count() -> None:
    from structlog.testing import capture_logs

    from edgenet.server.descriptors import (
        ExhaustionLog,
        RateLimitedCount,
        connections_allowed,
        upload_slots,
    )
    log = ExhaustionLog(episode_seconds=10.0)
    with capture_logs() as logs:
        assert log.report("device_accept", 100.0)
        assert not any(log.report("device_accept", 100.0 + i / 10) for i in range(50))
        assert log.report("admin_accept", 111.0)
    events = [e for e in logs if e["event"] == "too_many_open_files"]
    assert [(e["where"], e["more"]) for e in events] == [("device_accept", 0), ("admin_accept", 50)]
    assert log.total == 52
    count = RateLimitedCount(1.0)
    assert [count.hit(t) for t in (0.0, 0.5, 0.9, 1.0, 1.2)] == [0, None, None, 2, None]
    assert connections_allowed(256) == 96 and connections_allowed(80) == 16
    assert upload_slots(256) == 96 and upload_slots(80) == 8
    # Past 64 + 2 x 256: 256 upload slots, one descriptor for each other connection.
    assert upload_slots(20_000) == 256 and connections_allowed(20_000) == 19_680
    assert connections_allowed(1 << 20) == (1 << 20) - 64 - 256
    # A fleet node keeps its Redis pool (64) and 14 more client descriptors too.
    assert connections_allowed(20_000, 64 + 64 + 14) == 20_000 - 142 - 256


def test_the_spare_descriptor_is_given_up_and_taken_again() -> None:
    import os

    from edgenet.server.descriptors import SpareDescriptor
    spare = SpareDescriptor()
    assert spare.held
    assert spare.release() and not spare.held and not spare.release()
    fd = os.open(os.devnull, os.O_RDONLY)  # the slot it gave up is free for someone else
    os.close(fd)
    spare.restore()
    assert spare.held
    spare.close()
    assert not spare.held
