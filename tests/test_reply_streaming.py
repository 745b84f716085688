"""AED replies to devices that read slowly: the server holds at most one piece of a
reply per connection (the listing is shared, written as the socket drains), the
device still gets every reply whole and in order, and a frame for it (a takeover's
notice) never lands inside one. A real server process, read through /metrics.

Not timed: it asserts bytes buffered, not speed."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgenet.server.connection import REPLY_PIECE, WRITE_BUFFER_HIGH
from edgenet.wire.frames import encode_frame
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

FILLERS = 1800
SLOW = 12
PIPELINED = 16


def name(i: int) -> str:
    # Long names make the listing large (~290 KB, past the 256 KiB written at once);
    # PIPELINED of them are 4.6 MB, past the ~3 MB that the kernel takes over loopback
    # for a device that reads nothing.
    return f"device-{i:05d}-" + "x" * 50


def listing_server(tmp_path: Path, *extra: str) -> ServerProcess:
    """A server knowing FILLERS + SLOW long names (a large listing once they log in)."""
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"{name(i)} pw{i}\n" for i in range(FILLERS + SLOW)))
    data = tmp_path / "server"
    data.mkdir()
    return ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", *extra], data)


@pytest.fixture
def big_server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = listing_server(tmp_path, "--admin-port", "0")
    yield proc
    proc.stop()


def gauge(port: int, metric: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    raise AssertionError(f"{metric} is not in /metrics")


class SlowDevice:
    """A device with a 4 KiB receive buffer that stops reading after its login."""

    def __init__(self, port: int, i: int) -> None:
        self.i = i
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(20)
        self.buf = b""

    def send(self, fields: dict[str, object]) -> None:
        self.sock.sendall(encode_frame(fields))

    def frame(self) -> dict[str, object] | None:
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    raw, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    fields: dict[str, object] = json.loads(raw)
                    return fields
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def login(self) -> None:
        self.send({"type": "hello", "version": 1})
        assert self.frame()["type"] == "hello"  # type: ignore[index]
        self.send({"type": "login", "id": 1, "name": name(FILLERS + self.i),
                   "password": f"pw{FILLERS + self.i}", "udp_port": 30000 + self.i})
        assert self.frame()["type"] == "ok"  # type: ignore[index]


async def log_in_fillers(port: int) -> list[WireDevice]:
    async def one(i: int) -> WireDevice:
        dev = await WireDevice.connect(port)
        assert (await dev.login(name(i), f"pw{i}", 20000 + i))["type"] == "ok"
        return dev
    devices: list[WireDevice] = []
    for start in range(0, FILLERS, 200):
        devices += await asyncio.gather(*(one(i) for i in range(start, min(FILLERS, start + 200))))
    return devices


async def test_slow_readers_hold_one_piece_each_and_get_every_reply(big_server: ServerProcess) -> None:
    admin = big_server.admin_port()
    fillers = await log_in_fillers(big_server.port)
    slow = [SlowDevice(big_server.port, i) for i in range(SLOW)]
    for dev in slow:
        dev.login()
    for dev in slow:
        for k in range(PIPELINED):
            dev.send({"type": "list_devices", "id": 10 + k})
    # Let the server write all it will (bounded wait: until the total stops growing).
    last, total = -1.0, 0.0
    for _ in range(40):
        await asyncio.sleep(0.1)
        total = gauge(admin, "edgenet_reply_buffered_bytes")
        if total == last and total > 0:
            break
        last = total
    most = gauge(admin, "edgenet_reply_buffered_max_bytes")
    # Before: the rest of every reply the kernel would not take was copied into the
    # connection's buffer (and more replies after it, up to 256 KiB).
    assert 0 < most <= REPLY_PIECE, most
    assert total <= SLOW * REPLY_PIECE, total

    # A takeover of a slow reader in the middle of a reply: its notice comes after it.
    taker = await WireDevice.connect(big_server.port)
    assert (await taker.login(name(FILLERS), f"pw{FILLERS}", 40000))["type"] == "ok"

    def drain(dev: SlowDevice) -> list[dict[str, object] | None]:
        """Every frame until the first that is no AED reply (or the end)."""
        frames = []
        while len(frames) <= PIPELINED:
            frames.append(dev.frame())
            if dev is not slow[0] and len(frames) == PIPELINED:
                break
            if frames[-1] is None or frames[-1]["type"] != "ok":  # type: ignore[index]
                break
        return frames

    for dev in slow:
        frames = await asyncio.to_thread(drain, dev)
        if dev is slow[0]:
            # Taken over in the middle of a reply: it gets that reply whole (and those
            # before it), then the notice, then the end of the connection.
            *frames, notice = frames
            assert notice is not None and notice["type"] == "notice", notice
            assert notice["kind"] == "replaced", notice
            assert await asyncio.to_thread(dev.frame) is None
            assert 1 <= len(frames) < PIPELINED
        else:
            assert len(frames) == PIPELINED
        for k, reply in enumerate(frames):
            assert reply is not None and reply["type"] == "ok" and reply["id"] == 10 + k, reply
            names = {d["name"] for d in reply["devices"]}  # type: ignore[attr-defined, index]
            assert len(names) == FILLERS + SLOW - 1 and name(FILLERS + dev.i) not in names
            # Each reply is streamed (larger than what is written at once).
            assert len(json.dumps(reply)) > WRITE_BUFFER_HIGH
    for dev in slow:
        dev.sock.close()
    for f in [*fillers, taker]:
        await f.close()


@pytest.fixture
def heartbeat_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The big listing with a heartbeat of 1 s: a device silent for 2.5 s is closed."""
    proc = listing_server(tmp_path, "--no-admin", "--heartbeat", "1")
    yield proc
    proc.stop()


async def answer_pings(dev: WireDevice) -> None:
    """A filler that stays alive: it reads (and so answers every ping) until closed."""
    while await dev.recv(timeout=120) is not None:
        pass


def read_slowly(dev: SlowDevice, replies: int, pause: float) -> list[dict[str, object]]:
    """``replies`` frames other than pings, read 4 KiB at a time ``pause`` s apart (a slow
    link); pings met on the way are answered. Bounded: 60 s."""
    frames: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    while len(frames) < replies and time.monotonic() < deadline:
        if len(dev.buf) >= 4:
            (n,) = struct.unpack(">I", dev.buf[:4])
            if len(dev.buf) >= 4 + n:
                fields = json.loads(dev.buf[4:4 + n])
                dev.buf = dev.buf[4 + n:]
                if fields["type"] == "ping":
                    dev.send({"type": "pong", "id": fields["id"]})
                else:
                    frames.append(fields)
                continue
        time.sleep(pause)
        data = dev.sock.recv(4096)
        if not data:
            break
        dev.buf += data
    return frames


async def test_a_device_reading_long_replies_slowly_is_alive_and_one_that_stops_is_not(
        heartbeat_server: ServerProcess) -> None:
    port = heartbeat_server.port
    fillers = await log_in_fillers(port)
    answering = [asyncio.create_task(answer_pings(f)) for f in fillers]
    reader, stopped = SlowDevice(port, 0), SlowDevice(port, 1)
    for dev in (reader, stopped):
        dev.login()
    # Both are in before either asks (a request served after the other's login would
    # list one more device).
    for dev in (reader, stopped):
        for k in range(3):  # ~870 KB: the kernel takes it all, the server's work is done
            dev.send({"type": "list_devices", "id": 10 + k})
    # 4 KiB every 25 ms: about 5 s for the three replies, twice the 2.5 s of silence
    # after which a device is closed. Its pings wait behind the replies; what shows it
    # alive is that it keeps taking their bytes.
    started = time.monotonic()
    frames = await asyncio.to_thread(read_slowly, reader, 3, 0.025)
    took = time.monotonic() - started
    assert [f["type"] for f in frames] == ["ok", "ok", "ok"], [f.get("type") for f in frames]
    assert [f["id"] for f in frames] == [10, 11, 12]
    # The fillers and the other slow device.
    assert [len(f["devices"]) for f in frames] == [FILLERS + 1] * 3  # type: ignore[arg-type]
    reader.send({"type": "logout", "id": 20})  # still served: the connection is alive
    bye = await asyncio.to_thread(read_slowly, reader, 1, 0)
    assert bye and bye[0]["type"] == "ok" and bye[0]["id"] == 20, (bye, took)

    # The device that read nothing took no byte since its replies went into the kernel:
    # silent, closed after 2.5 heartbeats.
    timed_out: list[str] = []
    for _ in range(300):  # bounded: 30 s
        timed_out = [str(e.get("device")) for e in heartbeat_server.read_events()
                     if e.get("event") == "heartbeat_timeout"]
        if name(FILLERS + 1) in timed_out:
            break
        await asyncio.sleep(0.1)
    assert name(FILLERS + 1) in timed_out, timed_out
    assert name(FILLERS) not in timed_out
    for task in answering:
        task.cancel()
    for dev in (reader, stopped):
        dev.sock.close()
    for f in fillers:
        await f.close()
