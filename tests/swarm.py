"""Many devices logged in over loopback, held open, for the dashboard's scale test.

``python -m tests.swarm PORT FIRST COUNT [--work N]`` logs in devices
``dev-FIRST``..``dev-(FIRST+COUNT-1)`` (password ``pw-<n>``), prints ``ready COUNT
SECONDS`` and holds them until stdin closes; ``--work N`` makes N of them send an
AED every second meanwhile, so the server's counters move (a small UED each, then
an SCS a second). Every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time

from tests.wireclient import WireDevice

BATCH = 200
#: The longest a swarm runs (seconds): it stops by itself even if nobody closes stdin.
MAX_LIFETIME = 600.0


def device_name(n: int) -> str:
    return f"dev-{n:04d}"


def raise_open_files(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def login(port: int, n: int) -> WireDevice:
    dev = await WireDevice.connect(port)
    reply = await dev.login(device_name(n), f"pw-{n:04d}", 20000 + n % 40000)
    if reply.get("type") != "ok":
        raise RuntimeError(f"{device_name(n)}: {reply}")
    return dev


async def work(devices: list[WireDevice], per_second: int, stop: asyncio.Event) -> None:
    """``per_second`` devices upload a small file, then compute on it once a second."""
    workers = devices[:per_second]
    for dev in workers:
        await dev.call({"type": "upload", "file_id": 1}, b"1\n2\n3\n")
    while not stop.is_set():
        for dev in list(workers):
            try:
                await dev.call({"type": "compute", "file_id": 1, "op": "SUM"})
            except (AssertionError, ConnectionError, OSError):
                workers.remove(dev)  # kicked by the test: carry on without it
        with contextlib.suppress(asyncio.TimeoutError):  # a second passed: another round
            await asyncio.wait_for(stop.wait(), 1.0)


async def main(port: int, first: int, count: int, per_second: int) -> int:
    raise_open_files(count + 200)
    t0 = time.monotonic()
    devices: list[WireDevice] = []
    for start in range(first, first + count, BATCH):
        batch = range(start, min(start + BATCH, first + count))
        devices += await asyncio.gather(*(login(port, n) for n in batch))
    print(f"ready {len(devices)} {time.monotonic() - t0:.2f}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    loop.call_later(MAX_LIFETIME, stop.set)
    await work(devices, per_second, stop) if per_second else await stop.wait()
    for dev in devices:
        dev.writer.close()
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("first", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--work", type=int, default=0)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.port, a.first, a.count, a.work)))
