"""Load generator (its own process): devices log in and then loop on AED and SCS
(on a small file each uploaded first) for a fixed time, reading their replies as
the real client does: in bounded pieces (64 KiB reads into one buffer of the
process), never holding more of a reply than its first bytes; it answers the
server's pings. ``--slow`` makes every device a slow reader (an 8 KiB receive
buffer and a pause after each read, a slow cellular link).

    python bench/loadgen.py PORT DEVICES SECONDS [--first N] [--rate R] [--slow]
           [--no-loop] [--sync] [--sources K] [--stepwise]

Devices log in the way bench/mqtt_probe.py connects Mosquitto's clients, so that the
two rates compare the servers and not the two probes: BATCH at a time, each a
blocking TCP connect and one write of hello + login (the headless client's
pipelined login: one round trip, as MQTT's CONNECT/CONNACK), then one selector
until every answer is in. ``--stepwise`` waits for the hello answer before sending
the login (the interactive shell's two round trips). Logged-in sockets are then
handed to asyncio for the command loop and the pings.

``--sources K`` spreads the devices over K loopback source addresses (127.0.0.2 on,
bound before connect), each with its own ephemeral ports.

It prints ``READY {json}`` once its devices are logged in (login timings in Unix
time, so that several processes can be added up), and with ``--sync`` waits for a
line on stdin (``go``, or ``quit`` to end without the loop) before looping. The last
line is one JSON object: commands, latencies, errors, and its own CPU time.
Raises its own open-file limit to the hard limit (a process holds one descriptor
per device)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time
from pathlib import Path

_LEN = struct.Struct(">I")
NO_LINGER = struct.pack("ii", 1, 0)
SMALL_FILE = b"".join(b"%d\n" % (i * 37 % 1000) for i in range(100))
#: One read of a device's socket (the real client reads 64 KiB at a time).
READ_SIZE = 64 * 1024
#: Bytes of a frame kept to look at (type, error); frames up to this size are kept whole.
KEEP = 4096
SLOW_RCVBUF = 8 * 1024
#: A TCP connect given up after this long (as the Mosquitto probe's paho client).
CONNECT_TIMEOUT = 10.0
#: A batch whose answers have not all come by then counts the rest as failed.
LOGIN_TIMEOUT = 30.0
#: Linux: the source port is chosen at connect, not at bind (so that one source
#: address's ports are shared between destinations, as an unbound socket's are).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def source_address(index: int, sources: int) -> str | None:
    """The loopback address device ``index`` connects from: 127.0.0.2 ... 127.0.0.(1 +
    sources) in turn, each with its own ephemeral ports (None: let the kernel choose,
    127.0.0.1, whose ~28,000 ports 20,000 connections nearly fill)."""
    return f"127.0.0.{2 + index % sources}" if sources > 0 else None
SLOW_PAUSE = 0.050
#: One buffer for every socket's reads: ``buffer_updated`` runs right after the read
#: that filled it, so the devices of a process never share it at the same time.
_SHARED = bytearray(READ_SIZE)
_VIEW = memoryview(_SHARED)


def frame(fields: dict[str, object], body: bytes = b"") -> bytes:
    if body:
        fields = {**fields, "body": len(body)}
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return _LEN.pack(len(raw)) + raw + body


HELLO = frame({"type": "hello", "version": 1})


class DeviceProtocol(asyncio.BufferedProtocol):
    """Splits the stream into frames without keeping more than ``KEEP`` bytes of one;
    answers pings; hands every other frame's first bytes to the waiting request."""

    def __init__(self, slow: bool) -> None:
        self.slow = slow
        self.transport: asyncio.Transport | None = None
        self._len = bytearray()
        self._left = 0
        self._kept = bytearray()
        self._frames: list[bytes] = []
        self._waiter: asyncio.Future[bytes] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        return _VIEW

    def buffer_updated(self, nbytes: int) -> None:
        data = _VIEW[:nbytes]
        pos = 0
        while pos < nbytes:
            if not self._left:
                take = min(4 - len(self._len), nbytes - pos)
                self._len += data[pos:pos + take]
                pos += take
                if len(self._len) == 4:
                    (self._left,) = _LEN.unpack(self._len)
                    self._len.clear()
                    if not self._left:
                        self._done()
                continue
            take = min(self._left, nbytes - pos)
            room = KEEP - len(self._kept)
            if room > 0:
                self._kept += data[pos:pos + min(take, room)]
            self._left -= take
            pos += take
            if not self._left:
                self._done()
        if self.slow and self.transport is not None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(SLOW_PAUSE, self._resume)

    def feed(self, data: bytes) -> None:
        """Bytes read before the socket was handed to asyncio (after the login's ``ok``)."""
        for i in range(0, len(data), READ_SIZE):
            piece = data[i:i + READ_SIZE]
            _VIEW[:len(piece)] = piece
            self.buffer_updated(len(piece))

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _done(self) -> None:
        head = bytes(self._kept)
        self._kept.clear()
        if head.startswith(b'{"type":"ping"'):
            self.pings += 1
            rid = json.loads(head)["id"]
            assert self.transport is not None
            self.transport.write(frame({"type": "pong", "id": rid}))
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(head)
            self._waiter = None
        else:
            self._frames.append(head)

    def next_frame(self) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._frames:
            fut.set_result(self._frames.pop(0))
        elif self.closed.done():
            fut.set_exception(ConnectionError("closed by the server"))
        else:
            self._waiter = fut
        return fut

    def expire(self) -> None:
        """The run is over: a reply still coming is given up (a slow reader's AED at
        20,000 devices takes longer than a run)."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError("the run is over"))
            self._waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("closed by the server"))


class Device:
    def __init__(self, index: int, slow: bool, source: str | None = None) -> None:
        self.index = index
        self.slow = slow
        self.source = source
        self.latencies: list[float] = []
        #: Send time of each command (to count only the steady state of a paced run).
        self.sent_at: list[float] = []
        self.errors = 0
        #: Commands whose reply had not come when the run ended.
        self.unfinished = 0
        self.proto: DeviceProtocol | None = None

    def open(self, port: int, stepwise: bool) -> socket.socket:
        """A blocking connect, then hello (+ login unless ``stepwise``) in one write."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Closed with a reset: no TIME_WAIT left on the loopback's ephemeral ports,
            # which would slow the next run's connects (every run opens up to 20,000).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
            if self.slow:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            if self.source is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.source, 0))
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(("127.0.0.1", port))
            sock.sendall(HELLO if stepwise else HELLO + self.login_frame())
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def login_frame(self) -> bytes:
        return frame({"type": "login", "id": 1, "name": f"dev{self.index}",
                      "password": f"pw{self.index}", "udp_port": 20000 + self.index % 40000})

    async def attach(self, sock: socket.socket, rest: bytes) -> None:
        """Hand a logged-in socket to asyncio (``rest``: bytes read after the ``ok``)."""
        slow = self.slow
        _, self.proto = await asyncio.get_running_loop().create_connection(
            lambda: DeviceProtocol(slow), sock=sock)
        if rest:
            self.proto.feed(rest)

    async def upload(self) -> bytes:
        assert self.proto is not None and self.proto.transport is not None
        self.proto.transport.write(frame({"type": "upload", "id": 2, "file_id": 1}, SMALL_FILE))
        return await self.proto.next_frame()

    async def loop(self, until: float, interval: float) -> None:
        """Closed loop when ``interval`` is 0; else one command every ``interval`` s
        (a device's own pace), starting at a random phase."""
        assert self.proto is not None and self.proto.transport is not None
        rid = 1  # AED first: a slow reader is busy with the listing from the start
        next_at = time.perf_counter() + random.random() * interval
        requests = (
            frame({"type": "list_devices", "id": 0}),
            frame({"type": "compute", "id": 0, "file_id": 1, "op": "SUM"}),
        )
        while time.perf_counter() < until:
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
                if time.perf_counter() >= until:
                    break
            rid += 1
            if self.proto.closed.done():  # the server closed it (a slow reader dropped)
                self.errors += 1
                return
            t0 = time.perf_counter()
            self.proto.transport.write(requests[rid % 2])
            try:
                head = await self.proto.next_frame()
            except TimeoutError:
                self.unfinished += 1
                return
            except ConnectionError:
                self.errors += 1
                return
            self.latencies.append(time.perf_counter() - t0)
            self.sent_at.append(t0)
            if head[:16].find(b'"error"') >= 0:
                self.errors += 1

    def close(self) -> None:
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()


class _Login:
    """One device's login in progress: the bytes read so far, the frames seen."""

    __slots__ = ("device", "sock", "buf", "hello_seen")

    def __init__(self, device: Device, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.buf = b""
        self.hello_seen = False

    def frames(self) -> list[bytes]:
        out = []
        while len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(self.buf[4:4 + n])
            self.buf = self.buf[4 + n:]
        return out


def login_batch(devices: list[Device], port: int, stepwise: bool
                ) -> tuple[list[tuple[Device, socket.socket, bytes]], int]:
    """Log ``devices`` in at once; returns (device, socket, bytes after the ok) of
    each that got its ``ok``, and how many failed."""
    sel = selectors.DefaultSelector()
    failed = 0
    done: list[tuple[Device, socket.socket, bytes]] = []
    for d in devices:
        try:
            sock = d.open(port, stepwise)
        except OSError:
            failed += 1
            continue
        sel.register(sock, selectors.EVENT_READ, _Login(d, sock))
    deadline = time.monotonic() + LOGIN_TIMEOUT
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            state: _Login = key.data
            try:
                data = state.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(state.sock)
                state.sock.close()
                failed += 1
                continue
            state.buf += data
            for head in state.frames():
                if not state.hello_seen:
                    state.hello_seen = True
                    if stepwise:
                        state.sock.sendall(state.device.login_frame())
                    continue
                sel.unregister(state.sock)
                if json.loads(head).get("type") == "ok":
                    done.append((state.device, state.sock, state.buf))
                else:
                    state.sock.close()
                    failed += 1
                break
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
        failed += 1
    sel.close()
    return done, failed


async def _read_line() -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


async def main(a: argparse.Namespace) -> dict[str, object]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    devices = [Device(a.first + i, a.slow, source_address(a.first + i, a.sources))
               for i in range(a.devices)]
    cpu_login0 = time.process_time()
    t0 = time.time()
    failed = 0
    logged_in: list[tuple[Device, socket.socket, bytes]] = []
    for i in range(0, len(devices), a.batch):
        done, lost = login_batch(devices[i:i + a.batch], a.port, a.stepwise)
        logged_in += done
        failed += lost
    t1 = time.time()
    login_cpu = time.process_time() - cpu_login0
    for d, sock, rest in logged_in:
        await d.attach(sock, rest)
    upload_failed = 0
    if a.loop:
        # BATCH at a time: each upload holds a temporary file open on the server, and
        # 20,000 at once would take more descriptors than it may have.
        live = [d for d in devices if d.proto is not None]
        for i in range(0, len(live), a.batch):
            heads = await asyncio.gather(*(d.upload() for d in live[i:i + a.batch]),
                                         return_exceptions=True)
            upload_failed += sum(1 for h in heads if not isinstance(h, bytes)
                                 or h[:16].find(b'"error"') >= 0)
    ready = {"login_start": t0, "login_end": t1, "login_failed": failed,
             "upload_failed": upload_failed,
             "login_cpu_s": login_cpu, "pid": os.getpid()}
    print("READY " + json.dumps(ready), flush=True)
    if a.sync and await _read_line() != "go":
        for d in devices:
            d.close()
        return {**ready, "commands": 0, "quit": True}
    if not a.loop:
        for d in devices:
            d.close()
        return {**ready, "commands": 0}
    until = time.perf_counter() + a.seconds
    interval = a.total / a.rate if a.rate else 0.0
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    loop.call_later(a.seconds, lambda: [d.proto.expire() for d in devices if d.proto is not None])
    await asyncio.gather(*(d.loop(until, interval) for d in devices if d.proto is not None))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    if interval:
        # Paced: each device starts at a random phase within its first interval, so
        # the rate is counted from the end of that first interval on (steady state).
        steady = wall0 + interval
        lat = [x for d in devices for x, t in zip(d.latencies, d.sent_at) if t >= steady]
        rate_window = until - steady
    else:
        lat = [x for d in devices for x in d.latencies]
        rate_window = wall
    for d in devices:
        d.close()
    return {
        **ready, "devices": a.devices, "seconds": wall, "offered_rate": a.rate or None,
        "commands": len(lat), "rate_window": rate_window, "latencies": sorted(lat),
        "errors": sum(d.errors for d in devices) + failed,
        "unfinished": sum(d.unfinished for d in devices),
        "pings": sum(d.proto.pings for d in devices if d.proto is not None),
        "loadgen_cpu_s": cpu, "loop": type(asyncio.get_running_loop()).__module__,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("devices", type=int, help="devices of this process")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--first", type=int, default=0, help="index of this process's first device")
    ap.add_argument("--total", type=int, default=0,
                    help="devices of all processes (for the paced interval; default DEVICES)")
    ap.add_argument("--batch", type=int, default=250, help="connections opened at once")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="total commands/s offered, spread over all devices (0: closed loop)")
    ap.add_argument("--slow", action="store_true", help="slow readers (8 KiB receive buffer, 50 ms pause after each read)")
    ap.add_argument("--no-loop", dest="loop", action="store_false",
                    help="log in only (no upload, no command loop)")
    ap.add_argument("--sync", action="store_true", help="wait for 'go' on stdin before looping")
    ap.add_argument("--sources", type=int, default=0,
                    help="loopback source addresses, from 127.0.0.2 on (0: 127.0.0.1)")
    ap.add_argument("--stepwise", action="store_true",
                    help="send the login after the hello answer (two round trips)")
    ap.add_argument("--out", type=Path, help="write the result there (default: stdout)")
    args = ap.parse_args()
    args.total = args.total or args.devices
    try:
        # The load generator (not the server) runs on uvloop when it is installed
        # (`pip install -e '.[bench]'`): a cheaper client loop leaves more of the two
        # cores to the server under test and adds less of its own queueing to latency.
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = json.dumps(asyncio.run(main(args)))
    if args.out:
        args.out.write_text(result)
        result = json.dumps({"out": str(args.out)})
    print(result, flush=True)
