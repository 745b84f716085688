"""Fleet mode against one embedded node: the same device workload on

* one embedded node (build/edgenet.pyz, the baseline of this run),
* one fleet node (build/edgenet-fleet.pyz on Redis and SeaweedFS's S3),
* two fleet nodes behind HAProxy (TCP mode, PROXY v2, health checks on /healthz),

measuring logins/s, commands/s (closed loop: SCS on a stored file, then AED), their
p50/p99 (after a first SCS per device, timed apart: it reads the file, from S3 in a fleet), the takeover latency across nodes (a login on node B until the session on
node A has its ``replaced`` notice) and the RSS of every process. Each figure is the
median of ``--runs``; the targets are ratios to the embedded node of the same run:
a fleet node at >= 50 % of its commands/s, takeover p99 < 50 ms.

    python bench/bench_fleet.py [--devices 100] [--seconds 5] [--runs 3] [--takeovers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PYZ, ROOT, cpu_seconds, median, percentile, rss_kib, save

sys.path.insert(0, str(ROOT))
from edgenet.server.proxyproto import encode_v2
from edgenet.wire.frames import MAX_REPLY_HEADER, FrameDecoder, Header, NeedData, encode_frame
from tests.engines import (
    BUCKET,
    S3_KEY,
    S3_SECRET,
    HAProxyEngine,
    RedisEngine,
    SeaweedEngine,
)
from tests.fleetproc import FLEET_PYZ

DATA = b"".join(b"%d\n" % random.randrange(10000) for _ in range(1000))


class Device:
    """One device on the wire: a login, then requests one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(max_header=MAX_REPLY_HEADER)  # AED of 1,000 devices
        self.next_id = 0
        self.retried = 0

    @classmethod
    async def connect(cls, port: int, proxy: bool) -> Device:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if proxy:  # straight to a node that expects a balancer's header
            writer.write(encode_v2(("127.0.0.1", 40000), ("127.0.0.1", port)))
        dev = cls(reader, writer)
        await dev.call({"type": "hello", "version": 1})
        return dev

    async def recv(self) -> dict[str, Any]:
        while True:
            ev = self.decoder.next_event()
            if isinstance(ev, NeedData):
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.decoder.receive_data(data)
                continue
            if isinstance(ev, Header):
                if ev.fields.get("type") == "ping":
                    self.writer.write(encode_frame({"type": "pong", "id": ev.fields["id"]}))
                    continue
                return dict(ev.fields)

    async def call(self, fields: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        if fields["type"] != "hello":
            self.next_id += 1
            fields = {**fields, "id": self.next_id}
        self.writer.write(encode_frame(fields, body))
        return await self.recv()

    async def call_retrying(self, fields: dict[str, Any], body: bytes | None = None
                            ) -> dict[str, Any]:
        """``call``, with ``service_unavailable`` ("not now": a pool wait ran out on a
        node pressed by a burst) backed off and tried again, as devices do; counted."""
        for k in range(8):
            reply = await self.call(fields, body)
            if reply.get("code") != "service_unavailable":
                return reply
            self.retried += 1
            await asyncio.sleep(min(2.0, 0.1 * 2 ** k) * (0.5 + random.random() / 2))
        return reply

    def close(self) -> None:
        self.writer.close()


async def workload(ports: list[tuple[int, bool]], n: int, seconds: float) -> dict[str, Any]:
    """``n`` devices spread over ``ports`` log in, upload one file each, then run
    SCS and AED in a closed loop for ``seconds``."""
    t0 = time.perf_counter()
    devices = []
    for i in range(n):
        port, proxy = ports[i % len(ports)]
        dev = await Device.connect(port, proxy)
        reply = await dev.call_retrying({"type": "login", "name": f"dev{i}",
                                         "password": f"pw{i}", "udp_port": 9})
        assert reply["type"] == "ok", reply
        devices.append(dev)
    logins = n / (time.perf_counter() - t0)
    for dev in devices:
        reply = await dev.call_retrying({"type": "upload", "file_id": 1, "body": len(DATA)},
                                        DATA)
        assert reply["type"] == "ok", reply

    # The first SCS of a stored file reads it (from S3 in a fleet) and keeps its
    # statistics; timed apart, all devices at once, then the steady state is measured.
    async def first(dev: Device) -> float:
        started = time.perf_counter()
        reply = await dev.call_retrying({"type": "compute", "file_id": 1, "op": "SUM"})
        assert reply["type"] == "ok", reply
        return time.perf_counter() - started
    cold = sorted(await asyncio.gather(*(first(d) for d in devices)))
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def loop(dev: Device) -> None:
        k = 0
        while time.perf_counter() < end:
            k += 1
            req = {"type": "compute", "file_id": 1, "op": "SUM"} if k % 2 else \
                {"type": "list_devices"}
            started = time.perf_counter()
            reply = await dev.call_retrying(req)
            latencies.append(time.perf_counter() - started)
            assert reply["type"] == "ok", reply
    t1 = time.perf_counter()
    await asyncio.gather(*(loop(d) for d in devices))
    elapsed = time.perf_counter() - t1
    for dev in devices:
        dev.close()
    latencies.sort()
    return {"logins_per_s": logins, "retried": sum(d.retried for d in devices),
            "commands_per_s": len(latencies) / elapsed,
            "first_scs_p50_ms": percentile(cold, 0.5) * 1000,
            "first_scs_p99_ms": percentile(cold, 0.99) * 1000,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


async def takeovers(a: int, b: int, rounds: int) -> dict[str, float]:
    """Log ``dev0`` in on node A, then on node B; the time from B's login request to
    the notice on A's session."""
    samples = []
    for _ in range(rounds):
        old = await Device.connect(a, True)
        await old.call({"type": "login", "name": "dev0", "password": "pw0", "udp_port": 9})
        new = await Device.connect(b, True)
        started = time.perf_counter()
        new.writer.write(encode_frame({"type": "login", "id": 1, "name": "dev0",
                                       "password": "pw0", "udp_port": 9}))
        notice = await asyncio.wait_for(old.recv(), 5)
        samples.append(time.perf_counter() - started)
        assert notice.get("kind") == "replaced", notice
        await new.recv()
        old.close()
        new.close()
    samples.sort()
    return {"takeover_p50_ms": percentile(samples, 0.5) * 1000,
            "takeover_p99_ms": percentile(samples, 0.99) * 1000}


class Node:
    def __init__(self, pyz: Path, place: Path, extra: list[str], env: dict[str, str]) -> None:
        import subprocess

        place.mkdir(parents=True, exist_ok=True)
        self.log = place / "server.log"
        creds = place / "credentials.txt"
        creds.write_text("".join(f"dev{i} pw{i}\n" for i in range(2000)))
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(pyz), "server", "0", "5", "--host", "127.0.0.1",
             "--credentials", str(creds), "--data-dir", str(place / "data"),
             "--log-format", "json", "--admin-port", "0", "--login-rate", "0",
             "--heartbeat", "600", *extra],  # the workload is not about liveness
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._out,
            env={**os.environ, **env})
        self.port = self.admin = 0
        deadline = time.monotonic() + 30
        import json

        while time.monotonic() < deadline and not (self.port and self.admin):
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            for line in self.log.read_text(errors="replace").splitlines():
                if '"server_ready"' in line:
                    self.port = int(json.loads(line)["port"])
                if '"admin_ready"' in line:
                    self.admin = int(json.loads(line)["port"])
            time.sleep(0.05)
        if not (self.port and self.admin):
            raise RuntimeError("node not ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self._out.close()


def fleet_args(redis: RedisEngine, weed: SeaweedEngine, node: str, prefix: str,
               proxy: bool) -> list[str]:
    return ["--redis", redis.url, "--node-id", node, "--redis-prefix", prefix,
            "--files", f"s3://{BUCKET}/{prefix}", "--s3-endpoint", weed.endpoint,
            *(["--proxy-protocol"] if proxy else [])]


def one_run(place: Path, n: int, seconds: float, rounds: int, redis: RedisEngine,
            weed: SeaweedEngine) -> dict[str, Any]:
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    out: dict[str, Any] = {}
    tag = f"b{random.randrange(1 << 30):x}"
    # 1. the embedded node
    node = Node(PYZ, place / "embedded", [], {})
    try:
        out["embedded"] = asyncio.run(workload([(node.port, False)], n, seconds))
        out["embedded"]["rss_kib"] = rss_kib(node.proc.pid)
    finally:
        node.stop()
    # 2. one fleet node
    node = Node(FLEET_PYZ, place / "fleet1", fleet_args(redis, weed, "one", tag + "1", False),
                env)
    try:
        out["fleet_one"] = asyncio.run(workload([(node.port, False)], n, seconds))
        out["fleet_one"]["rss_kib"] = rss_kib(node.proc.pid)
    finally:
        node.stop()
    # 3. two fleet nodes behind HAProxy
    nodes = [Node(FLEET_PYZ, place / f"fleet2-{k}", fleet_args(redis, weed, k, tag + "2", True),
                  env) for k in ("a", "b")]
    haproxy = HAProxyEngine(place / "haproxy", [(x.port, x.admin) for x in nodes])
    try:
        haproxy.start()
        time.sleep(1.0)  # the first health checks
        cpu0 = cpu_seconds(haproxy.proc.pid) if haproxy.proc else 0.0
        out["fleet_two"] = asyncio.run(workload([(haproxy.port, False)], n, seconds))
        out["fleet_two"]["rss_kib"] = [rss_kib(x.proc.pid) for x in nodes]
        out["fleet_two"]["haproxy_rss_kib"] = rss_kib(haproxy.proc.pid) if haproxy.proc else 0
        out["fleet_two"]["haproxy_cpu_s"] = (cpu_seconds(haproxy.proc.pid) - cpu0
                                             if haproxy.proc else 0.0)
        out["fleet_two"].update(asyncio.run(takeovers(nodes[0].port, nodes[1].port, rounds)))
        assert redis.proc is not None and weed.proc is not None
        out["redis_rss_kib"] = rss_kib(redis.proc.pid)
        out["seaweedfs_rss_kib"] = rss_kib(weed.proc.pid)
    finally:
        haproxy.stop()
        for x in nodes:
            x.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--takeovers", type=int, default=50)
    args = ap.parse_args()
    for pyz in (PYZ, FLEET_PYZ):
        if not pyz.exists():
            print(f"{pyz} is missing: run `make pyz pyz-fleet` first", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-fleet-") as tmp:
        place = Path(tmp)
        try:
            redis, weed = RedisEngine(place / "redis"), SeaweedEngine(place / "weed")
        except BaseException as exc:  # noqa: BLE001 - pytest's skip: an engine is missing
            print(f"fleet bench: not run ({exc})", file=sys.stderr)
            save("fleet", {"skipped": str(exc)})
            return 0
        redis.start()
        weed.start()
        try:
            runs = [one_run(place / f"run{i}", args.devices, args.seconds, args.takeovers,
                            redis, weed) for i in range(args.runs)]
        finally:
            weed.stop()
            redis.stop()
    def med(path: tuple[str, str]) -> float:
        return median([float(r[path[0]][path[1]]) for r in runs])
    table: dict[str, Any] = {}
    for setup in ("embedded", "fleet_one", "fleet_two"):
        table[setup] = {k: med((setup, k)) for k in
                        ("logins_per_s", "commands_per_s", "p50_ms", "p99_ms",
                         "first_scs_p50_ms", "first_scs_p99_ms")}
    # Each run's ratio to the embedded node of that same run, then their median (the
    # machine's load moves all three setups of a run together, not the runs alike).
    for setup in ("fleet_one", "fleet_two"):
        table[setup]["ratio_to_embedded"] = median(
            [r[setup]["commands_per_s"] / r["embedded"]["commands_per_s"] for r in runs])
    table["takeover_p50_ms"] = med(("fleet_two", "takeover_p50_ms"))
    table["takeover_p99_ms"] = med(("fleet_two", "takeover_p99_ms"))
    result = {"devices": args.devices, "seconds": args.seconds, "runs": runs, "median": table}
    save("fleet", result)
    print(f"{'setup':<12}{'logins/s':>10}{'cmds/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"
          f"{'1st SCS p50':>13}{'p99':>9}")
    for setup in ("embedded", "fleet_one", "fleet_two"):
        row = table[setup]
        print(f"{setup:<12}{row['logins_per_s']:>10.0f}{row['commands_per_s']:>10.0f}"
              f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row.get('ratio_to_embedded', 1.0):>8.2f}"
              f"{row['first_scs_p50_ms']:>13.1f}{row['first_scs_p99_ms']:>9.1f}")
    print(f"takeover across nodes: p50 {table['takeover_p50_ms']:.1f} ms, "
          f"p99 {table['takeover_p99_ms']:.1f} ms (target < 50)")
    last = runs[-1]
    print(f"RSS KiB: embedded {last['embedded']['rss_kib']}, fleet node "
          f"{last['fleet_one']['rss_kib']}, two nodes {last['fleet_two']['rss_kib']}, haproxy "
          f"{last['fleet_two']['haproxy_rss_kib']}, redis {last['redis_rss_kib']}, seaweedfs "
          f"{last['seaweedfs_rss_kib']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
