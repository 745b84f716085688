"""UVF across NATs, proven in network namespaces (root only; CI runs as root).

A small internet (tests/netns.py): the server in a "public" namespace, two sites whose
devices sit behind routers doing nftables masquerade, documentation addresses only. The
built zipapp runs as the server and as headless devices inside the namespaces (``ip netns
exec``). Two endpoint-independent NATs: the transfer is ``direct``; a port-randomising NAT
(``masquerade fully-random``) on either side or both: ``relayed``. A third party in the
public namespace sprays datagrams at the relay and at the sites meanwhile: nothing is
relayed for it, it gets no byte back, and the file arrives intact; the relay's rate cap
holds. The namespaces are removed at the end, also on failure (a finalizer), and the
leftovers of runs that died are swept first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.conftest import PYZ
from tests.filedata import make_file, sha

REASON = netns.why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

#: The relay's per-device rate in these tests (bytes a second), so that its cap shows.
RELAY_RATE = 2_000_000
CREDENTIALS = "alpha alphapass\nbeta betapass\n"


@dataclass
class World:
    lab: netns.NetLab
    root: Path
    server: subprocess.Popen[bytes]
    server_log: Path
    port: int
    admin_port: int


def events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[World]:
    missing = netns.missing_tools()
    assert missing is None, missing
    netns.sweep()
    root = tmp_path_factory.mktemp("nat")
    lab = netns.NetLab()
    request.addfinalizer(lab.close)
    lab.build()
    (root / "credentials.txt").write_text(CREDENTIALS)
    for name in ("alpha", "beta"):
        secret = root / f"{name}.pass"
        secret.write_text(f"{name}pass\n")
        os.chmod(secret, 0o600)
    log = root / "server.log"
    with log.open("wb") as err:
        server = lab.run("pub", [sys.executable, str(PYZ), "server", "0", "3", "--credentials",
                                 str(root / "credentials.txt"), "--data-dir", str(root / "srv"),
                                 "--log-format", "json", "--admin-port", "0",
                                 "--relay-device-rate", str(RELAY_RATE)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    request.addfinalizer(lambda: stop(server))
    port = admin = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (port and admin):
        for ev in events(log):
            if ev.get("event") == "rendezvous_ready":
                port = int(ev["udp_port"])
            elif ev.get("event") == "admin_ready":
                admin = int(ev["port"])
        assert server.poll() is None, log.read_text()
        time.sleep(0.05)
    assert port and admin, log.read_text()
    yield World(lab, root, server, log, port, admin)


def metrics(world: World) -> dict[str, float]:
    """The server's /metrics (read inside the public namespace), ``name{labels}`` -> value."""
    code = ("import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{world.admin_port}/metrics',timeout=5).read().decode())")
    text = subprocess.run(["ip", "netns", "exec", world.lab.ns("pub"), sys.executable, "-c",
                           code], capture_output=True, text=True, timeout=20,
                          check=True).stdout
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def client(world: World, site: int, name: str, *args: str) -> list[str]:
    return [sys.executable, str(PYZ), "client", netns.SERVER_IP, str(world.port), "0",
            "--name", name, "--password-file", str(world.root / f"{name}.pass"), "--json",
            "--log-format", "json", "--data-dir", str(world.root / f"{name}-{site}"), *args]


def uvf(world: World, nat1: str, nat2: str, size: int, tag: str,
        during: subprocess.Popen[bytes] | None = None) -> tuple[dict[str, Any], Path, Path]:
    """alpha (site 1) sends ``size`` bytes to beta (site 2); returns the sender's UVF result,
    the file sent and the file received."""
    lab = world.lab
    lab.set_nat(1, nat1)
    lab.set_nat(2, nat2)
    src = make_file(world.root / "alpha-1" / f"{tag}.bin", size, seed=len(tag))
    out = world.root / f"beta-{tag}.out"
    with out.open("wb") as beta_out, (world.root / f"beta-{tag}.log").open("wb") as beta_err:
        beta = lab.run("d2", client(world, 2, "beta", "--stay"), stdin=subprocess.DEVNULL,
                       stdout=beta_out, stderr=beta_err)
    try:
        deadline = time.monotonic() + 15
        while b'"login"' not in out.read_bytes():
            assert beta.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        time.sleep(0.2)  # its UDP registration is on its way
        sent = subprocess.run(["ip", "netns", "exec", lab.ns("d1"),
                               *client(world, 1, "alpha", "--run", f"UVF beta {tag}.bin")],
                              capture_output=True, text=True, timeout=60, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        results = [json.loads(line) for line in sent.stdout.splitlines()]
        result = next(r for r in results if r.get("command", "").startswith("UVF"))
        received = world.root / "beta-2" / f"alpha_{tag}.bin"
        deadline = time.monotonic() + 5
        while not received.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return result, src, received
    finally:
        stop(beta)


def test_two_endpoint_independent_nats_go_direct(world: World) -> None:
    result, src, received = uvf(world, "eim", "eim", 3_000_000, "eim-eim")
    assert result["ok"] and result["result"]["path"] == "direct", result
    assert result["text"] == "eim-eim.bin has been uploaded to beta (3000000 bytes, direct)"
    assert sha(received) == sha(src)


@pytest.mark.parametrize("nats", [("eim", "random"), ("random", "eim"), ("random", "random")])
def test_a_port_randomising_nat_is_crossed_through_the_relay(world: World,
                                                             nats: tuple[str, str]) -> None:
    before = metrics(world)
    tag = "-".join(nats)
    result, src, received = uvf(world, *nats, 1_500_000, tag)
    assert result["ok"] and result["result"]["path"] == "relayed", result
    assert result["text"].endswith("(1500000 bytes, relayed)")
    assert sha(received) == sha(src)
    after = metrics(world)
    assert after["edgenet_relay_bytes_total"] - before["edgenet_relay_bytes_total"] > 1_500_000


SPRAY = r"""
import contextlib, os, socket, struct, sys, time
server, port, targets, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3:-1], float(sys.argv[-1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.66", 0))
s.setblocking(False)
hdr = lambda t, i: b"UV\x01" + bytes([t]) + struct.pack("!Q", i)
sent = got = 0
end = time.monotonic() + seconds
while time.monotonic() < end and sent < 200_000:
    i = int.from_bytes(os.urandom(8), "big")
    for d, where in ((hdr(9, i) + os.urandom(16) + bytes(20), (server, port)),
                     (hdr(13, i) + hdr(3, 1) + bytes(1400), (server, port)),
                     (os.urandom(64), (server, port)),
                     (hdr(11, i) + bytes(5), (targets[sent % len(targets)].split(":")[0],
                                              int(targets[sent % len(targets)].split(":")[1])))):
        with contextlib.suppress(OSError):  # a refused or unroutable datagram: the next one
            s.sendto(d, where)
            sent += 1
    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):  # nothing more to read
        while True:
            got += len(s.recv(65536))
    time.sleep(0.0005)
print(sent, got)
"""


@pytest.mark.parametrize("nats,path", [(("random", "eim"), "relayed"),
                                       (("eim", "eim"), "direct")])
def test_a_third_party_spraying_gets_nothing_relayed_and_the_caps_hold(
        world: World, nats: tuple[str, str], path: str) -> None:
    before = metrics(world)
    # The routers' outside ports the devices' traffic may use, and the server's UDP port.
    targets = [f"{ip}:{p}" for ip in ("203.0.113.11", "203.0.113.12")
               for p in range(32768, 61000, 997)]
    spray = world.lab.run("pub", [sys.executable, "-c", SPRAY, netns.SERVER_IP,
                                  str(world.port), *targets, "7"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    size = 6_000_000
    tag = f"sprayed-{path}"
    try:
        result, src, received = uvf(world, *nats, size, tag)
    finally:
        out, err = spray.communicate(timeout=30)
    assert result["ok"] and result["result"]["path"] == path, result
    assert sha(received) == sha(src)
    sent, got = map(int, out.split())
    assert sent > 1000, err
    assert got == 0  # not one byte came back: no answer, no amplification, nothing relayed
    after = metrics(world)

    def grew(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert grew('edgenet_udp_dropped_total{reason="unknown_token"}') > sent * 0.375
    assert grew('edgenet_udp_dropped_total{reason="malformed"}') > 0
    relayed = grew("edgenet_relay_bytes_total")
    if path == "direct":
        assert relayed == 0
        return
    assert size < relayed < size * 1.3  # the transfer's datagrams, none of the sprayer's
    # The rate cap: past its burst (one second of the rate), RELAY_RATE a second at most.
    assert grew('edgenet_udp_dropped_total{reason="rate"}') > 0
    assert relay_seconds(world, tag) >= (size - RELAY_RATE) / RELAY_RATE * 0.9


def relay_seconds(world: World, tag: str) -> float:
    """How long the receiver took over the file (its ``uvf.transfer`` event)."""
    for ev in events(world.root / f"beta-{tag}.log"):
        if ev.get("event") == "uvf.transfer" and ev.get("outcome") == "ok":
            return float(ev["duration_ms"]) / 1000
    raise AssertionError("no transfer event in the receiver's log")
