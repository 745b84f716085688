"""Load generator (its own process): N devices log in at once and loop on AED and
SCS (on a small file each uploaded first) for a fixed time. Prints one JSON
object: logins/s, commands, latencies, and its own CPU time.

    python bench/loadgen.py PORT DEVICES SECONDS [--first N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import struct
import time

_LEN = struct.Struct(">I")
SMALL_FILE = b"".join(b"%d\n" % (i * 37 % 1000) for i in range(100))


def frame(fields: dict[str, object], body: bytes = b"") -> bytes:
    if body:
        fields = {**fields, "body": len(body)}
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return _LEN.pack(len(raw)) + raw + body


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    return await reader.readexactly(n)


class Device:
    def __init__(self, index: int) -> None:
        self.index = index
        self.latencies: list[float] = []
        #: Send time of each command (to count only the steady state of a paced run).
        self.sent_at: list[float] = []
        self.errors = 0

    async def connect_and_login(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        self.writer.write(frame({"type": "hello", "version": 1}))
        await read_frame(self.reader)
        self.writer.write(frame({"type": "login", "id": 1, "name": f"dev{self.index}",
                                 "password": f"pw{self.index}", "udp_port": 20000 + self.index}))
        reply = json.loads(await read_frame(self.reader))
        if reply.get("type") != "ok":
            raise RuntimeError(f"login failed: {reply}")
        self.writer.write(frame({"type": "upload", "id": 2, "file_id": 1}, SMALL_FILE))
        await read_frame(self.reader)

    async def loop(self, until: float, start_gate: asyncio.Event, interval: float) -> None:
        """Closed loop when ``interval`` is 0; else one command every ``interval`` s
        (a device's own pace), starting at a random phase."""
        await start_gate.wait()
        rid = 2
        next_at = time.perf_counter() + random.random() * interval
        requests = (
            frame({"type": "list_devices", "id": 0}),
            frame({"type": "compute", "id": 0, "file_id": 1, "op": "SUM"}),
        )
        # Every request of this loop is answered by exactly one frame (the server
        # only pings idle devices), so the load generator need not decode JSON.
        while time.perf_counter() < until:
            if interval:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += interval
                if time.perf_counter() >= until:
                    break
            rid += 1
            t0 = time.perf_counter()
            self.writer.write(requests[rid % 2])
            raw = await read_frame(self.reader)
            self.latencies.append(time.perf_counter() - t0)
            self.sent_at.append(t0)
            if raw[:16].find(b'"error"') >= 0:
                self.errors += 1

    async def close(self) -> None:
        self.writer.close()


async def main(port: int, n: int, seconds: float, batch: int, rate: float) -> dict[str, object]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    devices = [Device(i) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        await asyncio.gather(*(d.connect_and_login(port) for d in devices[i : i + batch]))
    login_s = time.perf_counter() - t0
    gate = asyncio.Event()
    until = time.perf_counter() + seconds
    interval = n / rate if rate else 0.0
    tasks = [asyncio.create_task(d.loop(until, gate, interval)) for d in devices]
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    gate.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    if interval:
        # Paced: each device starts at a random phase within its first interval, so
        # the rate is counted from the end of that first interval on (steady state).
        steady = wall0 + interval
        lat = sorted(x for d in devices for x, t in zip(d.latencies, d.sent_at) if t >= steady)
        rate_window = until - steady
    else:
        lat = sorted(x for d in devices for x in d.latencies)
        rate_window = wall
    await asyncio.gather(*(d.close() for d in devices))
    return {
        "devices": n, "seconds": wall, "offered_rate": rate or None, "commands": len(lat),
        "commands_per_s": len(lat) / rate_window if rate_window > 0 else 0.0,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
        "errors": sum(d.errors for d in devices),
        "logins_per_s": n / login_s, "login_seconds": login_s,
        "loadgen_cpu_s": cpu, "loadgen_cpu_share": cpu / wall if wall else 0.0,
        "pid": os.getpid(), "loop": type(asyncio.get_running_loop()).__module__,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("devices", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--rate", type=float, default=0.0,
                    help="total commands/s offered, spread over the devices (0: closed loop)")
    a = ap.parse_args()
    try:
        # The load generator (not the server) runs on uvloop when it is installed
        # (`pip install -e '.[bench]'`): a cheaper client loop leaves more of the two
        # cores to the server under test and adds less of its own queueing to latency.
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(a.port, a.devices, a.seconds, a.batch, a.rate))))
