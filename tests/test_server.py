"""The server over real loopback sockets, driven by raw protocol devices."""

from __future__ import annotations

import asyncio
import re
import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edgenet.server.app import EdgeServer
from edgenet.server.logs import DEVICE_LOG, parse_device_line
from edgenet.wire.frames import encode_frame
from tests.conftest import start_server
from tests.wireclient import WireDevice

LOG_TIME = r"\d{2} (January|February|March|April|May|June|July|August|September|October|November|December) \d{4} \d{2}:\d{2}:\d{2}"


def device_log(server: EdgeServer) -> list[str]:
    return (server.config.data_dir / DEVICE_LOG).read_text().splitlines()


async def written_device_log(server: EdgeServer) -> list[str]:
    """The file once it holds every change so far (it follows within a second)."""
    await asyncio.wait_for(server.state.device_log.written(), 5)
    return device_log(server)


async def logged_in(server: EdgeServer, name: str = "alpha", udp_port: int = 6001) -> WireDevice:
    dev = await WireDevice.connect(server.port)
    reply = await dev.login(name, f"{name}pass", udp_port)
    assert reply["type"] == "ok", reply
    return dev


async def test_login_logs_device_and_every_command(edge_server: EdgeServer) -> None:
    with capture_logs() as logs:
        a = await logged_in(edge_server, "alpha", 6001)
        lines = device_log(edge_server)
        assert len(lines) == 1
        assert re.fullmatch(rf"1; {LOG_TIME}; alpha; 127\.0\.0\.1; 6001", lines[0])

        r = await a.call({"type": "upload", "file_id": 3}, b"5\n-2\n10\n")
        assert r["type"] == "ok" and r["samples"] == 3
        stored = edge_server.config.data_dir / "alpha-3.txt"
        assert stored.read_bytes() == b"5\n-2\n10\n"
        upload_log = (edge_server.config.data_dir / "upload-log.txt").read_text().splitlines()
        assert re.fullmatch(rf"alpha; {LOG_TIME}; 3; 3", upload_log[-1])

        results = {}
        for op in ("SUM", "AVERAGE", "MAX", "MIN"):
            r = await a.call({"type": "compute", "file_id": 3, "op": op})
            results[op] = r["result"]
        assert results == {"SUM": "13", "AVERAGE": "4.3333333333", "MAX": "10", "MIN": "-2"}

        r = await a.call({"type": "compute", "file_id": 4, "op": "SUM"})
        assert r["code"] == "not_found"
        assert r["message"] == "the file does not exist at the server side"

        r = await a.call({"type": "list_devices"})
        assert r["devices"] == []
        b = await logged_in(edge_server, "beta", 6002)
        r = await a.call({"type": "list_devices"})
        assert [(d["name"], d["ip"], d["udp_port"]) for d in r["devices"]] == [("beta", "127.0.0.1", 6002)]
        assert re.fullmatch(LOG_TIME, r["devices"][0]["since_text"])

        r = await a.call({"type": "lookup", "name": "beta"})
        assert (r["type"], r["udp_port"]) == ("ok", 6002)
        assert (await a.call({"type": "lookup", "name": "alpha"}))["code"] == "self_target"
        assert (await a.call({"type": "lookup", "name": "gamma"}))["code"] == "not_active"

        r = await a.call({"type": "delete", "file_id": 3})
        assert (r["type"], r["samples"]) == ("ok", 3)
        assert not stored.exists()
        deletion_log = (edge_server.config.data_dir / "deletion-log.txt").read_text().splitlines()
        assert re.fullmatch(rf"alpha; {LOG_TIME}; 3; 3", deletion_log[-1])
        assert (await a.call({"type": "delete", "file_id": 3}))["code"] == "not_found"

        assert (await a.call({"type": "logout"}))["type"] == "ok"
        assert await a.recv() is None  # the server closes after logout
        await asyncio.sleep(0.05)
        lines = await written_device_log(edge_server)
        assert [parse_device_line(line)[:3][2] for line in lines] == ["beta"]
        assert parse_device_line(device_log(edge_server)[0])[0] == 1  # renumbered
        await b.close()
    events = [e["event"] for e in logs]
    for name in ("login", "upload", "command", "delete", "logout"):
        assert name in events
    cmd = next(e for e in logs if e["event"] == "command" and e["command"] == "SCS")
    assert cmd["device"] == "alpha" and cmd["outcome"] == "ok" and "duration_ms" in cmd


async def test_bad_upload_stores_nothing_and_connection_continues(edge_server: EdgeServer) -> None:
    a = await logged_in(edge_server)
    r = await a.call({"type": "upload", "file_id": 1}, b"1\n2\nthree\n")
    assert r["code"] == "bad_data" and "line 3" in r["message"]
    assert not (edge_server.config.data_dir / "alpha-1.txt").exists()
    assert list(edge_server.config.data_dir.glob(".upload-*")) == []
    assert not (edge_server.config.data_dir / "upload-log.txt").exists()
    r = await a.call({"type": "upload", "file_id": 1}, b"")
    assert r["type"] == "ok" and r["samples"] == 0
    r = await a.call({"type": "compute", "file_id": 1, "op": "SUM"})
    assert r["code"] == "empty_file"
    await a.close()


async def test_unknown_name_fails_like_wrong_password_and_never_hangs(edge_server: EdgeServer) -> None:
    d = await WireDevice.connect(edge_server.port)
    unknown = await asyncio.wait_for(d.login("nobody", "x"), 5)
    wrong = await asyncio.wait_for(d.login("alpha", "x"), 5)
    assert unknown["code"] == wrong["code"] == "auth_failed"
    assert unknown["message"] == wrong["message"] == "Invalid password. Please try again"
    await d.close()


async def test_lockout_across_connections_and_expiry(edge_server: EdgeServer) -> None:
    d1 = await WireDevice.connect(edge_server.port)
    d2 = await WireDevice.connect(edge_server.port)
    assert (await d1.login("alpha", "bad"))["code"] == "auth_failed"
    assert (await d2.login("alpha", "bad"))["code"] == "auth_failed"
    r = await d1.login("alpha", "bad")
    assert r["code"] == "blocked"
    # Blocked for everybody, even with the right password, with the seconds left.
    r = await d2.login("alpha", "alphapass")
    assert r["code"] == "blocked" and 1 <= r["seconds_left"] <= 2
    assert re.search(r"blocked.*try again in \d+ seconds", r["message"])
    # Other names are not affected.
    assert (await d2.login("beta", "betapass"))["type"] == "ok"
    await asyncio.sleep(2.1)
    assert (await d1.login("alpha", "alphapass"))["type"] == "ok"
    await d1.close()
    await d2.close()


async def test_success_resets_failure_count(edge_server: EdgeServer) -> None:
    d = await WireDevice.connect(edge_server.port)
    for _ in range(2):
        assert (await d.login("alpha", "bad"))["code"] == "auth_failed"
    assert (await d.login("alpha", "alphapass"))["type"] == "ok"
    await d.close()
    d = await WireDevice.connect(edge_server.port)
    for _ in range(2):
        assert (await d.login("alpha", "bad"))["code"] == "auth_failed"
    await d.close()


async def test_fifty_concurrent_wrong_attempts_get_at_most_max_tries(edge_server: EdgeServer) -> None:
    devices = await asyncio.gather(*(WireDevice.connect(edge_server.port) for _ in range(50)))
    replies = await asyncio.gather(*(d.login("beta", "wrong") for d in devices))
    codes = [r["code"] for r in replies]
    # Exactly MAX_ATTEMPTS (3) attempts were judged; the third started the block.
    assert codes.count("auth_failed") == 2
    assert codes.count("blocked") == 48
    assert (await devices[0].login("beta", "betapass"))["code"] == "blocked"
    await asyncio.gather(*(d.close() for d in devices))


async def test_duplicate_login_takes_over(edge_server: EdgeServer) -> None:
    old = await logged_in(edge_server, "alpha", 6001)
    new = await logged_in(edge_server, "alpha", 7001)
    notice = await old.recv()
    assert notice is not None and notice["type"] == "notice" and notice["kind"] == "replaced"
    assert await old.recv() is None
    await asyncio.sleep(0.05)
    lines = await written_device_log(edge_server)
    assert len(lines) == 1 and lines[0].endswith("; alpha; 127.0.0.1; 7001")
    other = await logged_in(edge_server, "beta")
    r = await other.call({"type": "list_devices"})
    assert [(d["name"], d["udp_port"]) for d in r["devices"]] == [("alpha", 7001)]
    await new.close()
    await other.close()


async def test_dropped_connection_leaves_the_log_at_once(edge_server: EdgeServer) -> None:
    a = await logged_in(edge_server, "alpha")
    b = await logged_in(edge_server, "beta")
    c = await logged_in(edge_server, "gamma")
    assert len(await written_device_log(edge_server)) == 3
    b.writer.transport.abort()  # RST, no logout
    for _ in range(150):
        await asyncio.sleep(0.02)
        if len(device_log(edge_server)) == 2:
            break
    lines = [parse_device_line(x) for x in device_log(edge_server)]
    assert [(seq, name) for seq, _, name, _, _ in lines] == [(1, "alpha"), (2, "gamma")]
    await a.close()
    await c.close()


async def test_half_open_connection_is_found_by_heartbeat(server_config) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(server_config, heartbeat=0.2)
    try:
        live = await logged_in(server, "alpha")
        silent = await logged_in(server, "beta")
        # The silent device never answers pings: it is dropped after 2.5 heartbeats.
        async def keep_alive() -> None:
            for _ in range(40):
                await live.call({"type": "ping"})
                await asyncio.sleep(0.05)
        await keep_alive()
        assert [d.name for d in await server.state.presence.devices()] == ["alpha"]
        lines = await written_device_log(server)
        assert lines[0].split("; ")[2] == "alpha" and len(lines) == 1
        await live.close()
        await silent.close()
    finally:
        await server.close()


@pytest.mark.parametrize("raw,code", [
    (struct.pack(">I", 10_000_000), "frame_too_large"),
    (struct.pack(">I", 5) + b"nope!", "bad_frame"),
    (struct.pack(">I", 2) + b"[]", "bad_frame"),
])
async def test_malformed_frames_get_an_error_and_close_others_carry_on(
        edge_server: EdgeServer, raw: bytes, code: str) -> None:
    good = await logged_in(edge_server, "alpha")
    bad = await WireDevice.connect(edge_server.port)
    bad.writer.write(raw)
    reply = await bad.recv()
    assert reply is not None and reply["code"] == code
    assert await bad.recv() is None
    assert (await good.call({"type": "list_devices"}))["type"] == "ok"
    await good.close()


async def test_bad_messages_keep_the_connection(edge_server: EdgeServer) -> None:
    d = await WireDevice.connect(edge_server.port)
    assert (await d.call({"type": "compute", "file_id": 1, "op": "SUM"}))["code"] == "not_logged_in"
    assert (await d.call({"type": "login", "name": 5, "password": "x", "udp_port": 1}))["code"] == "bad_message"
    assert (await d.call({"type": "frobnicate"}))["code"] == "unknown_type"
    assert (await d.login("alpha", "alphapass"))["type"] == "ok"
    assert (await d.call({"type": "compute", "file_id": "1", "op": "SUM"}))["code"] == "bad_message"
    assert (await d.call({"type": "compute", "file_id": 1, "op": "MEAN"}))["code"] == "bad_operation"
    await d.close()


async def test_no_hello_is_refused(edge_server: EdgeServer) -> None:
    d = await WireDevice.connect(edge_server.port, hello=False)
    d.writer.write(encode_frame({"type": "login", "id": 1, "name": "alpha", "password": "alphapass", "udp_port": 1}))
    reply = await d.recv()
    assert reply is not None and reply["code"] == "hello_required"
    assert await d.recv() is None


async def test_restart_keeps_history_and_empties_device_log(server_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(server_config)
    a = await logged_in(server)
    await a.call({"type": "upload", "file_id": 9}, b"4\n4\n")
    (server.config.data_dir / ".upload-alpha-1-dead.tmp").write_bytes(b"half")
    await a.close()
    await server.close()
    server = await start_server(server_config)
    try:
        assert device_log(server) == []
        assert not list(server.config.data_dir.glob(".upload-*"))
        stored = await server.state.files.get("alpha", 9)
        assert stored is not None and stored.samples == 2
        a = await logged_in(server)
        assert (await a.call({"type": "compute", "file_id": 9, "op": "SUM"}))["result"] == "8"
        await a.close()
    finally:
        await server.close()
