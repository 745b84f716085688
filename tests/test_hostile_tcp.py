"""Hostile input at a live server process: >10,000 random, truncated, oversize and
wrongly typed frames from many connections at once. Afterwards a normal device
runs every command correctly, the server is alive and logged no bug, and every log
file still parses line by line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from edgenet.server.logs import FileRecord, parse_device_line
from edgenet.wire.frames import encode_frame, encode_header
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(90)

TOTAL_FRAMES = 10_500
WORKERS = 40
# No "logout": a hostile connection that logs out ends early and the rest of its frames
# would never be judged.
TYPES = ["hello", "login", "upload", "compute", "delete", "list_devices", "lookup", "ping",
         "pong", "notice", "ok", "error", "", "x" * 300]
JUNK_VALUES: list[Any] = [None, True, False, -1, 0, 2**64, 1.5, "", "1", "SUM", [], {}, [1, 2],
                          {"a": 1}, "x" * 1000, 2**53, -(2**63), "\u0000", "../../etc/passwd"]


def junk(rng: random.Random) -> Any:
    return rng.choice(JUNK_VALUES)


def fatal_frame(rng: random.Random) -> bytes:
    """A unit that breaks the framing: the server answers and closes."""
    r = rng.random()
    if r < 0.3:  # random bytes
        return rng.randbytes(rng.randint(1, 300))
    if r < 0.5:  # oversize announced header
        return struct.pack(">I", rng.randint(64 * 1024 + 1, 2**32 - 1)) + rng.randbytes(8)
    if r < 0.7:  # framed garbage (not JSON / not an object)
        raw = rng.choice([b"[]", b"null", b"\xff\xfe", b"{", b'"x"', rng.randbytes(20)])
        return struct.pack(">I", len(raw)) + raw
    if r < 0.8:  # an upload announcing more than --max-upload
        return encode_header({"type": "upload", "id": 1, "file_id": 1}, 2**31)
    if r < 0.9:  # a bad "body" field
        return encode_frame({"type": "ping", "id": 1, "body": junk(rng)})
    frame = encode_frame({"type": "compute", "id": 1, "file_id": 1, "op": "SUM"})
    return frame[: rng.randint(1, len(frame) - 1)]  # truncated, then the peer leaves


def wrong_frame(rng: random.Random) -> bytes:
    """A well-framed unit with wrong or missing fields, or a body that is not samples."""
    if rng.random() < 0.1:
        body = rng.choice([b"1\n2\nx\n", rng.randbytes(100), b"\n\n", b"9" * 5000 + b"\n",
                           b"1\n2\n"])
        return encode_header({"type": "upload", "id": rng.randint(0, 9),
                              "file_id": rng.randint(0, 3)}, len(body)) + body
    fields: dict[str, Any] = {"type": rng.choice(TYPES)}
    for key in rng.sample(["id", "name", "password", "udp_port", "file_id", "op", "version"],
                          rng.randint(0, 5)):
        fields[key] = junk(rng) if rng.random() < 0.6 else rng.randint(0, 5)
    if rng.random() < 0.5:
        fields["id"] = rng.randint(0, 1000)
    return encode_frame(fields)


async def discard_replies(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):  # the server closed it: done
        while await reader.read(65536):
            pass


async def hostile_worker(port: int, seed: int, budget: list[int]) -> int:
    rng = random.Random(seed)
    sent = 0
    while budget[0] > 0:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        drain_task = asyncio.create_task(discard_replies(reader))
        try:
            # The server closes it on a fatal frame: then the next connection.
            with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
                if rng.random() < 0.8:
                    writer.write(encode_frame({"type": "hello", "version": 1}))
                    if rng.random() < 0.6:  # each worker has a device name of its own
                        name = rng.choice([f"dev{seed}", "nobody"])
                        writer.write(encode_frame({"type": "login", "id": 1, "name": name,
                                                   "password": f"{name}pass", "udp_port": 7}))
                for _ in range(rng.randint(1, 80)):
                    writer.write(wrong_frame(rng))
                    sent += 1
                    budget[0] -= 1
                if rng.random() < 0.5:
                    writer.write(fatal_frame(rng))
                    sent += 1
                    budget[0] -= 1
                await asyncio.wait_for(writer.drain(), 5)
        finally:
            if rng.random() < 0.2:
                writer.transport.abort()  # RST: what was not read yet is lost, on purpose
            else:
                # Half-close and read to the end, so the server judges every frame sent.
                with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
                    writer.write_eof()
                    await asyncio.wait_for(asyncio.shield(drain_task), 10)
                writer.close()
            drain_task.cancel()
            await asyncio.gather(drain_task, return_exceptions=True)
    return sent


async def normal_session(port: int) -> None:
    dev = await WireDevice.connect(port)
    assert (await dev.login("gamma", "gammapass", 6100))["type"] == "ok"
    r = await dev.call({"type": "upload", "file_id": 7}, b"3\n-1\n10\n")
    assert (r["type"], r["samples"]) == ("ok", 3), r
    results = {op: (await dev.call({"type": "compute", "file_id": 7, "op": op}))["result"]
               for op in ("SUM", "AVERAGE", "MAX", "MIN")}
    assert results == {"SUM": "12", "AVERAGE": "4.0", "MAX": "10", "MIN": "-1"}
    r = await dev.call({"type": "list_devices"})
    assert r["type"] == "ok" and all(d["name"] != "gamma" for d in r["devices"])
    assert (await dev.call({"type": "lookup", "name": "gamma"}))["code"] == "self_target"
    assert (await dev.call({"type": "ping"}))["type"] == "ok"
    assert (await dev.call({"type": "delete", "file_id": 7}))["samples"] == 3
    assert (await dev.call({"type": "compute", "file_id": 7, "op": "SUM"}))["code"] == "not_found"
    assert (await dev.call({"type": "logout"}))["type"] == "ok"
    await dev.close()


def assert_logs_parse(data: Path) -> None:
    for name in ("upload-log.txt", "deletion-log.txt"):
        path = data / name
        if path.exists():
            text = path.read_text()
            assert text == "" or text.endswith("\n")
            for line in text.splitlines():
                FileRecord.parse(line)
    for line in (data / "edge-device-log.txt").read_text().splitlines():
        parse_device_line(line)


def test_ten_thousand_hostile_frames_then_a_normal_device(tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir()
    credentials_file = tmp_path / "credentials.txt"
    credentials_file.write_text("gamma gammapass\n" + "".join(
        f"dev{i} dev{i}pass\n" for i in range(WORKERS)))
    server = ServerProcess(server_argv() + [
        "server", "0", "5", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin",
        "--max-upload", str(2**20), "--login-rate", "0"], data)
    try:
        async def attack() -> int:
            budget = [TOTAL_FRAMES]
            counts = await asyncio.gather(*(hostile_worker(server.port, seed, budget)
                                            for seed in range(WORKERS)))
            return sum(counts)

        started = time.monotonic()
        sent = asyncio.run(attack())
        assert sent >= 10_000
        assert server.proc.poll() is None, "the server died"
        asyncio.run(normal_session(server.port))
        elapsed = time.monotonic() - started
        # Every hostile connection is gone: the active list is empty again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                (data / "edge-device-log.txt").read_text().strip():
            time.sleep(0.05)
        assert (data / "edge-device-log.txt").read_text() == ""
        assert_logs_parse(data)
        events = server.read_events()
        bugs = [e for e in events if e.get("event") in ("connection_crashed", "command_failed",
                                                         "heartbeat_failed")]
        assert not bugs, bugs[:3]
        assert "Traceback" not in server.stderr_path.read_text()
        kinds = [e.get("event") for e in events]
        # The attack reached every layer: framing, validation, logins and commands.
        assert kinds.count("protocol_error") > 30 and kinds.count("bad_request") > 5000
        assert kinds.count("login") > 20 and kinds.count("command") > 100
        print(json.dumps({"frames": sent, "seconds": round(elapsed, 1),
                          **{k: kinds.count(k) for k in ("protocol_error", "bad_request",
                                                         "login", "command")}}))
    finally:
        server.stop()
    assert server.proc.returncode == 0
