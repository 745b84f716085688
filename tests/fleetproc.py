"""A whole fleet for end-to-end tests: Redis, SeaweedFS's S3, two nodes of the fleet
zipapp and HAProxy in front of them, all real processes on loopback; and devices
(the fleet zipapp's client, headless) that reach the fleet through HAProxy."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.clientproc import StayingDevice
from tests.conftest import CREDENTIALS, ROOT, ServerProcess
from tests.engines import BUCKET, ENGINES, S3_KEY, S3_SECRET, HAProxyEngine, RedisEngine

__all__ = ["FleetNode", "FleetRig", "StayingDevice", "commands", "results", "wait_for"]

FLEET_PYZ = ROOT / "build" / "edgenet-fleet.pyz"
#: Short enough that a killed node's devices go within a test, as the issue allows (<= 15).
LEASE = 2.0
PASSWORDS = {"alpha": "alphapass", "beta": "betapass", "gamma": "gammapass"}


def wait_for(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something true (returned) or time runs out (None)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


class FleetNode:
    def __init__(self, rig: FleetRig, node_id: str) -> None:
        self.rig = rig
        self.node_id = node_id
        self.data_dir = rig.place / node_id
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: ServerProcess | None = None
        self.port = 0
        self.admin_port = 0

    def start(self, port: int = 0, admin_port: int = 0) -> None:
        rig = self.rig
        argv = [sys.executable, str(FLEET_PYZ), "server", str(port), "3",
                "--host", "127.0.0.1", "--credentials", str(rig.credentials),
                "--data-dir", str(self.data_dir), "--block-seconds", "20",
                "--log-format", "json", "--admin-port", str(admin_port), "--heartbeat", "5",
                "--redis", rig.redis.url, "--node-id", self.node_id, "--lease", str(LEASE),
                "--files", f"s3://{BUCKET}/{rig.prefix}", "--s3-endpoint",
                ENGINES.seaweed().endpoint, "--redis-prefix", rig.prefix, "--proxy-protocol",
                "--login-rate", "0", "--shutdown-grace", "1"]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
               "EDGENET_ADMIN_TOKEN": rig.token}
        self.proc = ServerProcess(argv, self.data_dir, env=env)
        self.port = self.proc.port
        ready = wait_for(lambda: [e for e in self.proc.read_events()  # type: ignore[union-attr]
                                  if e.get("event") == "admin_ready"])
        assert ready, "the admin API did not start"
        self.admin_port = int(ready[0]["port"])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(10)
        self.proc.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def events(self, name: str) -> list[dict[str, Any]]:
        assert self.proc is not None
        return [e for e in self.proc.read_events() if e.get("event") == name]

    def api(self, path: str, method: str = "GET") -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {self.rig.token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def devices(self) -> list[dict[str, Any]]:
        status, body = self.api("/api/v1/devices")
        return list(body["data"]) if status == 200 else []


class FleetRig:
    def __init__(self, place: Path) -> None:
        self.place = place
        self.prefix = f"fleet{secrets.token_hex(4)}"
        self.token = secrets.token_hex(16)
        self.credentials = place / "credentials.txt"
        self.credentials.write_text(CREDENTIALS)
        self.redis = RedisEngine(place / "redis")
        self.nodes = [FleetNode(self, "node-a"), FleetNode(self, "node-b")]
        self.haproxy: HAProxyEngine | None = None

    def start(self) -> None:
        self.redis.start()
        ENGINES.seaweed()
        for node in self.nodes:
            node.start()
        self.haproxy = HAProxyEngine(self.place / "haproxy",
                                     [(n.port, n.admin_port) for n in self.nodes])
        self.haproxy.start()
        assert self.wait_balanced(), "HAProxy did not see both nodes up"

    def wait_balanced(self, timeout: float = 60.0) -> bool:
        """Until every node is ready and a login through each pinned port works."""
        return bool(wait_for(lambda: all(n.api("/healthz")[0] == 200 for n in self.nodes)
                             and all(self.run(i, "gamma", "AED").returncode == 0
                                     for i in range(len(self.nodes))), timeout, 0.2))

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    @property
    def balanced_port(self) -> int:
        assert self.haproxy is not None
        return self.haproxy.port

    def port_of(self, node: int | None) -> int:
        """HAProxy's port for ``node`` (an index), or the balanced one (None)."""
        assert self.haproxy is not None
        return self.haproxy.port if node is None else self.haproxy.pinned[node]

    def client_argv(self, node: int | None, name: str, *extra: str) -> list[str]:
        secret = self.place / f"{name}.pass"
        if not secret.exists():
            secret.write_text(PASSWORDS[name] + "\n")
            secret.chmod(0o600)
        data = self.place / f"device-{name}"
        data.mkdir(exist_ok=True)
        return [sys.executable, str(FLEET_PYZ), "client", "127.0.0.1", str(self.port_of(node)),
                "0", "--name", name, "--password-file", str(secret), "--data-dir", str(data),
                "--json", *extra]

    def run(self, node: int | None, name: str, commands: str, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        """A headless device runs ``commands`` ("EDG 1 10; UED 1") through HAProxy."""
        return subprocess.run(self.client_argv(node, name, "--run", commands),
                              check=False, capture_output=True, text=True, timeout=timeout)

    def stay(self, node: int | None, name: str) -> StayingDevice:
        return StayingDevice(self.client_argv(node, name, "--stay"))


def results(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every JSON line a headless device printed (its login and logout too)."""
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def commands(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The results of the commands it ran (not its login and logout)."""
    return [r for r in results(proc) if r.get("command") not in ("login", "logout")]
