"""Fleet mode end to end: two nodes of the fleet zipapp behind a real HAProxy (PROXY v2,
health checks on /healthz), sharing a real Redis and a real S3 (SeaweedFS), with real
devices (the fleet zipapp's headless client). The failure modes are in
tests/test_fleet_faults.py."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.fleetproc import FleetRig, commands, results, wait_for
from tests.wireclient import WireDevice

A, B = 0, 1
#: Seconds a device or a node may take to get somewhere on a loaded 2-core box.
PATIENCE = 60.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetRig]:
    fleet = FleetRig(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


def test_aed_and_uvf_lookups_see_every_node(rig: FleetRig) -> None:
    alpha = rig.stay(A, "alpha")
    try:
        assert wait_for(lambda: [d for d in rig.nodes[B].devices() if d["name"] == "alpha"])
        out = commands(rig.run(B, "beta", "AED"))
        listed = out[0]["result"]["devices"]
        assert [(d["name"], d["ip"]) for d in listed] == [("alpha", "127.0.0.1")]
        # Both nodes list the fleet, each device with the node it is on.
        for node in rig.nodes:
            names = {d["name"]: d["node"] for d in node.devices()}
            assert names.get("alpha") == "node-a"
        lookup = commands(rig.run(B, "beta", "UVF alpha nothing.txt"))
        assert lookup[0]["ok"] is False and "does not exist" in lookup[0]["error"]["message"]
        gone = commands(rig.run(B, "beta", "UVF nobody x.txt"))
        assert gone[0]["ok"] is False
    finally:
        alpha.stop()


def test_takeover_across_nodes(rig: FleetRig) -> None:
    first = rig.stay(A, "alpha")
    try:
        assert wait_for(lambda: [d for d in rig.nodes[A].devices() if d["name"] == "alpha"])
        started = time.monotonic()
        second = rig.stay(B, "alpha")
        try:
            assert first.proc.wait(10) == 3  # told it was replaced: exit status 3
            gone_at = time.time()
            assert time.monotonic() - started < 5  # the new client's own start included
            takeover = [e for e in rig.nodes[B].events("takeover") if e.get("device") == "alpha"]
            logged_in = [e for e in rig.nodes[B].events("login") if e.get("device") == "alpha"]
            assert takeover and logged_in
            # The old client was told and gone within 1 s of the login on the other node
            # (its process exit included; bench/bench_fleet.py measures the kick alone).
            login_at = datetime.fromisoformat(logged_in[-1]["timestamp"].replace("Z", "+00:00"))
            assert gone_at - login_at.timestamp() < 1.0
            assert "replaced" in str(first.read())
            listed = wait_for(lambda: [d for d in rig.nodes[A].devices()
                                       if d["name"] == "alpha" and d["node"] == "node-b"])
            assert listed and len([d for d in rig.nodes[B].devices()
                                   if d["name"] == "alpha"]) == 1
        finally:
            second.stop()
    finally:
        first.stop()


async def _guess(port: int, n: int) -> list[dict[str, object]]:
    dev = await WireDevice.connect(port)
    try:
        return [await dev.login("beta", "wrong") for _ in range(n)]
    finally:
        await dev.close()


def test_concurrent_brute_force_across_nodes(rig: FleetRig) -> None:
    async def storm() -> list[dict[str, object]]:
        # 50 wrong passwords at once, 25 through each node (5 connections each).
        batches = await asyncio.gather(*(_guess(rig.port_of(node), 5)
                                         for node in (A, B) for _ in range(5)))
        return [r for batch in batches for r in batch]
    replies = asyncio.run(storm())
    assert len(replies) == 50
    checked = [r for r in replies if r["code"] == "auth_failed"
               or str(r.get("message", "")).startswith("Invalid password")]
    assert 1 <= len(checked) <= 3  # at most MAX_ATTEMPTS passwords were checked
    assert all(r["code"] == "blocked" for r in replies if r not in checked)
    # The block holds on both nodes, with the seconds left, even for the right password.
    for node in (A, B):
        login = results(rig.run(node, "beta", "AED"))[0]
        assert (login["command"], login["ok"], login["error"]["code"]) == (
            "login", False, "blocked"), login
        assert "Please try again in" in login["error"]["message"]
    status, body = rig.nodes[B].api("/api/v1/lockouts")
    assert status == 200 and [e["name"] for e in body["data"] if e["blocked"]] == ["beta"]
    assert body["data"][0]["seconds_left"] > 0
    # Lifted through node B's admin API, it is lifted everywhere.
    assert rig.nodes[B].api("/api/v1/lockouts/beta", "DELETE")[0] == 200
    for node in rig.nodes:
        assert [e["name"] for e in node.api("/api/v1/lockouts")[1]["data"]] == []
    assert commands(rig.run(A, "beta", "AED"))[0]["ok"] is True


def test_files_are_shared(rig: FleetRig, tmp_path: Path) -> None:
    up = commands(rig.run(A, "alpha", "EDG 7 500; UED 7"))
    assert [r["ok"] for r in up] == [True, True], up
    local = rig.place / "device-alpha" / "alpha-7.txt"
    values = [int(v) for v in local.read_text().split()]
    out = commands(rig.run(B, "alpha", "SCS 7 SUM; SCS 7 AVERAGE; SCS 7 MAX; SCS 7 MIN"))
    assert [r["result"]["result"] for r in out] == [
        str(sum(values)), out[1]["result"]["result"], str(max(values)), str(min(values))]
    assert abs(float(out[1]["result"]["result"]) - sum(values) / len(values)) < 1e-6
    # Every node's admin API and upload log show it (the log within its mirror's period).
    for node in rig.nodes:
        _, files = node.api("/api/v1/files?device=alpha")
        assert [(f["file_id"], f["samples"]) for f in files["data"]] == [(7, 500)]
        assert wait_for(lambda path=node.data_dir / "upload-log.txt":  # type: ignore[misc]
                        path.exists() and "alpha; " in path.read_text())
    line = (rig.nodes[B].data_dir / "upload-log.txt").read_text().splitlines()[-1]
    assert line.startswith("alpha; ") and line.endswith("; 7; 500")
    gone = commands(rig.run(B, "alpha", "DTE 7; SCS 7 SUM"))
    assert gone[0]["ok"] is True and gone[1]["ok"] is False
    _, logs = rig.nodes[A].api("/api/v1/logs/deletions?device=alpha")
    assert [r["file_id"] for r in logs["data"]] == [7]
    assert wait_for(lambda: "alpha; " in (rig.nodes[A].data_dir / "deletion-log.txt")
                    .read_text() if (rig.nodes[A].data_dir / "deletion-log.txt").exists()
                    else False)


def test_admin_kick_of_a_device_on_the_other_node(rig: FleetRig) -> None:
    alpha = rig.stay(A, "alpha")
    try:
        # The session to kick is the one this device logged in with (a session of an
        # earlier test may still be listed for a moment).
        login = wait_for(lambda: [x for x in alpha.read() if x.get("command") == "login"
                                  and x.get("ok")], PATIENCE)
        assert login, (alpha.read(), alpha.errors())
        kicked = login[0]["result"]["session"]
        listed = wait_for(lambda: [d for d in rig.nodes[B].devices()
                                   if d["session_id"] == kicked], PATIENCE)
        assert listed, (kicked, rig.nodes[B].devices())
        status, body = rig.nodes[B].api("/api/v1/devices/alpha", "DELETE")
        assert status == 200 and body["data"]["disconnected"] is True, (status, body)
        assert wait_for(lambda: [x for x in alpha.read() if x.get("event") == "disconnected"
                                 and "operator" in str(x.get("reason"))], PATIENCE), alpha.read()
        # The kicked session left the fleet's list (the device, staying, may log in again:
        # that is a new session).
        assert wait_for(lambda: not [d for d in rig.nodes[A].devices()
                                     if d["session_id"] == kicked], PATIENCE), \
            rig.nodes[A].devices()
    finally:
        alpha.stop()


def test_the_event_log_merges_all_nodes(rig: FleetRig) -> None:
    assert commands(rig.run(A, "gamma", "AED"))[0]["ok"]
    assert commands(rig.run(B, "gamma", "AED"))[0]["ok"]
    status, body = rig.nodes[A].api("/api/v1/events?device=gamma&event=login&limit=1000")
    assert status == 200
    nodes = {e["node"] for e in body["data"]}
    assert nodes == {"node-a", "node-b"}
    seqs = [e["seq"] for e in body["data"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)


DEVICE_LINE = re.compile(r"(\d+); (\d\d? \w+ \d{4} \d\d:\d\d:\d\d); (\w+); ([\d.]+); (\d+)")


def device_log(node_dir: Path) -> list[tuple[str, ...]]:
    path = node_dir / "edge-device-log.txt"
    text = path.read_text() if path.exists() else ""
    lines = [DEVICE_LINE.fullmatch(line) for line in text.splitlines()]
    assert all(lines), text  # the format of a single node's log
    return [m.groups() for m in lines if m]


def test_every_node_writes_the_fleets_device_log(rig: FleetRig) -> None:
    """Each node's edge-device-log.txt is the fleet's active list in the usual format,
    numbered 1..n in login order, whichever node each device is on."""
    alpha = rig.stay(A, "alpha")
    try:
        assert wait_for(lambda: [d for d in rig.nodes[B].devices() if d["name"] == "alpha"])
        beta = rig.stay(B, "beta")
        try:
            want = [("1", "alpha"), ("2", "beta")]
            for node in rig.nodes:
                assert wait_for(lambda n=node: [(x[0], x[2]) for x in device_log(n.data_dir)]  # type: ignore[misc]
                                == want, 10), device_log(node.data_dir)
                ports = {x[2]: int(x[4]) for x in device_log(node.data_dir)}
                listed = {d["name"]: d["udp_port"] for d in node.devices()}
                assert ports == listed and all(ports.values())
        finally:
            beta.stop()
        for node in rig.nodes:  # beta left through node B: node A's file follows
            assert wait_for(lambda n=node: [(x[0], x[2]) for x in device_log(n.data_dir)]  # type: ignore[misc]
                            == [("1", "alpha")], 10), device_log(node.data_dir)
    finally:
        alpha.stop()


def test_aed_lists_port_and_since_and_uvf_reaches_a_device_on_the_other_node(
        rig: FleetRig) -> None:
    alpha = rig.stay(A, "alpha")
    try:
        login = wait_for(lambda: [x for x in alpha.read() if x.get("command") == "login"
                                  and x.get("ok")], 15)
        assert login
        port = login[0]["result"]["udp_port"]
        assert wait_for(lambda: [d for d in rig.nodes[B].devices() if d["name"] == "alpha"])
        out = commands(rig.run(B, "beta", "AED; EDG 9 300; UVF alpha beta-9.txt"))
        assert [r["ok"] for r in out] == [True, True, True], out
        listed = out[0]["result"]["devices"]
        assert [(d["name"], d["ip"], d["udp_port"]) for d in listed] == [
            ("alpha", "127.0.0.1", port)]
        entry = next(d for d in rig.nodes[A].devices() if d["name"] == "alpha")
        assert abs(listed[0]["since"] - entry["since_epoch"]) < 1e-3
        # The lookup on node B found alpha on node A; the file went straight to it.
        sent = (rig.place / "device-beta" / "beta-9.txt").read_bytes()
        got = wait_for(lambda: (rig.place / "device-alpha" / "beta_beta-9.txt").exists(), 10)
        assert got and (rig.place / "device-alpha" / "beta_beta-9.txt").read_bytes() == sent
    finally:
        alpha.stop()
