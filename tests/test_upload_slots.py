"""Uploads beyond the server's upload slots wait for one; they are not refused, not cut
for the wait, and never run the server out of descriptors.

The built zipapp runs under ``prlimit --nofile=700:700``: 64 descriptors kept, 256
upload slots, so 380 device connections by default (one descriptor each). 370
devices log in and all upload at once: 256 stream (slowly, so their uploads stay in
flight) and 114 wait. Half of those sent half their body and stay silent for longer
than the upload idle timeout; the other half send 600 KiB of body while they wait,
which the server does not read meanwhile (its memory does not grow by it). All
finish once slots come free, and every upload is stored.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgenet.wire.frames import encode_header
from tests.conftest import PYZ, ServerProcess, server_argv
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(120)

LIMIT = 700
SLOTS = 256
DEVICES = 370
BODY = b"1\n" * 20
BIG = b"2\n" * (300 * 1024)  # 600 KiB
IDLE = 2.0  # --upload-idle-timeout


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < DEVICES + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    assert PYZ.exists(), "build/edgenet.pyz is missing: run `make pyz` (make test does)"
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"dev-{i} pw-{i}\n" for i in range(DEVICES)))
    data = tmp_path / "server"
    data.mkdir()
    proc = ServerProcess(["prlimit", f"--nofile={LIMIT}:{LIMIT}"] + server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--admin-host", "127.0.0.1",
        "--admin-port", "0", "--login-rate", "0", "--udp-port", "0",
        "--heartbeat", "5", "--upload-idle-timeout", str(IDLE)], data)
    yield proc
    proc.stop()


def server_pid(proc: ServerProcess) -> int:
    """The server's pid (prlimit execs it: the same process)."""
    return int(proc.proc.pid)


def _gauges(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("edgenet_upload", "edgenet_connections_open"))}


async def _wait_for(port: int, metric: str, value: float) -> dict[str, float]:
    got: dict[str, float] = {}
    for _ in range(200):  # bounded: 10 s
        got = await asyncio.to_thread(_gauges, port)
        if got.get(metric) == value:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{metric} never reached {value}: {got}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _session(port: int, admin: int, pid: int) -> None:
    async def log_in(i: int) -> WireDevice:
        dev = await WireDevice.connect(port)
        assert (await dev.login(f"dev-{i}", f"pw-{i}"))["type"] == "ok"
        return dev

    devices: list[WireDevice] = []
    for start in range(0, DEVICES, 50):
        devices += await asyncio.gather(*(log_in(i) for i in range(start,
                                                                  min(DEVICES, start + 50))))
    head = encode_header({"type": "upload", "id": 7, "file_id": 1}, len(BODY))
    half = len(BODY) // 2
    holders, waiters = devices[:SLOTS], devices[SLOTS:]
    for dev in holders:
        dev.writer.write(head + BODY[:4])
    got = await _wait_for(admin, "edgenet_upload_slots_in_use", SLOTS)
    assert got["edgenet_upload_slots"] == SLOTS and got["edgenet_uploads_waiting"] == 0, got
    silent, bulk = waiters[:len(waiters) // 2], waiters[len(waiters) // 2:]
    for dev in silent:
        dev.writer.write(head + BODY[:half])
    big_head = encode_header({"type": "upload", "id": 8, "file_id": 2}, len(BIG))
    for dev in bulk:
        dev.writer.write(big_head + BIG[:4])
    got = await _wait_for(admin, "edgenet_uploads_waiting", len(waiters))
    assert got["edgenet_upload_slots_in_use"] == SLOTS, got
    assert got["edgenet_connections_open"] == DEVICES, got
    # A waiting upload's body stays in the kernels' buffers: 57 x 600 KiB sent now
    # (33 MiB) do not come into the server, which would hold up to 256 KiB of each.
    before = rss_kib(pid)
    for dev in bulk:
        dev.writer.write(BIG[4:-2])
    await asyncio.sleep(1.0)
    grown = rss_kib(pid) - before
    assert grown < 6 * 1024, f"the server grew by {grown} KiB while uploads waited"
    # The holders make progress (2 bytes every 0.5 s) for longer than the idle timeout,
    # while the waiters send nothing: waiting for a slot is not their silence.
    sent = 4
    for _ in range(int(IDLE / 0.5) + 2):
        await asyncio.sleep(0.5)
        for dev in holders:
            dev.writer.write(BODY[sent:sent + 2])
        sent += 2
    for dev in holders:
        dev.writer.write(BODY[sent:])
    replies = await asyncio.gather(*(dev.recv(timeout=30) for dev in holders))
    assert all(r is not None and r["type"] == "ok" and r["samples"] == 20 for r in replies), \
        [r for r in replies if r is None or r["type"] != "ok"][:3]
    # The waiters got slots as the holders' uploads ended, long after their last bytes.
    await _wait_for(admin, "edgenet_uploads_waiting", 0)
    await asyncio.sleep(IDLE / 2)
    for dev in silent:
        dev.writer.write(BODY[half:])
    for dev in bulk:
        dev.writer.write(BIG[-2:])
    replies = await asyncio.gather(*(dev.recv(timeout=30) for dev in waiters))
    assert [None if r is None else (r["type"], r.get("samples")) for r in replies] == \
        [("ok", 20)] * len(silent) + [("ok", len(BIG) // 2)] * len(bulk), \
        [r for r in replies if r is None or r["type"] != "ok"][:3]
    got = await _wait_for(admin, "edgenet_upload_slots_in_use", 0)
    assert got["edgenet_uploads_waiting"] == 0, got
    for dev in devices:
        await dev.close()


def test_uploads_beyond_the_slots_wait_and_are_all_stored(server: ServerProcess) -> None:
    limit = [e for e in server.read_events() if e.get("event") == "fd_limit"]
    assert limit and limit[0]["soft"] == LIMIT
    assert limit[0]["upload_slots"] == SLOTS
    assert limit[0]["max_connections"] == LIMIT - 64 - SLOTS
    asyncio.run(asyncio.wait_for(_session(server.port, server.admin_port(), server_pid(server)),
                                 90))
    events = server.read_events()
    names = {e.get("event") for e in events}
    assert "too_many_open_files" not in names and "upload_stalled" not in names
    assert len([e for e in events if e.get("event") == "upload"]) == DEVICES
    full = [e for e in events if e.get("event") == "upload_slots_full"]
    assert len(full) == 1 and full[0]["slots"] == SLOTS, full
    assert server.proc.poll() is None
    assert "Traceback" not in server.stderr_path.read_text(errors="replace")
