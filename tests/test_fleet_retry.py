"""``service_unavailable`` is "not now", not "no": devices try the same login again.

Real processes: a Redis of the test's own, one node of the fleet zipapp, and the
fleet zipapp's client. A device that stays (``--stay``) loses its connection while
Redis is down (it is stopped with SIGSTOP until the node's heartbeat drops it),
so its re-login is refused with ``service_unavailable``: it backs off and tries
again, and is logged in again once Redis is back, without exiting (one that does
not stay exits 4, the server unavailable, not 3, refused). An interactive
(scripted) login says clearly that the server cannot log it in now, and gets in
when Redis is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CREDENTIALS, ServerProcess
from tests.engines import RedisEngine
from tests.fleetproc import FLEET_PYZ, StayingDevice, wait_for


class Node:
    def __init__(self, place: Path) -> None:
        self.redis = RedisEngine(place / "redis")
        self.redis.start()
        creds = place / "credentials.txt"
        creds.write_text(CREDENTIALS)
        data = place / "node"
        data.mkdir()
        self.proc = ServerProcess(
            [sys.executable, str(FLEET_PYZ), "server", "0", "3", "--host", "127.0.0.1",
             "--credentials", str(creds), "--data-dir", str(data), "--log-format", "json",
             "--admin-port", "0", "--heartbeat", "0.4", "--redis", self.redis.url,
             "--node-id", "retry", "--lease", "2"], data)
        ready = wait_for(lambda: [e for e in self.proc.read_events()
                                  if e.get("event") == "admin_ready"])
        assert ready
        self.admin = int(ready[0]["port"])

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz",
                                        timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.proc.read_events() if e.get("event") == name]

    def stop(self) -> None:
        self.proc.stop()
        self.redis.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.stop()


def test_a_staying_device_retries_a_login_refused_for_now(node: Node, tmp_path: Path) -> None:
    secret = tmp_path / "alpha.pass"
    secret.write_text("alphapass\n")
    secret.chmod(0o600)
    (tmp_path / "dev").mkdir()
    dev = StayingDevice([sys.executable, str(FLEET_PYZ), "client", "127.0.0.1",
                         str(node.proc.port), "0", "--name", "alpha", "--password-file",
                         str(secret), "--data-dir", str(tmp_path / "dev"), "--json", "--stay",
                         "--reconnect-max", "1"])
    try:
        logins = lambda: [x for x in dev.read() if x.get("command") == "login"  # noqa: E731
                          and x.get("ok")]
        assert wait_for(logins, 15)
        node.redis.stop()
        assert wait_for(lambda: node.healthz() == 503, 10)
        # The device is cut off while Redis is down: frozen until the heartbeat drops it.
        dev.proc.send_signal(signal.SIGSTOP)
        try:
            assert wait_for(lambda: [e for e in node.events("heartbeat_timeout")
                                     if e.get("device") == "alpha"], 10)
        finally:
            dev.proc.send_signal(signal.SIGCONT)
        # Its re-login is refused for now: it says so, and keeps trying.
        refused = wait_for(lambda: [x for x in dev.read()
                                    if x.get("event") == "login_unavailable"], 15)
        assert refused and refused[0]["code"] == "service_unavailable", dev.lines
        assert "Redis" in str(refused[0]["reason"])
        time.sleep(1.5)  # a few more tries, all refused
        assert dev.proc.poll() is None, (dev.proc.returncode, dev.lines)
        assert len([x for x in dev.read() if x.get("event") == "login_unavailable"]) >= 2
        node.redis.start()
        # Back logged in, without exiting; the node lists it again.
        assert wait_for(lambda: len(logins()) >= 2, 20), dev.lines
        assert dev.proc.poll() is None
        assert wait_for(lambda: [e for e in node.events("login")
                                 if e.get("device") == "alpha"][1:], 5)
    finally:
        assert dev.stop() == 0


def test_an_interactive_login_says_it_is_refused_for_now(node: Node, tmp_path: Path) -> None:
    node.redis.stop()
    assert wait_for(lambda: node.healthz() == 503, 10)
    # A headless device that does not stay: exit 4 (the server cannot serve now), not 3
    # (authentication refused).
    secret = tmp_path / "alpha.pass"
    secret.write_text("alphapass\n")
    secret.chmod(0o600)
    once = subprocess.run([sys.executable, str(FLEET_PYZ), "client", "127.0.0.1",
                           str(node.proc.port), "0", "--name", "alpha", "--password-file",
                           str(secret), "--data-dir", str(tmp_path), "--run", "AED"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert once.returncode == 4, (once.returncode, once.stderr)
    assert "login as alpha not possible now" in once.stderr and "Redis" in once.stderr
    client = subprocess.Popen(
        [sys.executable, str(FLEET_PYZ), "client", "127.0.0.1", str(node.proc.port), "0",
         "--data-dir", str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("alpha\nalphapass\n")
        client.stdin.flush()
        os.set_blocking(client.stdout.fileno(), False)
        seen: list[str] = []

        def said(text: str) -> bool:
            seen.extend(line for line in iter(client.stdout.readline, "") if line)  # type: ignore[union-attr]
            return any(text in line for line in seen)
        assert wait_for(lambda: said("cannot log you in right now"), 15), seen
        line = next(x for x in seen if "cannot log you in right now" in x)
        assert "Redis" in line and "trying again in" in line
        node.redis.start()
        assert wait_for(lambda: said("Welcome to the edge network, alpha!"), 20), seen
        client.stdin.write("AED\nOUT\n")
        client.stdin.flush()
        assert client.wait(15) == 0
        said("Bye")
        assert any("Bye, alpha!" in x for x in seen), seen
        # The name was never asked again (the command lines were not taken for names).
        assert not [x for x in seen if "unknown command" in x or "name" in x.lower()
                    and "invalid" in x.lower()]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
