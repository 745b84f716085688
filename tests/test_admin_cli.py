"""``edgenet admin`` through the built zipapp against a real server process: every
sub-command, a wrong token, a server that is down, and ``events --follow`` receiving
a login as it happens (and again after the server restarted)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYZ, ServerProcess
from tests.test_admin_support import CREDENTIALS
from tests.wireclient import WireDevice

TOKEN = "cli-test-token-4f1d"
pytestmark = pytest.mark.timeout(300)
#: Seconds one ``edgenet admin`` run may take (a zipapp start-up: half a second alone,
#: many times that on a loaded 2-core box).
RUN_SECONDS = 120.0
#: ``edgenet admin`` processes run at once by a test: more would only queue for the
#: two cores, each of them then nearer its deadline.
AT_ONCE = 4
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = \
    weakref.WeakKeyDictionary()


@dataclass
class Admin:
    server: ServerProcess
    base: str


def _start(tmp: Path, admin_port: int = 0) -> Admin:
    tmp.mkdir(parents=True, exist_ok=True)
    creds = tmp / "credentials.txt"
    creds.write_text(CREDENTIALS)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    env = {**os.environ, "EDGENET_ADMIN_TOKEN": TOKEN}
    server = ServerProcess([sys.executable, str(PYZ), "server", "0", "3", "--host", "127.0.0.1",
                            "--credentials", str(creds), "--data-dir", str(data),
                            "--log-format", "json", "--admin-host", "127.0.0.1",
                            "--admin-port", str(admin_port), "--block-seconds", "3600"],
                           data, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = [e for e in server.read_events() if e.get("event") == "admin_ready"]
        if ready:
            return Admin(server, f"http://127.0.0.1:{ready[0]['port']}")
        time.sleep(0.05)
    server.stop()
    raise AssertionError("the admin API did not start")


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    live = _start(tmp_path_factory.mktemp("admin-cli"))
    yield live
    live.server.stop()


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    if token is not None:
        env["EDGENET_ADMIN_TOKEN"] = token
    return env


async def run(live: Admin | str, *args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    """``python build/edgenet.pyz admin --url URL ARGS...``: (status, stdout, stderr)."""
    base = live if isinstance(live, str) else live.base
    slots = _slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(AT_ONCE))
    async with slots:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PYZ), "admin", "--url", base, *args, env=_env(token),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), RUN_SECONDS)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"edgenet admin {' '.join(args)}: no exit within "
                                 f"{RUN_SECONDS:g} s") from None
    assert proc.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return proc.returncode, out.decode(), err.decode()


async def ok_json(live: Admin, *args: str) -> Any:
    status, out, err = await run(live, *args, "--json")
    assert status == 0, (args, status, err)
    return json.loads(out)


async def test_every_subcommand(admin_server: Admin) -> None:
    live = admin_server
    alpha = await WireDevice.connect(live.server.port)
    assert (await alpha.login("alpha", "alphapass", 41001))["type"] == "ok"
    assert (await alpha.call({"type": "upload", "file_id": 1}, b"4\n6\n11\n"))["type"] == "ok"
    assert (await alpha.call({"type": "compute", "file_id": 1, "op": "MAX"}))["type"] == "ok"
    beta = await WireDevice.connect(live.server.port)
    for _ in range(3):
        await beta.login("beta", "wrong")

    # The reads run at once (each is a zipapp start-up: about half a second).
    (health, devices, (status, table, _), device, (missing, _, err), lockouts,
     (_, lock_table, _), files, (_, file_table, _), uploads, deletions, device_log, events,
     (_, event_table, _)) = await asyncio.gather(
        ok_json(live, "health"), ok_json(live, "devices"), run(live, "devices", "--table"),
        ok_json(live, "device", "alpha"), run(live, "device", "nosuch"),
        ok_json(live, "lockouts"), run(live, "lockouts", "--table"),
        ok_json(live, "files", "--device", "alpha"), run(live, "files", "--table"),
        ok_json(live, "logs", "uploads"), ok_json(live, "logs", "deletions"),
        ok_json(live, "logs", "devices"),
        ok_json(live, "events", "--event", "login,device_blocked", "--limit", "10"),
        run(live, "events", "--since", "5m", "--table"))
    assert health["status"] == "ok"
    assert [(d["name"], d["udp_port"], d["bytes_uploaded"]) for d in devices] == [
        ("alpha", 41001, 7)]
    assert status == 0
    head, row = table.splitlines()
    assert head.split() == ["NAME", "IP", "UDP", "SINCE", "CMDS", "UPLOADED"]
    assert row.split()[:3] == ["alpha", "127.0.0.1", "41001"] and row.endswith("7 B")
    assert device["ip"] == "127.0.0.1" and device["name"] == "alpha"
    assert missing == 5 and "nosuch is not active" in err and len(err.splitlines()) == 1
    assert [(lo["name"], lo["blocked"]) for lo in lockouts] == [("beta", True)]
    assert "blocked" in lock_table and " s " in lock_table + " "
    assert [(f["file_id"], f["samples"], f["stats"]["max"]) for f in files] == [(1, 3, "11")]
    assert file_table.splitlines()[0].split() == ["DEVICE", "FILE", "SIZE", "SAMPLES",
                                                  "UPLOADED", "SUM", "AVERAGE", "MAX", "MIN"]
    assert file_table.splitlines()[1].split()[-4:] == ["21", "7.0", "11", "4"]
    assert [(u["device"], u["file_id"], u["samples"]) for u in uploads] == [("alpha", 1, 3)]
    assert deletions == []
    assert [(d["seq"], d["name"]) for d in device_log] == [(1, "alpha")]
    assert [e["event"] for e in events] == ["login", "device_blocked"]  # oldest first
    assert "device_blocked" in event_table and "login" in event_table

    status, out, _ = await run(live, "unblock", "beta", "--table")
    assert status == 0 and out.strip() == "lifted the block on beta (3 failures)"
    (again, _, err), after = await asyncio.gather(run(live, "unblock", "beta"),
                                                  ok_json(live, "lockouts"))
    assert after == [] and again == 5 and "beta" in err

    reload = await ok_json(live, "reload-credentials")
    assert reload["reloaded"] is True and reload["devices"] == 3

    status, out, _ = await run(live, "kick", "alpha")  # not a terminal: JSON
    assert status == 0 and json.loads(out)["disconnected"] is True
    notice = await alpha.recv(timeout=RUN_SECONDS)
    assert notice is not None and notice["kind"] == "disconnected", notice
    gone, (status, out, _) = await asyncio.gather(ok_json(live, "devices"),
                                                  run(live, "devices", "--table"))
    assert gone == [] and status == 0 and out.strip() == "no device is active"
    await alpha.close()
    await beta.close()


async def test_usage_errors_exit_2(admin_server: Admin, tmp_path: Path) -> None:
    cases = [(("--token", "x", "devices"), "never taken from the command line"),
                        (("frobnicate",), "invalid choice"),
                        (("devices", "--limit", "0"), "--limit"),
                        (("logs", "everything"), "invalid choice"),
                        (("events", "--follow", "--since", "1h"), "--since"),
                        (("files", "--since", "yesterday"), "bad_since")]
    results = await asyncio.gather(*(run(admin_server, *args) for args, _ in cases))
    for (args, words), (status, out, err) in zip(cases, results):
        assert status == 2 and words in err and out == "", (args, err)
    status, _, err = await run("ftp://127.0.0.1:1", "devices")
    assert status == 2 and "--url" in err


async def test_a_wrong_or_missing_token_exits_3(admin_server: Admin, tmp_path: Path) -> None:
    for token in ("wrong", None):
        status, out, err = await run(admin_server, "devices", token=token)
        assert status == 3 and out == "" and "authentication refused" in err
        assert len(err.splitlines()) == 1
    # /healthz needs no token: health works without one.
    assert (await run(admin_server, "health", token=None))[0] == 0
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    good.chmod(0o600)
    status, out, _ = await run(admin_server, "--token-file", str(good), "lockouts", token=None)
    assert status == 0 and json.loads(out) == []
    good.chmod(0o644)
    status, _, err = await run(admin_server, "lockouts", "--token-file", str(good), token=None)
    assert status == 2 and "chmod 600" in err
    status, _, err = await run(admin_server, "lockouts", "--token-file", str(tmp_path / "no"))
    assert status == 2 and "not found" in err


async def test_a_server_that_is_down_exits_4(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"
    cases = (("health",), ("devices",), ("kick", "alpha"), ("events", "--follow"))
    results = await asyncio.gather(*(run(base, *args) for args in cases))
    for args, (status, out, err) in zip(cases, results):
        assert status == 4 and out == "", (args, status, err)
        assert err.strip() == f"edgenet admin: cannot reach the admin API at {base}: " \
                              "connection refused"


async def _line(stream: asyncio.StreamReader, timeout: float = 60.0) -> str:
    return (await asyncio.wait_for(stream.readline(), timeout)).decode()


async def _until(stream: asyncio.StreamReader, words: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = await _line(stream, max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if words in line:
            return line
        assert line, f"stream ended before {words!r}; saw {seen[-5:]}"
        seen.append(line)
    raise AssertionError(f"no line with {words!r} within {timeout:g} s; saw {seen[-5:]}")


async def test_follow_receives_a_login_as_it_happens_and_survives_a_restart(
        tmp_path: Path) -> None:
    live = _start(tmp_path / "one")
    port = int(live.base.rsplit(":", 1)[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PYZ), "admin", "--url", live.base, "events", "--follow",
        "--event", "login,logout", env=_env(TOKEN), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    second: Admin | None = None
    try:
        await _until(proc.stderr, "following the events of")
        gamma = await WireDevice.connect(live.server.port)
        assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
        event = json.loads(await _line(proc.stdout))
        assert (event["event"], event["device"]) == ("login", "gamma")
        await gamma.call({"type": "logout"})
        assert json.loads(await _line(proc.stdout))["event"] == "logout"

        # The server stops and a new one starts on the same admin port: follow reconnects.
        live.server.stop()
        await _until(proc.stderr, "reconnecting")
        second = _start(tmp_path / "two", admin_port=port)
        await _until(proc.stderr, "reconnected")
        alpha = await WireDevice.connect(second.server.port)
        assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
        event = json.loads(await _line(proc.stdout))
        assert (event["event"], event["device"]) == ("login", "alpha")
        await alpha.close()
        assert proc.returncode is None
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), RUN_SECONDS) == 130
        assert b"Traceback" not in await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        live.server.stop()
        if second is not None:
            second.server.stop()
