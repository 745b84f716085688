"""Fleet mode under faults, end to end through the fleet zipapp: Redis stopped and
started again mid-session, S3 stopped, a node killed with SIGKILL. The fleet here is
the module's own (two nodes, HAProxy, Redis; the session's SeaweedFS)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgenet.server.proxyproto import encode_v2
from edgenet.wire.frames import FrameDecoder, Header, encode_frame
from tests.engines import ENGINES
from tests.fleetproc import LEASE, FleetNode, FleetRig, commands, wait_for
from tests.wireclient import WireDevice

A, B = 0, 1


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRig]:
    fleet = FleetRig(tmp_path_factory.mktemp("fleet-faults"))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


async def direct(node: FleetNode, name: str, password: str) -> WireDevice:
    """A device straight to a node (not through HAProxy, which routes away from a node
    that is not ready), with the PROXY header a balancer would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(encode_v2(("127.0.0.1", 40000), ("127.0.0.1", node.port)))
    dev = WireDevice(reader, writer)
    assert (await dev.call({"type": "hello", "version": 1}))["type"] == "hello"
    reply = await dev.login(name, password)
    assert reply["type"] == "ok", reply
    return dev


def health(node: FleetNode) -> tuple[int, list[str]]:
    status, body = node.api("/healthz")
    return status, [p["code"] for p in body.get("problems", [])]


def all_healthy(rig: FleetRig, timeout: float = 30) -> None:
    """Each test starts from a fleet that is ready (a test before may have left an
    engine restarting): both nodes answer /healthz 200 with no problem."""
    for node in rig.nodes:
        assert wait_for(lambda n=node: health(n) == (200, []), timeout), (  # type: ignore[misc]
            node.node_id, health(node))


def not_ready_for(node: FleetNode, problem: str) -> bool:
    status, problems = health(node)
    return status == 503 and problem in problems and set(problems) <= {problem, "device_log_stale"}


def seen(node: FleetNode, rig: FleetRig) -> str:
    """What a failed wait saw: the node's health, its Redis events, Redis's log tail."""
    tail = rig.redis.log.read_text(errors="replace").splitlines()[-5:] \
        if rig.redis.log.exists() else []
    return (f"{node.node_id}: health {health(node)}; "
            f"events {node.events('redis_unavailable') + node.events('redis_recovered')}; "
            f"redis log {tail}")


async def test_redis_stopped_and_started_again(rig: FleetRig) -> None:
    all_healthy(rig)
    up = commands(rig.run(B, "alpha", "EDG 3 200; UED 3"))
    assert [r["ok"] for r in up] == [True, True], up
    values = [int(v) for v in (rig.place / "device-alpha" / "alpha-3.txt").read_text().split()]
    alpha = await direct(rig.nodes[A], "alpha", "alphapass")
    rig.redis.stop()
    try:
        for node in rig.nodes:  # not ready: HAProxy routes away from both
            # (edge-device-log.txt, the fleet's list mirrored, may be reported behind too)
            assert wait_for(lambda n=node: not_ready_for(n, "redis_unavailable"),  # type: ignore[misc]
                            30), seen(node, rig)
        # Commands that need the shared state say so, and the session stays.
        scs = await alpha.call({"type": "compute", "file_id": 3, "op": "SUM"})
        assert scs["code"] == "service_unavailable" and "Redis" in scs["message"]
        aed = await alpha.call({"type": "list_devices"})
        assert aed["code"] == "service_unavailable"
        # Logins fail closed, with a clear retryable error.
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.nodes[B].port)
        writer.write(encode_v2(("127.0.0.1", 40001), ("127.0.0.1", 1)))
        gamma = WireDevice(reader, writer)
        await gamma.call({"type": "hello", "version": 1})
        refused = await gamma.login("gamma", "gammapass")
        assert refused["type"] == "error" and refused["code"] == "service_unavailable"
        await gamma.close()
    finally:
        rig.redis.start()
    for node in rig.nodes:  # recovered by itself
        assert wait_for(lambda n=node: health(n) == (200, []), 30), seen(node, rig)  # type: ignore[misc]
    scs = await alpha.call({"type": "compute", "file_id": 3, "op": "SUM"})
    assert scs.get("result") == str(sum(values)), scs  # nothing acknowledged was lost
    aed = await alpha.call({"type": "list_devices"})
    assert aed["type"] == "ok"
    listed = {d["name"]: d["node"] for d in rig.nodes[B].devices()}
    assert listed.get("alpha") == "node-a"  # its entry is there again
    await alpha.close()
    assert wait_for(lambda: all(n.events("redis_recovered") for n in rig.nodes), 15), \
        [seen(n, rig) for n in rig.nodes]


async def test_s3_stopped(rig: FleetRig) -> None:
    all_healthy(rig)
    up = commands(rig.run(A, "beta", "EDG 4 100; UED 4"))
    assert [r["ok"] for r in up] == [True, True], up
    dev = await direct(rig.nodes[A], "beta", "betapass")
    weed = ENGINES.seaweed()
    weed.stop()
    try:
        body = b"1\n2\n3\n"
        ued = await dev.call({"type": "upload", "file_id": 5, "body": len(body)}, body)
        assert ued["code"] == "service_unavailable" and "S3" in ued["message"], ued
        scs = await dev.call({"type": "compute", "file_id": 4, "op": "SUM"})
        assert scs["code"] == "service_unavailable" and "S3" in scs["message"]
        dte = await dev.call({"type": "delete", "file_id": 4})
        assert dte["code"] == "service_unavailable"
        assert wait_for(lambda: health(rig.nodes[A]) == (503, ["s3_unavailable"]), 30), \
            health(rig.nodes[A])
        # Nothing half stored, nothing lost: file 4 alone, logged once.
        _, files = rig.nodes[B].api("/api/v1/files?device=beta")
        assert [f["file_id"] for f in files["data"]] == [4]
        _, logs = rig.nodes[B].api("/api/v1/logs/uploads?device=beta")
        assert [r["file_id"] for r in logs["data"]] == [4]
        _, gone = rig.nodes[B].api("/api/v1/logs/deletions?device=beta")
        assert gone["data"] == []
        leftovers = [p.name for n in rig.nodes for p in n.data_dir.glob(".upload-*")]
        assert leftovers == []
    finally:
        weed.start()
    assert wait_for(lambda: health(rig.nodes[A]) == (200, []), 40), health(rig.nodes[A])
    scs = await dev.call({"type": "compute", "file_id": 4, "op": "MAX"})
    assert scs["type"] == "ok"
    ued = await dev.call({"type": "upload", "file_id": 5, "body": 6}, b"1\n2\n3\n")
    assert ued["type"] == "ok" and ued["samples"] == 3
    await dev.close()


def test_a_killed_node_loses_its_devices_within_a_lease(rig: FleetRig) -> None:
    assert rig.wait_balanced()
    alpha = rig.stay(None, "alpha")  # through the balancer: any node
    try:
        on: Any = wait_for(lambda: [d["node"] for d in rig.nodes[A].devices()
                                    if d["name"] == "alpha"])
        assert on
        victim = A if on[0] == "node-a" else B
        survivor = rig.nodes[1 - victim]
        beta = logged_in_socket(rig.nodes[victim], "beta", "betapass")  # never comes back
        assert {"alpha", "beta"} <= {d["name"] for d in survivor.devices()}
        rig.nodes[victim].kill()
        killed = time.monotonic()
        assert wait_for(lambda: "beta" not in {d["name"] for d in survivor.devices()},
                        LEASE * 3 + 5)
        gone_after = time.monotonic() - killed
        assert gone_after <= LEASE + LEASE / 3 + 2.0, gone_after
        assert survivor.events("node_expired")
        # The device that stays reconnects through HAProxy to the other node.
        assert wait_for(lambda: [d for d in survivor.devices() if d["name"] == "alpha"
                                 and d["node"] == survivor.node_id], 20)
        # And the rest of the fleet carries on.
        out = commands(rig.run(None, "gamma", "AED"))
        assert out[0]["ok"] and "alpha" in out[0]["text"]
        beta.close()
    finally:
        assert alpha.stop() in (0, -signal.SIGTERM)


def logged_in_socket(node: FleetNode, name: str, password: str) -> socket.socket:
    """A device logged in to ``node`` over a plain socket that the test keeps open (so
    only the node's death can take it off the list)."""
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(encode_v2(("127.0.0.1", 40002), ("127.0.0.1", node.port)))
    decoder = FrameDecoder()
    for fields in ({"type": "hello", "version": 1},
                   {"type": "login", "id": 1, "name": name, "password": password,
                    "udp_port": 9}):
        sock.sendall(encode_frame(fields))
        while True:
            event = decoder.next_event()
            if isinstance(event, Header):
                break
            decoder.receive_data(sock.recv(65536))
        assert event.fields["type"] in ("hello", "ok"), event.fields
    return sock
